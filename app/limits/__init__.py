"""Per-key limits: requests and tokens per minute and parallel requests (app.keys reads them from the key file).

limiter.py decides and settles; headers.py writes OpenAI's x-ratelimit-* headers; guard.py is what a store failure
turns into (fail open or closed); the stores keep the counts where every process sees them: embedded.py in a SQLite
file of the host (no service to run), redis_store.py in Redis (several gateway instances). The counting algorithm,
a fixed window per minute, is the `limits` library's (FixedWindowRateLimiter over a `limits` Storage).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.limits.guard import StoreGuard
from app.limits.limiter import KeyLimiter


def build_limiter(config: Mapping[str, Any]) -> KeyLimiter:
    """The limiter of one process, over Redis when REDIS_URL is set, else over the host's embedded file. No
    connection is made here (gunicorn may fork after), so a Redis that is down does not stop the start."""
    guard = StoreGuard(fail_open=config["RATE_LIMIT_STORE_FAILURE"] == "open")
    if config["REDIS_URL"]:
        from app.limits.redis_store import redis_stores  # redis-py is imported only when it is used

        counters, leases, errors = redis_stores(config["REDIS_URL"], config["REDIS_TIMEOUT"])
    else:
        from app.limits.embedded import EmbeddedStorage

        # gunicorn.conf.py gives its processes one directory; without gunicorn (one process) the store makes one
        # when first used.
        counters = leases = EmbeddedStorage(config["RATE_LIMIT_DIR"] or None)
        errors = EmbeddedStorage.errors
    return KeyLimiter(counters, leases, guard, errors)
