"""What a tool format is: how it writes tools, calls and results into messages, and how its calls are marked.

A format never renders role markers itself: its pieces become message texts, and the worker's FastChat template
frames them like any other message (app.serving.prompt), so every template gets its own role markers.
"""
from __future__ import annotations

from dataclasses import dataclass

# Where the tool block goes: appended to the system message, or put before the first or the last user message.
SYSTEM, FIRST_USER, LAST_USER = "system", "first_user", "last_user"


@dataclass(frozen=True)
class Marker:
    """A call starts at `start`. It ends at `end`, or, with end None, after the one JSON value that follows."""

    start: str
    end: str | None = None


class ToolFormat:
    """Base of the formats; a subclass sets the class attributes and overrides the pieces it writes."""

    name: str = ""
    placement: str = SYSTEM
    markers: tuple[Marker, ...] = ()
    whole_reply = False  # True when calls may also fill a whole reply without a marker (opens_whole_reply)

    def tool_block(self, tools: list[dict]) -> str:
        """The text offering `tools` (validated OpenAI tool objects) to the model."""
        raise NotImplementedError

    def system_message(self, system: str) -> str:
        """The system message when tools are offered (formats with a fixed preamble override this)."""
        return system

    def call_echo(self, content: str | None, tool_calls: list[dict]) -> str:
        """An earlier assistant message with tool_calls, as the text the model would have written."""
        raise NotImplementedError

    def result_turn(self, results: list[dict]) -> str:
        """Consecutive role "tool" messages ({content, tool_call_id, name}) as one user turn's text."""
        raise NotImplementedError

    def decode_block(self, marker: Marker, body: str) -> object:
        """The JSON value between a marker's start and end (None: not JSON, so the block stays content)."""
        raise NotImplementedError

    def opens_whole_reply(self, head: str) -> bool | None:
        """For formats whose calls may fill the whole reply without a marker: does a reply starting with `head`
        (leading whitespace removed) hold calls? None means the head is too short to tell."""
        return False

    def decode_whole_reply(self, text: str) -> object:
        """The calls of a whole reply that opens_whole_reply accepted (None: not calls)."""
        return None
