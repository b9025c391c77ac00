"""Back-pressure at the edge of a generation: a place held from before the first worker call until the request
ends (a stream: its last byte sent or the client gone), or a 503 with Retry-After counted as a rejection."""
from __future__ import annotations

from app.errors import ApiError
from app.observability import RequestRecord
from app.serving.cluster import Cluster


def admit(cluster: Cluster, record: RequestRecord, model: str, stream: bool, caps_model: bool = True) -> None:
    """Hold a place for the request, given back when it ends; raises ApiError 503 when there is none. caps_model:
    False for a routed model (its upstream keeps its own queue): only the process's stream cap applies."""
    if cluster.admission is None:
        return
    try:
        ticket = cluster.admission.admit(model, stream, caps_model)
    except ApiError:
        record.rejected("backpressure")
        raise
    record.on_finish.append(ticket.release)
