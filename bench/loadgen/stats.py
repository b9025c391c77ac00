"""Summaries of a load's per-request records: rates, latency and TTFT percentiles, error counts."""
from __future__ import annotations

import collections
import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def dist_ms(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None, "min": None}
    ms = lambda v: round(v * 1000.0, 3)  # noqa: E731
    return {"n": len(values), "mean": ms(sum(values) / len(values)), "min": ms(values[0]),
            "p50": ms(percentile(values, 50)), "p90": ms(percentile(values, 90)),
            "p99": ms(percentile(values, 99)), "max": ms(values[-1])}


class LoadResult(dict):
    """A JSON-ready summary: requests, ok, errors {label: count}, elapsed_s, rps, latency_ms, ttft_ms."""


def measured_seconds(records: list[tuple], started: float) -> float:
    return max(max((r[2] for r in records), default=started) - started, 1e-9)


def summarize(records: list[tuple], elapsed: float, stream: bool) -> LoadResult:
    """Summary of (send, first token, end, error, events, content chunks) records measured over ``elapsed``
    seconds. ``content_chunks`` counts every record's (a failed stream's chunks were relayed too)."""
    ok = [r for r in records if r[3] is None]
    errors = collections.Counter(r[3] for r in records if r[3] is not None)
    elapsed = max(elapsed, 1e-9)
    result = LoadResult(
        requests=len(records), ok=len(ok), errors=sum(errors.values()), error_kinds=dict(errors),
        elapsed_s=round(elapsed, 3), rps=round(len(ok) / elapsed, 2),
        latency_ms=dist_ms([r[2] - r[0] for r in ok]),
    )
    if stream:
        result["ttft_ms"] = dist_ms([r[1] - r[0] for r in ok if r[1] is not None])
        result["events_per_stream"] = round(sum(r[4] for r in ok) / len(ok), 2) if ok else None
        result["content_chunks"] = sum(r[5] for r in records)
        result["content_chunks_per_stream"] = round(sum(r[5] for r in ok) / len(ok), 2) if ok else None
    return result
