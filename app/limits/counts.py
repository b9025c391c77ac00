"""What a store answers when a request of a limited key arrives: one round trip (Redis) or one transaction (the
embedded file) that counts the request, reads the key's tokens and takes a parallel slot at once. Each store also
gives back what a refused request took (refund) and records what a finished one used (settle)."""
from __future__ import annotations

from dataclasses import dataclass

WINDOW_SECONDS = 60  # every limit is per minute: a fixed window from a key's first use in it


@dataclass
class Counts:
    tokens_used: int = 0  # in the key's current tokens window, before this request
    tokens_reset: float = 0.0  # seconds until that window ends (0: none open)
    requests: int = 0  # in the current requests window, this one included
    requests_reset: float = 0.0
    slot_taken: bool = True
    in_use: int = 0  # parallel requests of the key, this one included when its slot was taken


def requests_key(name: str) -> str:
    return f"{name}/requests"


def tokens_key(name: str) -> str:
    return f"{name}/tokens"


def parallel_key(name: str) -> str:
    return f"{name}/parallel"
