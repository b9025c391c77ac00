"""POST /v1/completions."""
from flask import Blueprint

from app.api import load_body, reply
from app.serving import completions

bp = Blueprint("completions", __name__, url_prefix="/v1")


@bp.post("/completions")
def create_completion():
    """A text completion for one or more prompts, whole or streamed as server-sent events."""
    return reply(load_body("completion"), completions.create_completion, completions.stream_completion)
