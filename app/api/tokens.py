"""FastChat's POST /api/v1/token_check (behind the API key, unlike FastChat's)."""
from flask import Blueprint, jsonify

from app.api import get_cluster, load_body
from app.serving import tokens

bp = Blueprint("tokens", __name__, url_prefix="/api/v1")


@bp.post("/token_check")
def check_tokens():
    """For each {model, prompt, max_tokens}: whether it fits the context, the prompt's tokens, the context."""
    return jsonify(tokens.check_tokens(load_body("token_check"), get_cluster()))
