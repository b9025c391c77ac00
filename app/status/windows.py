"""Rolling per-model, per-key and per-worker figures over the last minutes, from each finished request (RequestRecord).

Buckets of a few seconds, numbered by absolute time, so a sparkline needs no extra bookkeeping, old requests fall
out without a sweep, and the buckets of several processes add up. With a directory (gunicorn's: the Prometheus
one), each process writes its buckets there at most once a second, and a page sums every process's, a process
that died included until its requests age out.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_MOST_NAMES = 256  # per group: the names come from workers and the key file, this only bounds a surprise
FLUSH_SECONDS = 1.0  # how stale another process's figures may be on a page
_PREFIX = "status-windows-"


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

    def __init__(self, *, bucket_seconds: float = 10.0, buckets: int = 30, clock: Callable[[], float] = time.time,
                 directory: str | None = None, process: Callable[[], int] = os.getpid):
        """directory: where every process of this server keeps its buckets (None: this process's only); process:
        this process's id, which names its file there."""
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self._clock = clock
        self._started = clock()
        self._series: dict[tuple[str, str], list[_Bucket]] = {}
        self._lock = threading.Lock()
        self._directory = directory
        self._dirty = False
        self._flusher_pid: int | None = None
        self._process = process

    @property
    def seconds(self) -> float:
        return self.bucket_seconds * self.buckets

    def add(self, group: str, name: str, *, error: bool, ttft: float | None = None, prompt_tokens: int = 0,
            completion_tokens: int = 0) -> None:
        figures = _Bucket(int(self._clock() // self.bucket_seconds), 1, int(error), ttft or 0.0,
                          int(ttft is not None), prompt_tokens, completion_tokens)
        with self._lock:
            self._add_bucket(group, name, figures)
            self._dirty = True
        if self._directory is not None and self._flusher_pid != self._process():
            self._start_flusher()

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

    # ------------------------------------------------------------------------------------ shared between processes
    def merged(self) -> "Windows":
        """This process's figures plus every other's written in the directory (itself when there is none)."""
        if self._directory is None:
            return self
        self.flush()
        total = Windows(bucket_seconds=self.bucket_seconds, buckets=self.buckets, clock=self._clock)
        oldest = int(self._clock() // self.bucket_seconds) - self.buckets
        try:
            names = [name for name in os.listdir(self._directory) if name.startswith(_PREFIX)]
        except OSError:
            names = []
        for name in names:
            try:
                with open(os.path.join(self._directory, name), encoding="utf-8") as file:
                    data = json.load(file)
                if data["bucket_seconds"] != self.bucket_seconds:
                    continue
                buckets = [(entry["group"], entry["name"], _Bucket(*fields))
                           for entry in data["series"] for fields in entry["buckets"] if fields[0] > oldest]
                started = float(data["started"])
            except (OSError, ValueError, KeyError, TypeError, IndexError):  # gone, or not one of ours: skipped
                continue
            total._started = min(total._started, started)
            for group, series_name, bucket in buckets:
                total._add_bucket(group, series_name, bucket)
        return total

    def _add_bucket(self, group: str, name: str, other: _Bucket) -> None:
        """Under the lock (or on a Windows no other thread knows): add `other`'s figures to its bucket of time."""
        series = self._series.get((group, name))
        if series is None:
            if sum(1 for g, _ in self._series if g == group) >= _MOST_NAMES:
                return
            series = self._series[(group, name)] = [_Bucket() for _ in range(self.buckets)]
        slot = other.index % self.buckets
        bucket = series[slot]
        if bucket.index != other.index:
            series[slot] = bucket = _Bucket(other.index)
        bucket.requests += other.requests
        bucket.errors += other.errors
        bucket.ttft_sum += other.ttft_sum
        bucket.ttft_count += other.ttft_count
        bucket.prompt_tokens += other.prompt_tokens
        bucket.completion_tokens += other.completion_tokens

    def flush(self) -> None:
        """Write this process's buckets to the directory, if anything changed (atomically: a page never reads half)."""
        if self._directory is None or not self._dirty:
            return
        with self._lock:
            self._dirty = False
            series = [{"group": group, "name": name,
                       "buckets": [[b.index, b.requests, b.errors, b.ttft_sum, b.ttft_count, b.prompt_tokens,
                                    b.completion_tokens] for b in buckets if b.index >= 0]}
                      for (group, name), buckets in self._series.items()]
        path = os.path.join(self._directory, f"{_PREFIX}{self._process()}.json")
        try:
            with open(f"{path}.tmp", "w", encoding="utf-8") as file:
                json.dump({"bucket_seconds": self.bucket_seconds, "started": self._started, "series": series}, file)
            os.replace(f"{path}.tmp", path)
        except OSError:
            self._dirty = True  # tried again at the next flush

    def _start_flusher(self) -> None:
        """Once per process (after gunicorn's fork): a daemon thread writing the buckets when they changed."""
        with self._lock:
            if self._flusher_pid == self._process():
                return
            self._flusher_pid = self._process()

        def loop() -> None:
            while True:
                time.sleep(FLUSH_SECONDS)
                self.flush()

        threading.Thread(target=loop, name="status-windows", daemon=True).start()
