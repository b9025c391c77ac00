"""Probes: /health (liveness, no upstream call) and /ready (the controller or a worker answers). No API key."""
from flask import Blueprint, jsonify

from app.api import get_cluster
from app.errors import ApiError
from app.upstream.errors import UpstreamError

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """200 when the controller (or, without one, at least one worker) answers; 503 saying why otherwise."""
    try:
        get_cluster().controller.ready()
    except UpstreamError as exc:
        raise ApiError(503, f"Not ready: {exc.message}", type="service_unavailable_error",
                       code="upstream_unavailable", fastchat_code=50005, keep_status=True) from None
    return jsonify({"status": "ready"})
