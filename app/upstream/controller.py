"""The FastChat controller: which models exist and which worker serves a request.

The model list is cached for a short TTL (FastChat asked the controller on every request); /refresh_all_workers,
which blocks the controller while it polls every worker, runs at most once per interval.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.upstream.client import Timeout, UpstreamClient
from app.upstream.errors import BAD_RESPONSE, UNAVAILABLE, UpstreamError

logger = logging.getLogger(__name__)


class Controller:
    """Client of one FastChat controller, safe to share between threads."""

    def __init__(self, client: UpstreamClient, address: str, *, timeout: Timeout, model_list_ttl: float,
                 refresh_interval: float, cooldown: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self.address = address
        self._timeout = timeout
        self._ttl = model_list_ttl
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._models: frozenset[str] = frozenset()
        self._models_at = float("-inf")
        self._last_refresh = float("-inf")
        self._refresh_lock = threading.Lock()
        self._cooling: dict[str, float] = {}  # worker address -> until when this process avoids it
        self._cooldown = cooldown

    def list_models(self) -> list[str]:
        """Every model name, sorted, fresh from the controller (after a throttled worker refresh)."""
        self._refresh_workers()
        return sorted(self._fetch_models())

    def has_model(self, model: str) -> bool:
        """Whether the controller lists `model`; a miss re-reads the list once so a new model works at once."""
        if self._clock() - self._models_at < self._ttl and model in self._models:
            return True
        return model in self._fetch_models()

    def get_worker_address(self, model: str) -> str:
        """The address of the worker the controller picks for `model`, avoiding workers that just failed.

        Asking again is how to avoid one: each pick raises that worker's queue count in the controller, so
        shortest_queue moves on. Raises UpstreamError(unavailable) when the controller has no worker for it.
        """
        for _ in range(3):
            address = self._pick(model)
            if self._cooling.get(address, 0) <= self._clock():
                return address
        return address

    def report_failure(self, address: str) -> None:
        """A worker could not be reached: avoid it for a while, and let the controller purge it (throttled)."""
        self._cooling[address] = self._clock() + self._cooldown
        self._refresh_workers()

    def ready(self) -> None:
        """Raise UpstreamError unless the controller answers."""
        self._fetch_models()

    def _pick(self, model: str) -> str:
        reply = self._post("/get_worker_address", {"model": model})
        address = reply.get("address") if isinstance(reply, dict) else None
        if not isinstance(address, str):
            raise UpstreamError(BAD_RESPONSE, "The controller sent an invalid worker address.", upstream="controller")
        if not address:
            raise UpstreamError(UNAVAILABLE, f"No worker is available for model '{model}' right now.",
                                upstream="controller")
        return address.rstrip("/")

    def _fetch_models(self) -> frozenset[str]:
        reply = self._post("/list_models", None)
        models = reply.get("models") if isinstance(reply, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise UpstreamError(BAD_RESPONSE, "The controller sent an invalid model list.", upstream="controller")
        self._models, self._models_at = frozenset(models), self._clock()
        return self._models

    def _refresh_workers(self) -> None:
        # One thread refreshes; the others list what the controller has now rather than wait for it.
        if self._clock() - self._last_refresh < self._refresh_interval or not self._refresh_lock.acquire(False):
            return
        try:
            self._last_refresh = self._clock()
            self._post("/refresh_all_workers", None)
        except UpstreamError as exc:
            logger.warning("controller refresh_all_workers failed: %s", exc.message)
        finally:
            self._refresh_lock.release()

    def _post(self, path: str, payload):
        return self._client.post_json(self.address + path, payload, timeout=self._timeout, upstream="controller")
