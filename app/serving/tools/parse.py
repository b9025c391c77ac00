"""A whole reply: its text split into content and tool calls, with the finish_reason OpenAI gives it."""
from __future__ import annotations

from dataclasses import dataclass

from app.serving import payloads
from app.serving.tools.calls import CallIds, ToolCall
from app.serving.tools.formats import ToolFormat
from app.serving.tools.stream import ToolCallStream


@dataclass(frozen=True)
class ParsedReply:
    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str

    def message(self) -> dict:
        """The choice's message: content null when the reply was only calls; no tool_calls key without calls."""
        return payloads.chat_message(self.content, [payloads.message_tool_call(call.id, call.name, call.arguments)
                                                    for call in self.tool_calls])


def parse_reply(fmt: ToolFormat, text: str, tool_names, worker_finish: str = "stop", parallel: bool = True,
                ids: CallIds | None = None) -> ParsedReply:
    """Calls are taken only from the format's markers (or a whole reply of calls to offered tools); anything that
    does not decode stays content. Without calls the content is the text, unchanged."""
    parser = ToolCallStream(fmt, tool_names, parallel, ids)
    steps = [parser.feed(text), parser.finish()]
    content = "".join(step.content for step in steps)
    calls = parser.calls
    return ParsedReply(None if calls and not content else content, calls, finish_reason(worker_finish, bool(calls)))


def finish_reason(worker_finish: str, called: bool) -> str:
    """"tool_calls" when calls were made, unless the worker stopped at the length limit (as vLLM reports it)."""
    return "tool_calls" if called and worker_finish != "length" else worker_finish
