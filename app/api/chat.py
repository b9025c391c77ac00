"""POST /v1/chat/completions, and FastChat's POST /api/v1/chat/completions sharing its code."""
from flask import Blueprint

from app.api import load_body, reply
from app.documented import GENERATION_ERRORS, documented
from app.routes.relay import CHAT
from app.serving import chat

bp = Blueprint("chat", __name__)


@bp.post("/v1/chat/completions")
@documented("chat", request="chat", response="ChatCompletion", stream="ChatCompletionChunk",
            errors=GENERATION_ERRORS)
def create_chat_completion():
    """Create a chat completion

    The prompt is rendered from the worker's conversation template; with `stream: true` the reply is server-sent
    events of ChatCompletionChunk.
    """
    return reply(load_body("chat"), chat.create_chat_completion, chat.stream_chat_completion,
                 relay=CHAT)


@bp.post("/api/v1/chat/completions")
@documented("fastchat", request="fastchat_chat", response="ChatCompletion", stream="ChatCompletionChunk",
            errors=GENERATION_ERRORS, operation_id="createFastChatChatCompletion")
def create_fastchat_chat_completion():
    """Create a chat completion (FastChat's variant)

    The same as POST /v1/chat/completions, with repetition_penalty always sent to the worker (default 1.0).
    """
    return reply(load_body("fastchat_chat"), chat.create_chat_completion, chat.stream_chat_completion,
                 relay=CHAT)
