"""GET /health: liveness only; no upstream calls and no API key, so load balancers can poll it freely."""
from flask import Blueprint, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})
