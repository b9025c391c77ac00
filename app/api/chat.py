"""POST /v1/chat/completions."""
from flask import Blueprint, jsonify

from app.api import get_cluster, load_body
from app.serving import chat
from app.streaming import sse_response

bp = Blueprint("chat", __name__, url_prefix="/v1")


@bp.post("/chat/completions")
def create_chat_completion():
    """A chat completion, whole or streamed as server-sent events."""
    params = load_body("chat")
    if params["stream"]:
        return sse_response(chat.stream_chat_completion(params, get_cluster()))
    return jsonify(chat.create_chat_completion(params, get_cluster()))
