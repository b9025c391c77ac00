"""The worker's concurrency limit (--limit-worker-concurrency), with FastChat's queue_length semantics."""
from __future__ import annotations

import asyncio
import collections


class Limiter:
    """At most `limit` requests at work; more wait in arrival order. Also an async context manager (one permit)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self.waiters: collections.deque = collections.deque()
        self.created = False  # FastChat reports 0 before the first request

    def try_acquire(self) -> bool:
        self.created = True
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the permit was handed over; give it back
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the permit over
                return
        self.active -= 1

    async def __aenter__(self) -> None:
        if not self.try_acquire():
            await self.acquire()

    async def __aexit__(self, *exc_info) -> None:
        self.release()

    @property
    def queue_length(self) -> int:
        """Requests at work plus those waiting (0 until the first request, as FastChat's semaphore)."""
        if not self.created:
            return 0
        return self.active + len(self.waiters)
