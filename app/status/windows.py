"""Rolling per-model, per-key and per-worker figures over the last minutes, from each finished request (RequestRecord).

One set per process: gunicorn's processes do not share them (the status page says so). Buckets of a few seconds,
so a sparkline needs no extra bookkeeping and old requests fall out without a sweep.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_MOST_NAMES = 256  # per group: the names come from workers and the key file, this only bounds a surprise


@dataclass
class _Bucket:
    index: int = -1  # which bucket of time (now // seconds) it holds
    requests: int = 0
    errors: int = 0
    ttft_sum: float = 0.0
    ttft_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Windows:
    """Figures by (group, name): group "model", "key" or "worker". Thread-safe."""

    def __init__(self, *, bucket_seconds: float = 10.0, buckets: int = 30, clock: Callable[[], float] = time.time):
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self._clock = clock
        self._started = clock()
        self._series: dict[tuple[str, str], list[_Bucket]] = {}
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return self.bucket_seconds * self.buckets

    def add(self, group: str, name: str, *, error: bool, ttft: float | None = None, prompt_tokens: int = 0,
            completion_tokens: int = 0) -> None:
        index = int(self._clock() // self.bucket_seconds)
        with self._lock:
            series = self._series.get((group, name))
            if series is None:
                if sum(1 for g, _ in self._series if g == group) >= _MOST_NAMES:
                    return
                series = self._series[(group, name)] = [_Bucket() for _ in range(self.buckets)]
            bucket = series[index % self.buckets]
            if bucket.index != index:
                series[index % self.buckets] = bucket = _Bucket(index)
            bucket.requests += 1
            bucket.errors += error
            if ttft is not None:
                bucket.ttft_sum += ttft
                bucket.ttft_count += 1
            bucket.prompt_tokens += prompt_tokens
            bucket.completion_tokens += completion_tokens

    def names(self, group: str) -> list[str]:
        with self._lock:
            return sorted(name for g, name in self._series if g == group)

    def summary(self, group: str, name: str) -> dict:
        """The last `seconds` (or since the process started, when that is shorter): totals, rates, and requests
        per bucket oldest first (for a sparkline)."""
        now = self._clock()
        newest = int(now // self.bucket_seconds)
        with self._lock:
            series = self._series.get((group, name)) or []
            by_index = {bucket.index: bucket for bucket in series}
        recent = [by_index.get(index) or _Bucket(index) for index in range(newest - self.buckets + 1, newest + 1)]
        span = max(min(self.seconds, now - self._started), 1.0)
        requests = sum(b.requests for b in recent)
        errors = sum(b.errors for b in recent)
        ttft_count = sum(b.ttft_count for b in recent)
        completion = sum(b.completion_tokens for b in recent)
        return {
            "requests": requests, "errors": errors,
            "requests_per_second": round(requests / span, 3),
            "error_rate": round(errors / requests, 4) if requests else None,
            "time_to_first_token_ms": round(sum(b.ttft_sum for b in recent) / ttft_count * 1000, 1)
            if ttft_count else None,
            "prompt_tokens": sum(b.prompt_tokens for b in recent), "completion_tokens": completion,
            "tokens_per_second": round(completion / span, 2),
            "requests_per_bucket": [b.requests for b in recent],
        }
