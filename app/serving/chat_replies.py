"""How a chat choice's generated text becomes what the client gets: tool calls parsed out of it (when tools were
offered), a JSON response_format checked, plain text otherwise. Whole replies and streams share the parsers of
app.serving.tools, so both give the same content and calls.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.serving import payloads
from app.serving.tools import structured
from app.serving.tools.calls import CallIds
from app.serving.tools.formats import ToolFormat
from app.serving.tools.parse import finish_reason, parse_reply
from app.serving.tools.stream import Step, ToolCallStream


@dataclass(frozen=True)
class ReplyRules:
    """What a request asks of its replies. tool_format: set only when tools are offered (tool_choice is not
    "none"), so calls are parsed; response_format: None for text replies."""

    tool_format: ToolFormat | None
    tool_names: tuple[str, ...]
    parallel_tool_calls: bool
    response_format: dict | None

    @classmethod
    def of(cls, params: dict, tool_format: ToolFormat | None) -> ReplyRules:
        offered = bool(params["tools"]) and params["tool_choice"] != "none"
        return cls(tool_format if offered else None,
                   tuple(tool["function"]["name"] for tool in params["tools"] or ()),
                   params["parallel_tool_calls"], params["response_format"])

    @property
    def shapes(self) -> bool:
        """Whether the text is changed at all on its way to the client."""
        return self.tool_format is not None or self.response_format is not None


@dataclass(frozen=True)
class Reply:
    """One choice of a whole completion: its message, finish_reason, and what breaks response_format (None when
    the reply complies or nothing was asked)."""

    message: dict
    finish_reason: str
    problem: str | None = None


def whole_reply(rules: ReplyRules, text: str, worker_finish: str, ids: CallIds) -> Reply:
    """ids: shared by the choices of one response, so call ids are unique across it."""
    if rules.tool_format is not None:
        parsed = parse_reply(rules.tool_format, text, rules.tool_names, worker_finish, rules.parallel_tool_calls,
                             ids)
        if parsed.tool_calls:  # the calls are the answer: not checked against response_format
            return Reply(parsed.message(), parsed.finish_reason)
        text = parsed.content
    if rules.response_format is not None:
        checked = structured.check(text, rules.response_format, worker_finish)
        return Reply(payloads.chat_message(checked.content), worker_finish, checked.problem)
    return Reply(payloads.chat_message(text), worker_finish)


class StreamedReply:
    """One streamed choice: text deltas in, chunk deltas out; a non-compliant JSON reply raises at its end (the
    stream's error event, app.streaming)."""

    def __init__(self, rules: ReplyRules, ids: CallIds):
        self._parser = (ToolCallStream(rules.tool_format, rules.tool_names, rules.parallel_tool_calls, ids)
                        if rules.tool_format is not None else None)
        self._checked = structured.CheckedStream(rules.response_format) if rules.response_format else None

    def delta(self, text: str, worker_finish: str | None) -> tuple[dict, str | None]:
        """The chunk's delta and finish_reason for new text (worker_finish set on the choice's last delta)."""
        step = Step(text)
        called = False
        if self._parser is not None:
            step = self._parser.feed(text)
            if worker_finish is not None:
                last = self._parser.finish()
                step = Step(step.content + last.content, step.calls + last.calls)
            called = bool(self._parser.calls)
        if self._checked is not None:
            step = Step(self._checked.feed(step.content), step.calls)
            if worker_finish is not None and not called:
                self._checked.finish(worker_finish)
        return step.delta(), None if worker_finish is None else finish_reason(worker_finish, called)
