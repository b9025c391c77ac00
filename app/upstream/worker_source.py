"""What the serving layer needs from whatever knows the workers: the FastChat controller (Controller) or, with no
controller, the gateway's own fixed list (StaticWorkers). Both satisfy it structurally; neither inherits it."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class WorkerSource(Protocol):
    """A source of workers: which models exist, which worker serves the next request, and which one failed."""

    def list_models(self) -> list[str]:
        """Every model name served now, sorted. Raises UpstreamError when the source cannot tell."""

    def has_model(self, model: str) -> bool:
        """Whether `model` is served (a model whose workers are down for now still counts: 503, not 404)."""

    def is_multimodal(self, model: str) -> bool:
        """Whether `model`'s workers take images (they registered as multimodal, or the operator says so)."""

    def get_worker_address(self, model: str) -> str:
        """The address of a worker for `model`. Raises UpstreamError(unavailable) when there is none now."""

    def report_failure(self, address: str) -> None:
        """The worker at `address` could not be reached: route around it for a while."""

    def ready(self) -> None:
        """Raise UpstreamError unless the source answers (the readiness probe)."""
