"""Each request of a key with limits: admitted or refused with OpenAI's 429, and settled when it ends.

- requests per minute: the request is counted when it arrives (a refused one is given back);
- tokens per minute: what the request really used (prompt + completion, a cut stream what it got) is counted when
  it ends (RequestRecord.on_finish); a request is let in while the key has tokens left in the window, so one may
  overshoot and the excess stays counted until the window ends;
- parallel requests: a lease from arrival to the end (a stream's last byte, or its client gone).

Windows are fixed, one minute from a key's first use in it: `limits`' FixedWindowRateLimiter, whose hits cost one
store operation whatever their cost (a stream's 4,000 tokens are one increment).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter

from app.errors import rate_limit_exceeded
from app.keys.model import ApiKey
from app.limits import headers

logger = logging.getLogger(__name__)

# A lease outlives a request that never ended (its process died on another host) by at most this long; the
# processes of the gateway's own host are checked as soon as a key is full.
LEASE_SECONDS = 15 * 60
PARALLEL_RETRY_SECONDS = 1.0  # when a parallel slot frees is unknown: the SDK waits this long and tries again


class _PerMinute(RateLimitItemPerMinute):
    """A limit whose count is kept under the key's name and kind only, so that a limit raised or lowered in the
    key file keeps counting the same window (limits' own keys include the amount)."""

    def key_for(self, *identifiers) -> str:
        return "/".join(map(str, identifiers))


@dataclass
class Admission:
    """What a request of a limited key was let in with: the headers of its response, and what settles it."""

    headers: dict[str, str] = field(default_factory=dict)
    lease: str | None = None


class KeyLimiter:
    def __init__(self, counters, leases, guard, errors: tuple, clock=time.time):
        """counters: a `limits` Storage; leases: acquire/release of parallel slots (the embedded store is both);
        errors: what they raise when they fail (StoreGuard decides then)."""
        self._windows = FixedWindowRateLimiter(counters)
        self._counters = counters
        self._leases = leases
        self._guard = guard
        self._errors = errors
        self._clock = clock

    def admit(self, api_key: ApiKey, rejected) -> Admission:
        """Let a request of `api_key` (which has limits) in, or raise the 429 (after `rejected(reason)`), or the
        store failure's 503 (RATE_LIMIT_STORE_FAILURE=closed). Open to a failing store: in, with no headers."""
        if not self._guard.available():
            self._guard.decide()
            return Admission()
        try:
            admission = self._admit(api_key, rejected)
        except self._errors as exc:
            self._guard.failed(exc)
            self._guard.decide()
            return Admission()
        self._guard.succeeded()
        return admission

    def _admit(self, api_key: ApiKey, rejected) -> Admission:
        limits, name, now = api_key.limits, api_key.name, self._clock()
        admission = Admission()
        if limits.tokens_per_minute:
            tokens = _PerMinute(limits.tokens_per_minute)
            stats = self._windows.get_window_stats(tokens, name, "tokens")
            reset = max(0.0, stats.reset_time - now)
            admission.headers.update(headers.window("tokens", tokens.amount, stats.remaining, reset))
            if stats.remaining <= 0:
                used = self._counters.get(tokens.key_for(name, "tokens"))
                rejected("tokens")
                raise self._refusal("tokens", f"Rate limit reached for key {name} on tokens per min (TPM): Limit "
                                    f"{tokens.amount}, Used {used}.", reset, admission)
        requests = _PerMinute(limits.requests_per_minute) if limits.requests_per_minute else None
        if requests is not None:
            allowed = self._windows.hit(requests, name, "requests")
            stats = self._windows.get_window_stats(requests, name, "requests")
            reset = max(0.0, stats.reset_time - now)
            admission.headers.update(headers.window("requests", requests.amount, stats.remaining, reset))
            if not allowed:
                self._counters.incr(requests.key_for(name, "requests"), requests.get_expiry(), amount=-1)
                rejected("rate")
                raise self._refusal("requests", f"Rate limit reached for key {name} on requests per min (RPM): "
                                    f"Limit {requests.amount}, Used {requests.amount}, Requested 1.", reset,
                                    admission)
        if limits.max_parallel_requests:
            lease = uuid.uuid4().hex
            taken, in_use = self._leases.acquire(name, limits.max_parallel_requests, lease, LEASE_SECONDS)
            if not taken:
                if requests is not None:  # it was counted above, and is not served
                    self._counters.incr(requests.key_for(name, "requests"), requests.get_expiry(), amount=-1)
                    remaining = int(admission.headers["x-ratelimit-remaining-requests"]) + 1
                    admission.headers["x-ratelimit-remaining-requests"] = str(remaining)
                rejected("parallel")
                raise self._refusal("requests", f"Too many parallel requests for key {name}: Limit "
                                    f"{limits.max_parallel_requests}, In progress {in_use}, Requested 1.",
                                    PARALLEL_RETRY_SECONDS, admission)
            admission.lease = lease
        return admission

    @staticmethod
    def _refusal(limit_type: str, message: str, wait: float, admission: Admission):
        advice = headers.retry_after(wait)
        return rate_limit_exceeded(limit_type, f"{message} Please try again in {headers.duration(wait)}.",
                                   {**admission.headers, **advice})

    def settle(self, api_key: ApiKey, admission: Admission, usage: dict | None) -> None:
        """When the request is over: count the tokens it used and give its parallel slot back. Never raises
        (it runs after the response); a store failure is counted and logged like any other."""
        limits = api_key.limits
        tokens = _used_tokens(usage) if limits.tokens_per_minute else 0
        if not tokens and admission.lease is None:
            return
        if not self._guard.available():  # failed a moment ago: do not wait for it again
            self._guard.unsettled()
            return
        try:
            if tokens:
                self._windows.hit(_PerMinute(limits.tokens_per_minute), api_key.name, "tokens", cost=tokens)
            if admission.lease is not None:
                self._leases.release(api_key.name, admission.lease)
        except self._errors as exc:
            self._guard.failed(exc)
            self._guard.unsettled()
        except Exception:  # a bug here must not turn a finished response into a failure
            logger.exception("settling the limits of key %s failed", api_key.name)


def _used_tokens(usage: dict | None) -> int:
    if not usage:
        return 0
    return sum(value for value in (usage.get("prompt_tokens"), usage.get("completion_tokens"))
               if isinstance(value, int) and value > 0)
