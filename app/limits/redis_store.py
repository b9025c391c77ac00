"""The shared store for several gateway instances: Redis, through redis-py, configured by `limits`' RedisStorage
(its connection and key prefix, and its Lua script for a fixed window's increment, limits' incr_expire).

A request of a limited key costs one round trip when it is let in (a pipeline: the request counted with limits'
script, the tokens read, a parallel slot taken in a sorted set scored by expiry) and one when it ends (its tokens
counted, its slot freed); a refusal costs one more. The strategies of `limits` would make one round trip per
operation (eight per request).

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

from app.limits.counts import WINDOW_SECONDS, Counts, parallel_key, requests_key, tokens_key
from app.limits.embedded import process_alive

PREFIX = "fastchat-gateway"
_HOST = socket.gethostname()


def redis_store(url: str, timeout: float) -> "RedisStore":
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0),
               "retry_on_timeout": False}
    pool = redis.ConnectionPool.from_url(url, **options)
    return RedisStore(RedisStorage(url, connection_pool=pool, key_prefix=PREFIX, **options))


class RedisStore:
    errors = (redis.RedisError, OSError)

    def __init__(self, storage: RedisStorage, clock=time.time):
        self.storage = storage  # also usable by limits' strategies, on the same keys
        self._client = storage.storage
        self._incr = storage.lua_incr_expire
        self._clock = clock

    def _key(self, key: str) -> str:
        return self.storage.prefixed_key(key)

    def _member(self, lease: str) -> str:
        return f"{_HOST}:{os.getpid()}:{lease}"

    def _run(self, fill) -> list:
        """One round trip: the commands fill(pipeline) adds, which may call limits' script by its digest; once
        more after loading the script when Redis does not know it (a restarted Redis), so they may run twice."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            fill(pipe)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._client.script_load(self.storage.SCRIPT_INCR_EXPIRE)
        raise AssertionError("unreachable")

    def admit(self, name: str, requests: bool, tokens: bool, parallel: int | None, lease: str,
              ttl: float) -> Counts:
        now, counts = self._clock(), Counts()

        def fill(pipe):
            if tokens:
                pipe.get(self._key(tokens_key(name)))
                pipe.pttl(self._key(tokens_key(name)))
            if requests:
                pipe.evalsha(self._incr.sha, 1, self._key(requests_key(name)), WINDOW_SECONDS, 1)
                pipe.pttl(self._key(requests_key(name)))
            if parallel:
                slots = self._key(parallel_key(name))
                pipe.zremrangebyscore(slots, "-inf", now)
                pipe.zadd(slots, {self._member(lease): now + ttl})
                pipe.zcard(slots)
                pipe.expire(slots, int(ttl) + 1)

        results = iter(self._run(fill))
        if tokens:
            used, left_ms = next(results), next(results)
            counts.tokens_used, counts.tokens_reset = int(used or 0), max(left_ms, 0) / 1000
        if requests:
            counts.requests, left_ms = int(next(results)), next(results)
            counts.requests_reset = max(left_ms, 0) / 1000
        if parallel:
            next(results), next(results)
            counts.in_use = next(results)
            if counts.in_use > parallel:
                counts.slot_taken, counts.in_use = self._full(name, parallel, lease, counts.in_use)
        return counts

    def _full(self, name: str, limit: int, lease: str, in_use: int) -> tuple[bool, int]:
        """More slots taken than allowed: drop what dead processes of this host left, else give ours back."""
        slots, own = self._key(parallel_key(name)), f"{_HOST}:".encode()
        dead = [member for member in self._client.zrange(slots, 0, -1)
                if member.startswith(own) and not process_alive(int(member.rsplit(b":", 2)[1]))]
        if dead:
            self._client.zrem(slots, *dead)
            in_use -= len(dead)
        if in_use > limit:
            self._client.zrem(slots, self._member(lease))
            return False, in_use - 1
        return True, in_use

    def refund(self, name: str, request: bool, lease: str | None) -> None:
        self._count_and_free(requests_key(name), -1 if request else 0, name, lease)

    def settle(self, name: str, tokens: int, lease: str | None) -> None:
        self._count_and_free(tokens_key(name), tokens, name, lease)

    def _count_and_free(self, key: str, amount: int, name: str, lease: str | None) -> None:
        """Add `amount` to the window at `key` (limits' script: a window that ended starts again) and free the
        slot of `lease`, in one round trip."""
        def fill(pipe):
            if amount:
                pipe.evalsha(self._incr.sha, 1, self._key(key), WINDOW_SECONDS, amount)
            if lease is not None:
                pipe.zrem(self._key(parallel_key(name)), self._member(lease))

        if amount or lease is not None:
            self._run(fill)
