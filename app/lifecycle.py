"""This process's shutdown: set once when gunicorn tells the worker to stop (SIGTERM, which is also how a reload
or a binary upgrade retires old workers), read by /ready and by the stream generators.

gunicorn then stops accepting, lets in-flight requests run for GUNICORN_GRACEFUL_TIMEOUT and SIGKILLs what is left.
A stream still open near that limit is ended here first, with an error event and its framing's end, so the client
is told rather than cut: at the graceful timeout less a margin (a tenth of it, between 1 and 5 s) for the last
events to be written.
"""
from __future__ import annotations

import signal
import time

from app.errors import ApiError, shutting_down

_draining = False
_deadline: float | None = None  # time.monotonic() by which open streams end


def margin(graceful_timeout: float) -> float:
    return min(5.0, max(1.0, graceful_timeout / 10))


def begin_drain(graceful_timeout: float, now: float | None = None) -> None:
    """The process is stopping: /ready says so from now on, and streams end before the graceful timeout does."""
    global _draining, _deadline
    if _draining:  # a second SIGTERM does not move the deadline gunicorn counts from the first
        return
    now = time.monotonic() if now is None else now
    _draining = True
    _deadline = now + max(0.0, graceful_timeout - margin(graceful_timeout))


def draining() -> bool:
    return _draining


def stream_error() -> ApiError | None:
    """The error an open stream must end with now, or None while it may go on. Called once per chunk."""
    if _deadline is None or time.monotonic() < _deadline:
        return None
    return shutting_down()


def install(graceful_timeout: float) -> None:
    """In a gunicorn worker (post_worker_init): begin draining on SIGTERM, then let gunicorn's own handler run."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        begin_drain(graceful_timeout)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def reset() -> None:
    """Back to serving (tests)."""
    global _draining, _deadline
    _draining, _deadline = False, None
