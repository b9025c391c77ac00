"""Mistral v0.3 / Nemo tool calling: [AVAILABLE_TOOLS] before the last user message, replies
"[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]", results as [TOOL_RESULTS] turns.

Texts from vLLM's examples/tool_chat_template_mistral.jinja (tests/tools_oracle). Mistral's template wants
9-character alphanumeric call ids; like vLLM we send the last 9 characters of the client's id.
"""
from __future__ import annotations

import json
import re

from app.serving.tools.calls import arguments_object
from app.serving.tools.formats import LAST_USER, Marker, ToolFormat

TOOL_CALLS = "[TOOL_CALLS]"
_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def short_id(id: str) -> str:
    """The 9-character id Mistral models were trained with (left-padded with 0 if the client's is shorter)."""
    return _NOT_ALNUM.sub("", id)[-9:].rjust(9, "0")


class Mistral(ToolFormat):
    name = "mistral"
    whole_reply = True
    placement = LAST_USER
    markers = (Marker(TOOL_CALLS),)

    def tool_block(self, tools: list[dict]) -> str:
        # Only what the model reads: strict is a request flag, not part of the signature.
        functions = [{key: tool["function"][key] for key in ("name", "description", "parameters")
                      if key in tool["function"]} for tool in tools]
        listed = ", ".join(json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions)
        return f"[AVAILABLE_TOOLS] [{listed}][/AVAILABLE_TOOLS]"

    def call_echo(self, content: str | None, tool_calls: list[dict]) -> str:
        listed = ", ".join(json.dumps({"name": call["function"]["name"],
                                       "arguments": arguments_object(call["function"]["arguments"]),
                                       "id": short_id(call["id"])}, ensure_ascii=False) for call in tool_calls)
        return (content or "") + f"{TOOL_CALLS} [{listed}]"

    def result_turn(self, results: list[dict]) -> str:
        return "".join(f'[TOOL_RESULTS] {{"content": {_json_or_string(result["content"])}, '
                       f'"call_id": "{short_id(result["tool_call_id"])}"}}[/TOOL_RESULTS]' for result in results)

    def decode_block(self, marker: Marker, body: str) -> object:
        try:
            return json.loads(body)
        except ValueError:
            return None

    def opens_whole_reply(self, head: str) -> bool | None:
        # Workers that skip special tokens drop [TOOL_CALLS]: the reply then starts with the bare list.
        if not head.startswith("["):
            return False
        rest = head[1:].lstrip()
        return None if not rest else rest.startswith("{")

    def decode_whole_reply(self, text: str) -> object:
        try:
            return json.loads(text)
        except ValueError:
            return None


def _json_or_string(content: str) -> str:
    """A result that is JSON goes in as it is (as vLLM's template does); other text is quoted, so the turn stays
    JSON (the template would paste it raw)."""
    try:
        json.loads(content)
    except ValueError:
        return json.dumps(content, ensure_ascii=False)
    return content


FORMAT = Mistral()
