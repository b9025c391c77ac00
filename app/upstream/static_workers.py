"""The gateway as its own dispatcher, for single-box installs with no FastChat controller (WORKER_ADDRESSES).

Each gunicorn process polls every worker's /worker_get_status on a short interval from one background thread
(started on first use, so after the fork), never once per request, and routes with FastChat's shortest_queue
rule: the least queue_length / speed among live workers serving the model, counting the requests this process
sent it since the last poll. A worker that does not answer drops out until it answers again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.upstream.client import Timeout, UpstreamClient
from app.upstream.errors import UNAVAILABLE, UpstreamError
from app.upstream.worker_status import WorkerState, read_status

logger = logging.getLogger(__name__)


@dataclass
class _Status:
    models: frozenset[str]
    speed: float
    queue_length: int
    dispatched: int = 0  # picks since this status was read, as FastChat's controller counts them


class StaticWorkers:
    """A WorkerSource (app.upstream.worker_source) for a fixed worker list, as Controller is for a controller."""

    def __init__(self, client: UpstreamClient, addresses: tuple[str, ...], *, timeout: Timeout, interval: float,
                 multimodal_models: frozenset[str] = frozenset()):
        self._client = client
        self.addresses = addresses
        self._multimodal = multimodal_models
        self._timeout = timeout
        self._interval = interval
        self._live: dict[str, _Status] = {}
        self._known_models: set[str] = set()  # every model a worker has served: down for now is 503, not 404
        # address -> when (time.time()) it last answered its status poll, and the models it served then
        self._seen: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._first_poll = threading.Event()
        self._stopped = threading.Event()

    def list_models(self) -> list[str]:
        self._start()
        with self._lock:
            return sorted({model for status in self._live.values() for model in status.models})

    def has_model(self, model: str) -> bool:
        """Whether some configured worker serves (or served) `model`; whether one is up now is for
        get_worker_address to say."""
        self._start()
        with self._lock:
            return model in self._known_models

    def is_multimodal(self, model: str) -> bool:
        """Whether MULTIMODAL_MODELS lists `model`: a worker's status does not say whether it takes images."""
        return model in self._multimodal

    def get_worker_address(self, model: str) -> str:
        """The live worker for `model` with the shortest queue. Raises UpstreamError(unavailable) if none."""
        self._start()
        with self._lock:
            candidates = [(address, status) for address, status in self._live.items() if model in status.models]
            if not candidates:
                raise UpstreamError(UNAVAILABLE, f"No worker is available for model '{model}' right now.",
                                    upstream="worker")
            address, status = min(candidates,
                                  key=lambda c: (c[1].queue_length + c[1].dispatched) / max(c[1].speed, 1e-4))
            status.dispatched += 1
            return address

    def report_failure(self, address: str) -> None:
        """A worker could not be reached: out of rotation until its next successful status poll."""
        with self._lock:
            self._live.pop(address, None)

    def ready(self) -> None:
        """Raise UpstreamError unless at least one worker answers its status poll."""
        self._start()
        with self._lock:
            if self._live:
                return
        raise UpstreamError(UNAVAILABLE, "No worker answers its status poll.", upstream="worker")

    def poll(self) -> None:
        """Read every worker's status once and replace the live set."""
        live = {}
        for address in self.addresses:
            status = self._read_status(address)
            if status is not None:
                live[address] = status
        with self._lock:
            self._live = live
            for status in live.values():
                self._known_models |= status.models

    def _read_status(self, address: str) -> _Status | None:
        try:
            status = read_status(self._client, address, self._timeout)
        except UpstreamError as exc:
            logger.warning("worker %s is down: %s", address, exc.message)
            return None
        self._seen[address] = (time.time(), sorted(status.models))
        return _Status(status.models, status.speed, status.queue_length)

    def worker_states(self) -> list[WorkerState]:
        """Every listed worker as the last poll saw it (no network traffic): the status page's."""
        self._start()
        with self._lock:
            live, seen_at = dict(self._live), dict(self._seen)
        states = []
        for address in self.addresses:
            status, (seen, models) = live.get(address), seen_at.get(address, (None, []))
            states.append(WorkerState(address, models, status.speed if status else None,
                                      status.queue_length if status else None, status is not None, seen))
        return states

    def _start(self) -> None:
        # The first caller polls synchronously (so the first request can be served); a daemon thread then keeps
        # the statuses fresh. Starting it lazily keeps app creation free of threads and network traffic.
        if self._poller is not None:
            self._first_poll.wait(timeout=sum(self._timeout) * len(self.addresses))
            return
        with self._lock:
            if self._poller is not None:
                return self._start()
            self._poller = threading.Thread(target=self._poll_forever, daemon=True, name="worker-status")
        try:
            self.poll()
        finally:
            self._first_poll.set()
            self._poller.start()

    def close(self) -> None:
        """Stop the background polling."""
        self._stopped.set()

    def _poll_forever(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.poll()
            except Exception:  # never let the poller die: routing would freeze on stale statuses
                logger.exception("worker status poll failed")
