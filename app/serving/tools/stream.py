"""The incremental tool-call parser: text deltas in, content to stream and complete calls out.

Content streams as it comes, holding back only what could be the start of a marker (and whitespace, which is
dropped next to a call). A call is released only when it is complete (end marker seen, or its JSON value
closed), as one delta with the whole arguments string. A block that turns out not to be a call is released as
content, exactly as the model wrote it. Whole replies go through the same parser (app.serving.tools.parse), so
a streamed and a whole reply always give the same content and calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.serving import payloads
from app.serving.tools.calls import CallIds, ToolCall, decode_calls
from app.serving.tools.formats import Marker, ToolFormat
from app.serving.tools.jsonspan import JsonSpan

_START, _TEXT, _BLOCK, _VALUE, _WHOLE = "start", "text", "block", "value", "whole"


@dataclass
class Step:
    """What one delta (or the end) releases: content text, and the calls completed, with their index."""

    content: str = ""
    calls: list[tuple[int, ToolCall]] = field(default_factory=list)

    def delta(self) -> dict:
        """The chunk delta for this step ({} when it releases nothing)."""
        delta = {"content": self.content} if self.content else {}
        if self.calls:
            delta["tool_calls"] = [payloads.delta_tool_call(index, call.id, call.name, call.arguments)
                                   for index, call in self.calls]
        return delta


class ToolCallStream:
    """One choice's parser. tool_names: the offered functions (a call without an explicit marker must name one);
    parallel False keeps only the first call; ids is shared by the choices of one response."""

    def __init__(self, fmt: ToolFormat, tool_names, parallel: bool = True, ids: CallIds | None = None):
        self._fmt = fmt
        self._known = frozenset(tool_names)
        self._parallel = parallel
        self._ids = ids or CallIds()
        self._state = _START if fmt.whole_reply else _TEXT
        self._buffer = ""
        self._pending_ws = ""   # whitespace after content, released only if more content follows
        self._held_ws = ""      # whitespace before a block, released only if the block is not a call
        self._after_call = False
        self._marker: Marker | None = None
        self._span: JsonSpan | None = None
        self._step = Step()
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> Step:
        self._buffer += text
        self._run()
        return self._release()

    def finish(self) -> Step:
        """The end of the reply: whatever was held back is decided now."""
        self._run()
        buffer, self._buffer = self._buffer, ""
        if self._state == _WHOLE:
            calls = self._decoded(self._fmt.decode_whole_reply(buffer), self._known)
            if calls:
                self._calls(calls)
            else:
                self._content(buffer)
        elif self._state in (_BLOCK, _VALUE):  # an unclosed block is still a call if its JSON is complete
            self._block(buffer, self._marker.start + buffer)
        else:
            self._content(buffer)
        if not self.calls:
            self._step.content += self._pending_ws
        self._pending_ws = ""
        return self._release()

    def _release(self) -> Step:
        step, self._step = self._step, Step()
        return step

    def _run(self) -> None:
        while True:
            if self._state == _START and not self._decide_whole_reply():
                return
            if self._state == _WHOLE:
                return
            if self._state == _TEXT and not self._scan_text():
                return
            if self._state == _BLOCK and not self._scan_block():
                return
            if self._state == _VALUE and not self._scan_value():
                return

    def _decide_whole_reply(self) -> bool:
        head = self._buffer.lstrip()
        verdict = self._fmt.opens_whole_reply(head) if head else None
        if verdict is None:
            return False
        self._state = _WHOLE if verdict else _TEXT
        return True

    def _scan_text(self) -> bool:
        found = [(self._buffer.find(m.start), m) for m in self._fmt.markers]
        found = [(at, m) for at, m in found if at >= 0]
        if not found:
            keep = max((_prefix_overlap(self._buffer, m.start) for m in self._fmt.markers), default=0)
            self._content(self._buffer[:len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return False
        at, self._marker = min(found, key=lambda item: item[0])
        self._content(self._buffer[:at])
        self._held_ws, self._pending_ws = self._pending_ws, ""
        self._buffer = self._buffer[at + len(self._marker.start):]
        self._state = _BLOCK if self._marker.end else _VALUE
        self._span = None if self._marker.end else JsonSpan()
        return True

    def _scan_block(self) -> bool:
        at = self._buffer.find(self._marker.end)
        if at < 0:
            return False
        body = self._buffer[:at]
        self._buffer = self._buffer[at + len(self._marker.end):]
        self._block(body, self._marker.start + body + self._marker.end)
        return True

    def _scan_value(self) -> bool:
        self._span.feed(self._buffer[self._span.fed:])
        if self._span.invalid:  # no JSON value after the marker: the marker is just text
            self._content(self._held_ws + self._marker.start)
            self._state = _TEXT
            return True
        if self._span.end is None:
            return False
        body, self._buffer = self._buffer[:self._span.end], self._buffer[self._span.end:]
        self._block(body, self._marker.start + body)
        return True

    def _block(self, body: str, raw: str) -> None:
        calls = self._decoded(self._fmt.decode_block(self._marker, body))
        if calls:
            self._calls(calls)
        else:
            self._content(self._held_ws + raw)
        self._held_ws = ""
        self._state = _TEXT

    @staticmethod
    def _decoded(value, known: frozenset[str] | None = None):
        return None if value is None else decode_calls(value, known)

    def _calls(self, calls: list[tuple[str, str]]) -> None:
        for name, arguments in calls:
            if self.calls and not self._parallel:
                break
            call = ToolCall(self._ids.new(), name, arguments)
            self._step.calls.append((len(self.calls), call))
            self.calls.append(call)
        self._after_call, self._pending_ws = True, ""

    def _content(self, text: str) -> None:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
            self._after_call = False
        body = text.rstrip()
        if body:
            self._step.content += self._pending_ws + body
            self._pending_ws = text[len(body):]
        else:
            self._pending_ws += text


def _prefix_overlap(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a beginning of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
