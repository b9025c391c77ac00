"""Probes: /health (liveness, no upstream call) and /ready (the controller or a worker answers). No API key."""
from flask import Blueprint, jsonify

from app import lifecycle
from app.api import get_cluster
from app.documented import documented
from app.errors import ApiError, shutting_down
from app.upstream.errors import UpstreamError

bp = Blueprint("health", __name__)


@bp.get("/health")
@documented("probes", response="Health")
def health():
    """Liveness

    The process answers: no upstream calls and no API key, so load balancers may poll it freely.
    """
    return jsonify({"status": "ok"})


@bp.get("/ready")
@documented("probes", response="Ready", errors=(503,),
            error_notes={503: "Not ready: the controller (or every listed worker) cannot be reached, or this "
                                 "process is shutting down (code `server_shutting_down`)."})
def ready():
    """Readiness

    Whether the gateway can reach its FastChat cluster and is not shutting down; no API key.
    """
    if lifecycle.draining():  # asked first: a load balancer must stop sending here before the process goes
        raise shutting_down()
    try:
        get_cluster().controller.ready()
    except UpstreamError as exc:
        raise ApiError(503, f"Not ready: {exc.message}", type="service_unavailable_error",
                       code="upstream_unavailable", fastchat_code=50005, keep_status=True) from None
    return jsonify({"status": "ready"})
