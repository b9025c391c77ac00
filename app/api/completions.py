"""POST /v1/completions."""
from flask import Blueprint, jsonify

from app.api import get_cluster, load_body
from app.serving import completions
from app.streaming import sse_response

bp = Blueprint("completions", __name__, url_prefix="/v1")


@bp.post("/completions")
def create_completion():
    """A text completion for one or more prompts, whole or streamed as server-sent events."""
    params = load_body("completion")
    if params["stream"]:
        return sse_response(completions.stream_completion(params, get_cluster()))
    return jsonify(completions.create_completion(params, get_cluster()))
