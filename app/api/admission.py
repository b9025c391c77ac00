"""Back-pressure at the edge of a generation: a place held from before the first worker call until the request
ends (a stream: its last byte sent or the client gone), or a 503 with Retry-After counted as a rejection."""
from __future__ import annotations

from app.errors import ApiError
from app.observability import RequestRecord
from app.serving.cluster import Cluster


def admit(cluster: Cluster, record: RequestRecord, model: str, stream: bool) -> None:
    """Hold a place for the request, given back when it ends; raises ApiError 503 when there is none."""
    if cluster.admission is None:
        return
    try:
        ticket = cluster.admission.admit(model, stream)
    except ApiError:
        record.rejected("backpressure")
        raise
    record.on_finish.append(ticket.release)
