"""What the gateway knows about one API key: its name, the digest of its secret and its policy."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase


def key_digest(secret: str) -> bytes:
    """SHA-256 of a key as sent in `Authorization: Bearer <key>`; what is kept and compared, never the key."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class KeyLimits:
    """A key's rate and parallel limits (app.limits enforces them); None: no such limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # prompt + completion tokens, counted when a request ends
    max_parallel_requests: int | None = None


@dataclass(frozen=True)
class ApiKey:
    """One accepted key. `name` is what logs and metrics show; the secret itself is never kept."""

    name: str
    digest: bytes = field(repr=False)
    models: tuple[str, ...] | None = None  # names or fnmatch patterns (`qwen2.5-*`); None: every model
    expires: datetime | None = None  # timezone-aware
    limits: KeyLimits | None = None  # None: no limit at all (no x-ratelimit headers either)

    def may_use(self, model: str) -> bool:
        return self.models is None or any(fnmatchcase(model, allowed) for allowed in self.models)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


class KeyRing:
    """The keys accepted at one moment. `enabled` says whether keys are required at all: it follows from the
    configuration (API_KEYS or API_KEYS_FILE set), never from the file's content, so a file emptied by mistake
    refuses every request rather than turning authentication off."""

    __slots__ = ("keys", "digests", "enabled")

    def __init__(self, keys: tuple[ApiKey, ...], enabled: bool):
        self.keys = keys
        self.digests = tuple(api_key.digest for api_key in keys)
        self.enabled = enabled

    def __len__(self) -> int:
        return len(self.keys)
