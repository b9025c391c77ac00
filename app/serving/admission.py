"""Back-pressure: refuse a generation at once, 503 with Retry-After, when its model's workers hold as much as
they should or this process streams as much as it can, rather than let it queue for minutes (FastChat lets requests
pile up on the worker's semaphore; Ollama answers 503 when its queue is full). The openai SDK retries a 503 by
itself after Retry-After, which spreads a burst over time.

What the gateway can know of a model's queue: a worker's /worker_get_status says its queue_length (generating +
waiting for its semaphore, from every client) but not its limit-worker-concurrency, so WORKER_CONCURRENCY says
that. fschat 0.2.36's controller keeps each worker's queue_length only from heartbeats (every 45 s; it adds 1 per
pick in between) and shows no per-worker figure: its own /worker_get_status sums every model's workers, polling
them all synchronously while the controller waits. So the gateway reads the status of the workers it was routed
to itself (upstream.worker_status), off the request path, and only with several processes.

What it counts itself: its requests in flight per model in this process, exactly and for free. A model's cap is
a cluster figure: workers x WORKER_CONCURRENCY generating + MODEL_QUEUE_LIMIT waiting (workers: those it was routed
to in the last minute). With one process its own count is the figure to compare. With several (WEB_CONCURRENCY),
each reads the queue_length of the workers of the models it served in the last minute from a background thread,
once per QUEUE_STATUS_TTL, and goes by what they held at the read plus what it started and less what it ended
since. Until the next read it takes only its part (1 / WEB_CONCURRENCY) of the room the read showed, since the
others may be filling it too: so a burst spread over the processes overshoots the cap by at most one request per
process, what other gateway instances do since the read is the error (bounded by the TTL), and no cross-process
store is needed. Until a status is read (or when it is older than 4 TTLs) each process holds at most
its share, the cap / WEB_CONCURRENCY. A request counts once whatever its n.

Failing safe: without WORKER_CONCURRENCY or MODEL_QUEUE_LIMIT, no per-model cap (FastChat's behaviour); a model no
worker was routed to in the last minute gets the cap of one worker; when no status can be read, the share is the cap
(a worker that does not answer still counts until it is no longer routed to).

Streams hold a gunicorn thread (gevent: a connection) until their last byte: at most MAX_STREAMS_PER_PROCESS of
them per process, below the thread count, so /health, /ready and whole replies always find a thread.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from app.errors import ApiError, model_overloaded, server_overloaded
from app.settings import ConfigError
from app.upstream.errors import UpstreamError

logger = logging.getLogger(__name__)

WORKER_MEMORY = 60.0  # seconds a worker the model was routed to counts toward its cap without being routed to again
STALE_READS = 4  # a queue_length read more than this many TTLs ago is not used
EWMA_WEIGHT = 0.2  # weight of the latest request's duration in a model's mean duration


@dataclass(frozen=True)
class AdmissionRules:
    """worker_concurrency: each worker's limit-worker-concurrency (0: not known); queue_limit: requests per model
    that may wait beyond that (None: as many as generate); processes: WEB_CONCURRENCY; stream_limit: streams per
    process (None: no cap); status_ttl: QUEUE_STATUS_TTL; retry_after_max: RETRY_AFTER_MAX."""

    worker_concurrency: int = 0
    queue_limit: int | None = None
    processes: int = 1
    stream_limit: int | None = None
    status_ttl: float = 1.0
    retry_after_max: int = 30

    @property
    def caps_models(self) -> bool:
        return bool(self.worker_concurrency) or self.queue_limit is not None

    def model_limit(self, workers: int) -> int | None:
        """The most requests `workers` workers of a model should hold, generating or waiting; None: no cap."""
        if not workers or not self.caps_models:
            return None
        running = workers * self.worker_concurrency
        return running + (running if self.queue_limit is None else self.queue_limit)

    @classmethod
    def from_config(cls, config: Mapping, server: Mapping) -> "AdmissionRules":
        """From the app's settings and gunicorn's (server: app.settings.read(environ, SERVER)). Raises ConfigError
        for a cap that would refuse every request."""
        queue_limit = config["MODEL_QUEUE_LIMIT"]
        if queue_limit == 0 and not config["WORKER_CONCURRENCY"]:
            raise ConfigError("MODEL_QUEUE_LIMIT=0 without WORKER_CONCURRENCY would refuse every request: set "
                              "WORKER_CONCURRENCY to what each worker generates at once")
        return cls(worker_concurrency=0 if queue_limit == "off" else config["WORKER_CONCURRENCY"],
                   queue_limit=None if queue_limit in ("auto", "off") else queue_limit,
                   processes=server["WEB_CONCURRENCY"],
                   stream_limit=stream_limit(config["MAX_STREAMS_PER_PROCESS"], server),
                   status_ttl=config["QUEUE_STATUS_TTL"], retry_after_max=config["RETRY_AFTER_MAX"])


def stream_limit(setting, server: Mapping) -> int | None:
    """MAX_STREAMS_PER_PROCESS: a number, off (None), or auto: what a process can hold at once (gthread: its threads;
    gevent and eventlet: its connections) less a reserve for probes, refusals and whole replies: an eighth, at least
    2 and at most 16 (probes and refusals take a thread for a few ms; 528 threads keep 512 for streams)."""
    if setting == "off":
        return None
    if setting != "auto":
        return setting
    worker_class = server["GUNICORN_WORKER_CLASS"].lower()
    green = "gevent" in worker_class or "eventlet" in worker_class
    slots = server["GUNICORN_WORKER_CONNECTIONS"] if green else server["GUNICORN_THREADS"]
    return max(1, slots - min(16, max(2, slots // 8)))


@dataclass
class _Model:
    """What this process knows of one model; read and changed under Admission's lock."""

    in_flight: int = 0
    workers: dict[str, float] = field(default_factory=dict)  # address -> when a request was last routed to it
    queue: int | None = None  # the workers' summed queue_length at the last read
    read_at: float = float("-inf")
    in_flight_at_read: int = 0
    duration: float | None = None  # mean duration of its requests here, seconds

    def forget_old_workers(self, now: float) -> None:
        for address in [a for a, at in self.workers.items() if at < now - WORKER_MEMORY]:
            del self.workers[address]


class Ticket:
    """A place held by an admitted request; release() (also as an on_finish callback) gives it back, once."""

    __slots__ = ("_admission", "_model", "_stream", "_started", "_released")

    def __init__(self, admission: "Admission", model: str, stream: bool, started: float):
        self._admission, self._model, self._stream, self._started = admission, model, stream, started
        self._released = False

    def release(self, *_) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self._model, self._stream, self._started)


class Admission:
    """Per process: generations in flight per model and streams in flight, admitted or refused with 503.

    read_queue_length(address) -> int reads a worker's status (raising UpstreamError or ValueError); only poll()
    calls it, which start_poller(poll_forever) runs in a background thread (started by the first capped request
    when there are several processes, so after gunicorn's fork)."""

    def __init__(self, rules: AdmissionRules, read_queue_length: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic,
                 start_poller: Callable[[Callable[[], None]], None] | None = None):
        self.rules = rules
        self._read_queue_length = read_queue_length
        self._clock = clock
        self._start_poller = start_poller or _daemon_thread
        self._polling = False
        self._stopped = threading.Event()
        self._models: dict[str, _Model] = {}
        self._streams = 0
        self._lock = threading.Lock()

    def admit(self, model: str, stream: bool, caps_model: bool = True) -> Ticket:
        """A place for a request to `model`; raises ApiError 503 (model_overloaded, server_overloaded) with
        Retry-After when there is none. Costs a lock and a few dict operations, no network. caps_model: False
        when the model's queue is not FastChat workers' (a routed model): only the stream cap applies."""
        now = self._clock()
        start_poller = False
        with self._lock:
            limit = self.rules.stream_limit
            if stream and limit is not None and self._streams >= limit:
                raise server_overloaded(limit, 1)  # the streams of the other processes end at their own pace
            state = self._models.get(model)
            if state is None:
                state = self._models[model] = _Model()
            if self.rules.caps_models and caps_model:
                if self.rules.processes > 1 and not self._polling:
                    self._polling = start_poller = True
                error = self._check(model, state, now)
            else:
                error = None
            if error is None:
                state.in_flight += 1
                if stream:
                    self._streams += 1
        if start_poller:
            self._start_poller(self._poll_forever)
        if error is not None:
            raise error
        return Ticket(self, model, stream, now)

    def routed(self, model: str, address: str) -> None:
        """A request for `model` goes to the worker at `address`: it counts toward the model's cap for a while."""
        if self.rules.caps_models:
            now = self._clock()
            with self._lock:
                state = self._models.get(model)
                if state is not None:
                    state.workers[address] = now

    def in_flight(self, model: str) -> int:
        with self._lock:
            state = self._models.get(model)
            return state.in_flight if state else 0

    @property
    def streams(self) -> int:
        return self._streams

    def _check(self, model: str, state: _Model, now: float) -> ApiError | None:
        """Under the lock: the error to refuse the request with, if any."""
        state.forget_old_workers(now)
        workers = max(1, len(state.workers))  # served by one at least, if it exists (else a 404 follows)
        limit = self.rules.model_limit(workers)
        if self.rules.processes == 1:  # its own count is the whole count (of this instance): nothing to read
            estimate = state.in_flight
        elif state.queue is None or now - state.read_at > STALE_READS * self.rules.status_ttl:
            # No status to go by: this process's share of the cap is its cap.
            estimate = limit if state.in_flight >= math.ceil(limit / self.rules.processes) else state.in_flight
        else:
            # What the workers held at the read, plus what this process started and less what it ended since;
            # never less than this process has in flight (some of it may not have reached them at the read).
            grown = state.in_flight - state.in_flight_at_read
            estimate = max(state.in_flight, state.queue + grown)
            # The others may be filling the same room until the next read: this process takes its part of it.
            if grown >= math.ceil(max(0, limit - state.queue) / self.rules.processes):
                estimate = max(estimate, limit)
        if estimate < limit:
            return None
        return model_overloaded(model, self._retry_after(state, estimate, workers))

    def _retry_after(self, state: _Model, estimate: int, workers: int) -> int:
        """Seconds until the workers are likely to take one more: the requests ahead of it beyond what they
        generate at once, times the model's mean duration over what they generate at once; 1 to RETRY_AFTER_MAX."""
        duration = state.duration or 1.0
        running = workers * self.rules.worker_concurrency
        seconds = duration * max(1, estimate - running + 1) / running if running else duration
        return max(1, min(self.rules.retry_after_max, math.ceil(seconds)))

    def poll(self) -> None:
        """Read the queue_length of the workers of every model routed to lately, once. A worker that does not
        answer still counts toward its model's cap until it is no longer routed to (failover routes around it):
        no status is no reason to admit more."""
        now = self._clock()
        with self._lock:
            for model, state in list(self._models.items()):
                state.forget_old_workers(now)
                if not state.in_flight and not state.workers:
                    del self._models[model]
            polled = [(state, tuple(state.workers)) for state in self._models.values() if state.workers]
        for state, addresses in polled:
            with self._lock:
                in_flight = state.in_flight
            total, answered = 0, 0
            for address in addresses:
                try:
                    total += self._read_queue_length(address)
                    answered += 1
                except (UpstreamError, ValueError) as exc:
                    logger.warning("worker %s status unreadable: %s", address, getattr(exc, "message", exc))
            with self._lock:
                state.queue = total if answered else None
                state.read_at, state.in_flight_at_read = self._clock(), in_flight

    def close(self) -> None:
        """Stop the background polling."""
        self._stopped.set()

    def _poll_forever(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # never let the poller die: every process would fall back to its share
                logger.exception("queue status poll failed")
            if self._stopped.wait(self.rules.status_ttl):
                return

    def _release(self, model: str, stream: bool, started: float) -> None:
        now = self._clock()
        with self._lock:
            if stream:
                self._streams -= 1
            state = self._models.get(model)
            if state is None:
                return
            state.in_flight -= 1
            took = now - started
            state.duration = took if state.duration is None else \
                (1 - EWMA_WEIGHT) * state.duration + EWMA_WEIGHT * took
            if not state.in_flight and not state.workers:
                del self._models[model]  # a made-up model name leaves nothing behind


def _daemon_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, daemon=True, name="queue-status").start()
