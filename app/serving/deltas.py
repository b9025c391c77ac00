"""FastChat workers stream cumulative text; clients want only what is new."""
from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"


class DeltaTracker:
    """Turns one choice's cumulative texts into deltas, the way FastChat's server does.

    U+FFFD is dropped first: it stands for a half-decoded multi-byte character that the next frame completes.
    The slice is by length, so a worker that shrinks or rewrites its text emits nothing rather than garbage.
    """

    def __init__(self) -> None:
        self._sent = 0

    def delta(self, text: str) -> str:
        if REPLACEMENT_CHARACTER in text:
            text = text.replace(REPLACEMENT_CHARACTER, "")
        if len(text) <= self._sent:
            return ""
        new = text[self._sent:]
        self._sent = len(text)
        return new
