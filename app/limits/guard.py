"""What a failing limits store (Redis down, the embedded file unwritable) turns into: RATE_LIMIT_STORE_FAILURE
open (the request goes in without limits) or closed (a 503), counted every time and logged at most once a minute
while it lasts (plus once when the store answers again). After a failure the store is left alone for PAUSE
seconds: requests meanwhile get the same decision at once instead of each waiting for a timeout."""
from __future__ import annotations

import logging
import threading
import time

from app import metrics
from app.errors import rate_limit_store_unavailable

logger = logging.getLogger(__name__)

PAUSE = 1.0  # seconds without asking the store after it failed
LOG_EVERY = 60.0  # seconds between two log lines about one outage


class StoreGuard:
    def __init__(self, fail_open: bool, clock=time.monotonic):
        self.fail_open = fail_open
        self._clock = clock
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._failing = False
        self._logged = -LOG_EVERY

    def available(self) -> bool:
        """Whether to ask the store now (False during the pause after a failure)."""
        return self._clock() >= self._paused_until

    def failed(self, exc: BaseException) -> None:
        """Pause, and log the outage (at most once per LOG_EVERY)."""
        now = self._clock()
        with self._lock:
            self._paused_until = now + PAUSE
            self._failing = True
            if now - self._logged < LOG_EVERY:
                return
            self._logged = now
        logger.error("the per-key limits' store failed (%s: %s); requests of limited keys are %s until it answers "
                     "(RATE_LIMIT_STORE_FAILURE=%s)", type(exc).__name__, exc,
                     "let in without limits" if self.fail_open else "refused with 503",
                     "open" if self.fail_open else "closed")

    def succeeded(self) -> None:
        if self._failing:
            with self._lock:
                if not self._failing:
                    return
                self._failing = False
                self._logged = -LOG_EVERY
            logger.warning("the per-key limits' store answers again; limits are enforced")

    def unsettled(self) -> None:
        """A finished request whose tokens or parallel slot could not be given to the store (the slot expires)."""
        metrics.RATE_LIMIT_STORE_ERRORS.labels("unsettled").inc()

    def decide(self) -> None:
        """A request whose limits cannot be checked: count it, then let it in (open) or raise the 503 (closed)."""
        metrics.RATE_LIMIT_STORE_ERRORS.labels("open" if self.fail_open else "closed").inc()
        if not self.fail_open:
            raise rate_limit_store_unavailable(retry_after=1)
