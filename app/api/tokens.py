"""FastChat's POST /api/v1/token_check (behind the API key, unlike FastChat's)."""
from flask import Blueprint, jsonify

from app.api import get_cluster, load_body
from app.documented import UPSTREAM_ERRORS, documented
from app.serving import tokens

bp = Blueprint("tokens", __name__, url_prefix="/api/v1")


@bp.post("/token_check")
@documented("fastchat", request="token_check", response="TokenCheckResponse",
            errors=(400, 401, 404, 413, *UPSTREAM_ERRORS))
def check_tokens():
    """Check prompts against the context

    For each {model, prompt, max_tokens}: whether it fits the model's context, the prompt's token count and the
    context length.
    """
    return jsonify(tokens.check_tokens(load_body("token_check"), get_cluster()))
