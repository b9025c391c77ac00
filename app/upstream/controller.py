"""The FastChat controller: which models exist and which worker serves a request.

The model list is cached for a short TTL (FastChat asked the controller on every request); /refresh_all_workers,
which blocks the controller while it polls every worker, runs at most once per interval.

Worker picks are cached too. FastChat's server asks /get_worker_address for every request: a round trip, and on a
small box the controller's CPU, for an answer that barely changes (its shortest_queue counts picks, so it rotates
over equally loaded workers, and heartbeats refresh queue lengths only every 45 s). Here the controller is asked at
most once per pick interval per model; requests in between go round-robin to the workers it named within the pick
TTL, so every worker it rotates over gets its share. Invalidation: a worker that cannot be reached is dropped at
once (and cooled down), an empty answer from the controller drops every cached pick of the model, and a pick the
controller stops repeating ages out after the TTL. A pick interval of 0 asks on every request, as FastChat does.
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
    """Client of one FastChat controller, safe to share between threads; a WorkerSource (app.upstream.worker_source)."""

    def __init__(self, client: UpstreamClient, address: str, *, timeout: Timeout, model_list_ttl: float,
                 refresh_interval: float, pick_interval: float = 0.0, pick_ttl: float = 5.0, cooldown: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._client = client
        self.address = address
        self._timeout = timeout
        self._ttl = model_list_ttl
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._models: frozenset[str] = frozenset()
        self._models_at = float("-inf")
        self._multimodal: frozenset[str] = frozenset()
        self._multimodal_at = float("-inf")
        self._last_refresh = float("-inf")
        self._refresh_lock = threading.Lock()
        self._cooling: dict[str, float] = {}  # worker address -> until when this process avoids it
        self._cooldown = cooldown
        self._pick_interval = pick_interval
        self._pick_ttl = pick_ttl
        self._picks: dict[str, _Picks] = {}  # model -> the workers the controller named for it lately
        self._picks_lock = threading.Lock()

    def list_models(self) -> list[str]:
        """Every model name, sorted, fresh from the controller (after a throttled worker refresh)."""
        self._refresh_workers()
        return sorted(self._fetch_models())

    def has_model(self, model: str) -> bool:
        """Whether the controller lists `model`; a miss re-reads the list once so a new model works at once.

        Raises UpstreamError(unavailable) when it lists no model at all: no worker is registered, which is what a
        controller that just restarted says until the workers' next heartbeats, so a retry soon may succeed
        (a 404 would tell the client the model does not exist)."""
        if self._clock() - self._models_at < self._ttl and model in self._models:
            return True
        models = self._fetch_models()
        if not models:
            raise UpstreamError(UNAVAILABLE, "The controller has no worker registered (it may have just restarted; "
                                "workers register again at their next heartbeat).", upstream="controller")
        return model in models

    def is_multimodal(self, model: str) -> bool:
        """Whether the controller lists `model` among the models of workers registered as multimodal; cached like
        the model list, and a miss re-reads it once (asked only for requests that carry images)."""
        if self._clock() - self._multimodal_at < self._ttl and model in self._multimodal:
            return True
        reply = self._post("/list_multimodal_models", None)
        models = reply.get("models") if isinstance(reply, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise UpstreamError(BAD_RESPONSE, "The controller sent an invalid multimodal model list.",
                                upstream="controller")
        self._multimodal, self._multimodal_at = frozenset(models), self._clock()
        return model in self._multimodal

    def get_worker_address(self, model: str) -> str:
        """The address of a worker for `model`: the controller's own pick when the last one is older than the
        pick interval, otherwise the next of the workers it named within the pick TTL (round-robin).

        Raises UpstreamError(unavailable) when the controller has no worker for it.
        """
        now = self._clock()
        with self._picks_lock:
            picks = self._picks.get(model) or self._picks.setdefault(model, _Picks())  # no new one per call
            cached = picks.next(now - self._pick_ttl) if now - picks.asked_at < self._pick_interval else None
            if cached is None:
                picks.asked_at = now  # the other threads keep using the cached picks meanwhile
        if cached is not None:
            return cached
        try:
            address = self._ask(model)
        except UpstreamError as exc:
            if exc.kind == UNAVAILABLE and exc.upstream == "controller":
                with self._picks_lock:
                    picks.named.clear()
            raise
        with self._picks_lock:
            picks.named[address] = self._clock()
        return address

    def report_failure(self, address: str) -> None:
        """A worker could not be reached: avoid it for a while, and let the controller purge it (throttled)."""
        self._cooling[address] = self._clock() + self._cooldown
        with self._picks_lock:
            for picks in self._picks.values():
                picks.named.pop(address, None)
        self._refresh_workers()

    def ready(self) -> None:
        """Raise UpstreamError unless the controller answers."""
        self._fetch_models()

    def current_models(self) -> list[str]:
        """The controller's model list now, sorted, without a worker refresh (the status page's). Raises
        UpstreamError when it does not answer."""
        return sorted(self._fetch_models())

    def named_workers(self) -> dict[str, dict[str, float]]:
        """model -> {worker address: how many seconds ago the controller last named it}: the workers this process
        knows of (the controller has no endpoint listing them)."""
        now = self._clock()
        with self._picks_lock:
            return {model: {address: now - named_at for address, named_at in picks.named.items()}
                    for model, picks in self._picks.items() if picks.named}

    def avoided(self) -> list[str]:
        """The workers this process avoids now, after they could not be reached (dropped from named_workers)."""
        now = self._clock()
        return sorted(address for address, until in list(self._cooling.items()) if until > now)

    def _ask(self, model: str) -> str:
        # Asking again is how to avoid a worker that just failed: each pick raises that worker's queue count in
        # the controller, so shortest_queue moves on.
        for _ in range(3):
            address = self._pick(model)
            if self._cooling.get(address, 0) <= self._clock():
                return address
        return address

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


class _Picks:
    """The workers the controller named for one model, and when; read and changed under the controller's lock."""

    def __init__(self):
        self.named: dict[str, float] = {}  # address -> when the controller last named it
        self.asked_at = float("-inf")
        self._turn = 0

    def next(self, named_since: float) -> str | None:
        """The next worker named since `named_since`, round-robin; None when there is none."""
        fresh = [address for address, named_at in self.named.items() if named_at >= named_since]
        if not fresh:
            return None
        self._turn += 1
        return fresh[self._turn % len(fresh)]
