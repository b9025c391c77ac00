"""The shared store for several gateway instances: Redis, through redis-py. The counters are the `limits`
library's RedisStorage (its Lua scripts: one round trip per hit); the parallel-request leases are a sorted set
per key scored by expiry, taken in one pipelined transaction.

Nothing may hang on a Redis that is down or stalled: short connect and command timeouts, and no retries by the
client (StoreGuard pauses instead)."""
from __future__ import annotations

import os
import socket
import time

import redis
from limits.storage import RedisStorage
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.limits.embedded import process_alive

PREFIX = "fastchat-gateway"
_HOST = socket.gethostname()


def redis_stores(url: str, timeout: float) -> tuple[RedisStorage, "RedisLeases", tuple]:
    """(counters, leases, the errors they raise) over one connection pool."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0),
               "retry_on_timeout": False}
    pool = redis.ConnectionPool.from_url(url, **options)
    counters = RedisStorage(url, connection_pool=pool, key_prefix=PREFIX, **options)
    return counters, RedisLeases(counters.storage), (redis.RedisError, OSError)


class RedisLeases:
    def __init__(self, client: redis.Redis, clock=time.time):
        self._client = client
        self._clock = clock

    def acquire(self, key: str, limit: int, lease: str, ttl: float) -> tuple[bool, int]:
        """Take one of `limit` slots for `lease` (for at most `ttl` s): (taken, slots in use then). One round trip
        when there is room."""
        name, member, now = f"{PREFIX}:parallel:{key}", f"{_HOST}:{os.getpid()}:{lease}", self._clock()
        pipe = self._client.pipeline(transaction=True)
        pipe.zremrangebyscore(name, "-inf", now)
        pipe.zadd(name, {member: now + ttl})
        pipe.zcard(name)
        pipe.expire(name, int(ttl) + 1)
        in_use = pipe.execute()[2]
        if in_use > limit:  # full: drop what dead processes of this host left, else give the slot back
            own = f"{_HOST}:".encode()
            dead = [m for m in self._client.zrange(name, 0, -1)
                    if m.startswith(own) and not process_alive(int(m.rsplit(b":", 2)[1]))]
            if dead:
                self._client.zrem(name, *dead)
                in_use -= len(dead)
            if in_use > limit:
                self._client.zrem(name, member)
                return False, in_use - 1
        return True, in_use

    def release(self, key: str, lease: str) -> None:
        self._client.zrem(f"{PREFIX}:parallel:{key}", f"{_HOST}:{os.getpid()}:{lease}")
