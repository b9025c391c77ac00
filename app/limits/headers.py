"""OpenAI's rate-limit headers, in its formats: durations as Go writes them (`120ms`, `1s`, `6m0s`, `1m30.5s`),
Retry-After in whole seconds and retry-after-ms (the openai SDK prefers it) for a refusal."""
from __future__ import annotations

import math


def duration(seconds: float) -> str:
    """`seconds` as x-ratelimit-reset-* writes it: 120ms, 1s, 17.5s, 6m0s, 1m30.5s."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def window(kind: str, limit: int, remaining: int, reset: float) -> dict[str, str]:
    """The x-ratelimit trio of one limit: kind "requests" or "tokens"; reset: seconds until it is whole again."""
    return {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
            f"x-ratelimit-reset-{kind}": duration(reset)}


def retry_after(seconds: float) -> dict[str, str]:
    """When to try again: at least a second (a client that retries at once only meets the same refusal)."""
    seconds = max(seconds, 0.001)
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}
