"""POST /v1/chat/completions, and FastChat's POST /api/v1/chat/completions sharing its code."""
from flask import Blueprint

from app.api import load_body, reply
from app.serving import chat

bp = Blueprint("chat", __name__)


@bp.post("/v1/chat/completions")
def create_chat_completion():
    """A chat completion, whole or streamed as server-sent events."""
    return reply(load_body("chat"), chat.create_chat_completion, chat.stream_chat_completion)


@bp.post("/api/v1/chat/completions")
def create_fastchat_chat_completion():
    """FastChat's variant: the same, with repetition_penalty always sent to the worker (default 1.0)."""
    return reply(load_body("fastchat_chat"), chat.create_chat_completion, chat.stream_chat_completion)
