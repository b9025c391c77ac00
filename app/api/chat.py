"""POST /v1/chat/completions, and FastChat's POST /api/v1/chat/completions sharing its code."""
from flask import Blueprint, Response, jsonify

from app.api import get_cluster, load_body
from app.serving import chat
from app.streaming import sse_response

bp = Blueprint("chat", __name__)


@bp.post("/v1/chat/completions")
def create_chat_completion():
    """A chat completion, whole or streamed as server-sent events."""
    return respond(load_body("chat"))


@bp.post("/api/v1/chat/completions")
def create_fastchat_chat_completion():
    """FastChat's variant: the same, with repetition_penalty always sent to the worker (default 1.0)."""
    return respond(load_body("fastchat_chat"))


def respond(params: dict) -> Response:
    if params["stream"]:
        return sse_response(chat.stream_chat_completion(params, get_cluster()))
    return jsonify(chat.create_chat_completion(params, get_cluster()))
