"""A worker's /worker_get_status: the one figure of its load it reports.

FastChat's queue_length is `limit_worker_concurrency - free permits + waiters` of the worker's semaphore: the
requests it is generating plus those waiting for a permit, from every client of the worker (0 until its first
request). It does not report the limit itself, nor per-model figures on a multi-model worker.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.upstream.client import Timeout, UpstreamClient
from app.upstream.errors import BAD_RESPONSE, UpstreamError


def read_queue_length(client: UpstreamClient, address: str, timeout: Timeout) -> int:
    """The worker's queue_length now. Raises UpstreamError when it cannot be reached or sends something else."""
    reply = client.post_json(address + "/worker_get_status", None, timeout=timeout, upstream="worker")
    queue_length = reply.get("queue_length") if isinstance(reply, dict) else None
    if not isinstance(queue_length, int) or isinstance(queue_length, bool) or queue_length < 0:
        raise UpstreamError(BAD_RESPONSE, "The worker sent an invalid status.", upstream="worker")
    return queue_length


@dataclass(frozen=True)
class WorkerStatus:
    """What a worker's /worker_get_status says: the models it serves, its speed and queue length."""

    models: frozenset[str]
    speed: float
    queue_length: int


def read_status(client: UpstreamClient, address: str, timeout: Timeout) -> WorkerStatus:
    """The worker's whole status now. Raises UpstreamError when it cannot be reached or sends something else."""
    reply = client.post_json(address + "/worker_get_status", None, timeout=timeout, upstream="worker")
    try:
        models = reply["model_names"]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise TypeError("model_names is not a list of strings")
        return WorkerStatus(frozenset(models), float(reply.get("speed") or 1), int(reply.get("queue_length") or 0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(BAD_RESPONSE, f"The worker sent an invalid status: {exc}", upstream="worker") from None


@dataclass(frozen=True)
class WorkerState:
    """One worker as the status page shows it; speed and queue_length are None when it did not answer.
    last_seen: when (time.time()) it last answered, or was last named by the controller; None: never."""

    address: str
    models: list[str]
    speed: float | None
    queue_length: int | None
    healthy: bool
    last_seen: float | None
