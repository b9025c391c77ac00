"""Fault injection for /worker_generate, /worker_generate_stream and /worker_get_embeddings. No HTTP here.

Modes: ``none``, ``error`` (in-band error frame, code 50001), ``oom`` (same, code 50002), ``die`` (close the
connection: mid-stream after ``after`` tokens without the terminating chunk, or before any reply), ``hang`` (stop
answering until the client goes away), ``slow-first-token`` (extra ``delay`` seconds before the first frame / the
reply), ``http-500`` (500 ``text/plain`` ``Internal Server Error``), ``garbage`` (a non-JSON segment followed by NUL
after ``after`` tokens, after which the stream goes on normally; a non-JSON 200 body for a non-stream request),
``disobey`` (a normal reply, but filler where the prompt asks for tool calls or a JSON object: a model that does
not follow the instruction, as an unconstrained one may not).

* Default: ``--fault MODE`` (``--fault-after``, ``--fault-delay``).
* At run time: ``POST /sim/fault {"mode": M, "count": N, "after": K, "delay": S}`` (``count`` omitted/null: until
  changed; after ``count`` generation requests the mode returns to ``none``). ``GET /sim/fault`` shows the state.
* Per request: a directive ``[[fault:MODE]]`` or ``[[fault:MODE after=K delay=S]]`` anywhere in the prompt (or in
  any embeddings input). A directive wins over the global mode and does not consume its count; ``[[fault:none]]``
  exempts a request.
"""
from __future__ import annotations

import collections
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

SERVER_ERROR_MSG = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
FAULT_TEXT = SERVER_ERROR_MSG + "\n\n(simulated fault)"
GARBAGE = b"<<simulated garbage: this segment is not JSON>>"
MODES = ("none", "error", "oom", "die", "hang", "slow-first-token", "http-500", "garbage", "disobey")
# Modes that strike after `after` streamed tokens.
MID_STREAM = frozenset({"error", "oom", "die", "hang", "garbage"})

_DIRECTIVE = re.compile(r"\[\[fault:([A-Za-z0-9_-]+)([^\]]*)\]\]")
_DIRECTIVE_OPTION = re.compile(r"(after|delay)\s*=\s*([0-9]+(?:\.[0-9]*)?)")
logger = logging.getLogger("simworker")


@dataclass(frozen=True)
class Fault:
    mode: str
    after: int
    delay: float


def error_frame(fault: Fault) -> dict:
    """FastChat's in-band error reply (the last frame of a stream)."""
    return {"text": FAULT_TEXT, "error_code": 50002 if fault.mode == "oom" else 50001}


class FaultSwitch:
    """The worker-wide fault mode, and the choice of a fault for each generation request."""

    def __init__(self, mode: str = "none", after: int = 2, delay: float = 5.0) -> None:
        self.defaults = {"after": after, "delay": delay}  # what a POST /sim/fault without them sets
        self.mode = mode
        self.count: int | None = None
        self.after = after
        self.delay = delay
        self.injected: collections.Counter = collections.Counter()

    def state(self) -> dict:
        return {"mode": self.mode, "count": self.count, "after": self.after, "delay": self.delay}

    def configure(self, body: object) -> None:
        """Apply a POST /sim/fault body; raises ValueError (and changes nothing) when it is invalid."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        mode = body.get("mode", "none")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        count = body.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer or null")
        after = body.get("after", self.defaults["after"])
        if not isinstance(after, int) or after < 0:
            raise ValueError("after must be a non-negative integer")
        delay = body.get("delay", self.defaults["delay"])
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delay must be a non-negative number")
        self.mode, self.count, self.after, self.delay = mode, None if mode == "none" else count, after, float(delay)

    def pick(self, texts: Iterable[object]) -> Fault | None:
        """The fault for a request whose prompt (or embeddings inputs) are `texts`, or None."""
        for text in texts:
            if not isinstance(text, str) or "[[fault:" not in text:
                continue
            match = _DIRECTIVE.search(text)
            if match is None:
                continue
            mode = match.group(1).lower()
            if mode not in MODES:
                logger.warning("ignoring unknown fault directive %r", match.group(0))
                continue
            if mode == "none":
                return None
            options = dict(_DIRECTIVE_OPTION.findall(match.group(2)))
            self.injected[mode] += 1
            return Fault(mode, int(float(options.get("after", self.after))), float(options.get("delay", self.delay)))
        if self.mode == "none":
            return None
        fault = Fault(self.mode, self.after, self.delay)
        self.injected[fault.mode] += 1
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.mode, self.count = "none", None
        return fault
