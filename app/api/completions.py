"""POST /v1/completions."""
from flask import Blueprint

from app.api import load_body, reply
from app.documented import GENERATION_ERRORS, documented
from app.routes.relay import COMPLETIONS
from app.serving import completions

bp = Blueprint("completions", __name__, url_prefix="/v1")


@bp.post("/completions")
@documented("completions", request="completion", response="Completion", stream="CompletionChunk",
            errors=GENERATION_ERRORS)
def create_completion():
    """Create a text completion

    `prompts x n` choices generated concurrently; with `stream: true` the reply is server-sent events of
    CompletionChunk.
    """
    return reply(load_body("completion"), completions.create_completion, completions.stream_completion,
                 relay=COMPLETIONS)
