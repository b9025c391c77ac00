"""FastChat workers stream cumulative text; clients want only what is new, choice by choice."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from app.serving.interleave import interleave

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


def finish_reason(value) -> str:
    """OpenAI's finish_reason for a worker's: vLLM workers may send a list or "abort"; absent means stop."""
    if isinstance(value, list):
        value = value[0] if value else None
    return "length" if value == "length" else "stop"


@dataclass(frozen=True)
class ChoiceDelta:
    """New text of one choice; `frame` is the worker frame it came from (usage, logprobs)."""

    index: int
    text: str
    frame: dict
    finish_reason: str | None


def choice_deltas(streams: list[Iterable[dict]]) -> Iterator[ChoiceDelta]:
    """Read the choices' streams side by side and yield each new piece of text and each finish, once.

    A choice whose stream ends cleanly without a finish_reason is finished with "stop".
    """
    trackers = [DeltaTracker() for _ in streams]
    finished = [False] * len(streams)
    for index, frame in interleave(streams):
        if finished[index]:
            continue  # vLLM workers repeat their final frame
        text = frame.get("text")
        delta = trackers[index].delta(text if isinstance(text, str) else "")
        finish = None if frame.get("finish_reason") is None else finish_reason(frame["finish_reason"])
        finished[index] = finish is not None
        if delta or finish:
            yield ChoiceDelta(index, delta, frame, finish)
    for index, done in enumerate(finished):
        if not done:
            yield ChoiceDelta(index, "", {}, "stop")
