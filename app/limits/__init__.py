"""Per-key limits: requests and tokens per minute and parallel requests (app.keys reads them from the key file).

limiter.py decides and settles; headers.py writes OpenAI's x-ratelimit-* headers; guard.py is what a store failure
turns into (fail open or closed); the stores keep the counts where every process sees them: embedded.py in a SQLite
file of the host (no service to run), redis_store.py in Redis (several gateway instances), each doing what a request
needs in one round trip (counts.py). The windows are the `limits` library's fixed windows, over its Storage
interface and, for Redis, its RedisStorage and increment script.
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
        from app.limits.redis_store import redis_store  # redis-py is imported only when it is used

        return KeyLimiter(redis_store(config["REDIS_URL"], config["REDIS_TIMEOUT"]), guard)
    from app.limits.embedded import EmbeddedStorage

    # gunicorn.conf.py gives its processes one directory; without gunicorn (one process) the store makes one when
    # first used.
    return KeyLimiter(EmbeddedStorage(config["RATE_LIMIT_DIR"] or None), guard)
