"""Each request of a key with limits: admitted or refused with OpenAI's 429, and settled when it ends.

- requests per minute: the request is counted when it arrives (a refused one is given back);
- tokens per minute: what the request really used (prompt + completion, a cut stream what it got) is counted when
  it ends (RequestRecord.on_finish); a request is let in while the key has tokens left in the window, so one may
  overshoot and the excess stays counted until the window ends;
- parallel requests: a slot from arrival to the end (a stream's last byte, or its client gone).

Windows are `limits`' fixed windows: one minute from a key's first use in it. The store (embedded.py or
redis_store.py) does what one request needs in one round trip when it arrives and one when it ends.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from app.errors import rate_limit_exceeded
from app.keys.model import ApiKey
from app.limits import headers
from app.limits.counts import WINDOW_SECONDS

logger = logging.getLogger(__name__)

# A slot outlives a request that never ended (its process died on another host) by at most this long; the
# processes of the gateway's own host are checked as soon as a key is full.
LEASE_SECONDS = 15 * 60
PARALLEL_RETRY_SECONDS = 1.0  # when a parallel slot frees is unknown: the SDK waits this long and tries again


@dataclass
class Admission:
    """What a request of a limited key was let in with: the headers of its response, and its parallel slot."""

    headers: dict[str, str] = field(default_factory=dict)
    lease: str | None = None


class KeyLimiter:
    def __init__(self, store, guard):
        """store: EmbeddedStorage or RedisStore (admit, refund, settle, and `errors`, what it raises when it
        fails); guard: what a failure turns into (StoreGuard)."""
        self._store = store
        self._guard = guard

    def admit(self, api_key: ApiKey, rejected) -> Admission:
        """Let a request of `api_key` (which has limits) in, or raise the 429 (after `rejected(reason)`), or the
        store failure's 503 (RATE_LIMIT_STORE_FAILURE=closed). Open to a failing store: in, with no headers."""
        if not self._guard.available():
            self._guard.decide()
            return Admission()
        try:
            admission = self._admit(api_key, rejected)
        except self._store.errors as exc:
            self._guard.failed(exc)
            self._guard.decide()
            return Admission()
        self._guard.succeeded()
        return admission

    def _admit(self, api_key: ApiKey, rejected) -> Admission:
        limits, name = api_key.limits, api_key.name
        rpm, tpm, parallel = limits.requests_per_minute, limits.tokens_per_minute, limits.max_parallel_requests
        lease = uuid.uuid4().hex if parallel else None
        counts = self._store.admit(name, bool(rpm), bool(tpm), parallel, lease, LEASE_SECONDS)
        admission = Admission(lease=lease if parallel and counts.slot_taken else None)
        if tpm:
            admission.headers.update(headers.window("tokens", tpm, tpm - counts.tokens_used, counts.tokens_reset))
        if rpm:
            admission.headers.update(headers.window("requests", rpm, rpm - counts.requests, counts.requests_reset))
        if tpm and counts.tokens_used >= tpm:
            reason, limit_type, wait = "tokens", "tokens", counts.tokens_reset
            message = f"Rate limit reached for key {name} on tokens per min (TPM): Limit {tpm}, Used " \
                      f"{counts.tokens_used}."
        elif rpm and counts.requests > rpm:
            reason, limit_type, wait = "rate", "requests", counts.requests_reset
            message = f"Rate limit reached for key {name} on requests per min (RPM): Limit {rpm}, Used {rpm}, " \
                      f"Requested 1."
        elif parallel and not counts.slot_taken:
            reason, limit_type, wait = "parallel", "requests", PARALLEL_RETRY_SECONDS
            message = f"Too many parallel requests for key {name}: Limit {parallel}, In progress " \
                      f"{counts.in_use}, Requested 1."
        else:
            return admission
        # Refused: what it took is given back (its count, its slot), and the headers say so.
        self._store.refund(name, bool(rpm), admission.lease)
        if rpm:
            admission.headers["x-ratelimit-remaining-requests"] = str(max(0, rpm - counts.requests + 1))
        rejected(reason)
        wait = wait or WINDOW_SECONDS  # a window that ended as we looked: at worst a whole one
        raise rate_limit_exceeded(limit_type, f"{message} Please try again in {headers.duration(wait)}.",
                                  {**admission.headers, **headers.retry_after(wait)})

    def settle(self, api_key: ApiKey, admission: Admission, usage: dict | None, turned_away: bool = False) -> None:
        """When the request is over: count the tokens it used and free its parallel slot. turned_away: the gateway
        refused it after it was counted here (back-pressure's 503), so its request is given back too: the key is
        not charged for the cluster being full. Never raises (it runs after the response); a store failure is
        counted and logged like any other."""
        tokens = _used_tokens(usage) if api_key.limits.tokens_per_minute else 0
        give_back = turned_away and bool(api_key.limits.requests_per_minute)
        if not tokens and admission.lease is None and not give_back:
            return
        if not self._guard.available():  # failed a moment ago: do not wait for it again
            self._guard.unsettled()
            return
        try:
            if give_back:
                self._store.refund(api_key.name, True, None)
            self._store.settle(api_key.name, tokens, admission.lease)
        except self._store.errors as exc:
            self._guard.failed(exc)
            self._guard.unsettled()
        except Exception:  # a bug here must not turn a finished response into a failure
            logger.exception("settling the limits of key %s failed", api_key.name)


def _used_tokens(usage: dict | None) -> int:
    if not usage:
        return 0
    return sum(value for value in (usage.get("prompt_tokens"), usage.get("completion_tokens"))
               if isinstance(value, int) and value > 0)
