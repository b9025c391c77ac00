"""Failover: run an attempt on a worker for a model, and replace a worker that cannot be reached by another.

Only unreachable workers are replaced: nothing was generated and nothing sent to the client yet. A timed-out or
erring worker may have done the work already, so any other failure is raised as it is.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

from app.errors import model_not_found
from app.upstream.errors import UNAVAILABLE, UpstreamError
from app.upstream.worker_source import WorkerSource

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The worker the current request went to last (its context's: a thread's or a greenlet's), for the status page's
# per-worker figures; whoever reads it sets it to None when a request starts (app.status).
LAST_WORKER: ContextVar[str | None] = ContextVar("last_worker", default=None)


def run_on_worker(source: WorkerSource, model: str, attempt: Callable[[str], T], failover_attempts: int,
                  routed: Callable[[str, str], None] | None = None) -> T:
    """attempt(worker address) on a worker serving `model`; raises 404 for a model nobody serves.

    When the worker cannot be reached, the failure is reported (cooldown, controller refresh) and up to
    `failover_attempts` other workers are tried; the last failure is raised. routed(model, address) is told of
    every worker tried (back-pressure counts them toward the model's cap).
    """
    if not source.has_model(model):
        raise model_not_found(model)
    for tries_left in range(failover_attempts, -1, -1):
        address = source.get_worker_address(model)
        LAST_WORKER.set(address)
        if routed is not None:
            routed(model, address)
        try:
            return attempt(address)
        except UpstreamError as exc:
            if exc.kind != UNAVAILABLE or exc.upstream != "worker":
                raise
            source.report_failure(address)
            if not tries_left:
                raise
            logger.warning("worker %s for %s unreachable; trying another (%s)", address, model, exc.message)
    raise AssertionError("unreachable")  # the loop returns or raises
