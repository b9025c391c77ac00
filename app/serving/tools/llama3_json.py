"""Llama 3.1+ JSON tool calling: tools before the first user message, a reply that is only the call(s)
{"name": ..., "parameters": {...}}, results as {"output": ...} turns.

Texts from vLLM's examples/tool_chat_template_llama3.1_json.jinja (tests/tools_oracle). Llama 3 has no marker
around a call, so a reply holds calls only when it starts with one (or with <|python_tag|>, when the worker keeps
special tokens) and is nothing but calls; then every name must be one of the offered tools, or the JSON is an
answer, not a call.
"""
from __future__ import annotations

import datetime
import json

from app.serving.tools.calls import arguments_object
from app.serving.tools.formats import FIRST_USER, ToolFormat

PYTHON_TAG = "<|python_tag|>"
DEFAULT_SYSTEM = ("You are a helpful assistant with tool calling capabilities. Only reply with a tool call if the "
                  "function exists in the library provided by the user. If it doesn't exist, just reply directly "
                  "in natural language. When you receive a tool call response, use the output to format an "
                  "answer to the original user question.")
INSTRUCTION = ("Given the following functions, please respond with a JSON for a function call with its proper "
               "arguments that best answers the given prompt.\n\n"
               'Respond in the format {"name": function name, "parameters": dictionary of argument name and its '
               'value}. Do not use variables.\n\n')


class Llama3Json(ToolFormat):
    name = "llama3_json"
    whole_reply = True
    placement = FIRST_USER

    def __init__(self, today=None):
        self._today = today or (lambda: datetime.datetime.now(datetime.timezone.utc).date())

    def tool_block(self, tools: list[dict]) -> str:
        return INSTRUCTION + "".join(json.dumps(tool, indent=4, ensure_ascii=False) + "\n\n" for tool in tools)

    def system_message(self, system: str) -> str:
        header = f"Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: " \
                 f"{self._today().strftime('%d %b %Y')}\n\n"
        return header + (system.strip() or DEFAULT_SYSTEM)

    def call_echo(self, content: str | None, tool_calls: list[dict]) -> str:
        # The reply was only calls (content is dropped, as vLLM does); several are joined as its parser reads them.
        return "; ".join(json.dumps({"name": call["function"]["name"],
                                     "parameters": arguments_object(call["function"]["arguments"])},
                                    ensure_ascii=False) for call in tool_calls)

    def result_turn(self, results: list[dict]) -> str:
        return "\n".join(json.dumps({"output": result["content"]}, ensure_ascii=False) for result in results)

    def opens_whole_reply(self, head: str) -> bool | None:
        if head.startswith("{") or head.startswith(PYTHON_TAG):
            return True
        return None if PYTHON_TAG.startswith(head) else False

    def decode_whole_reply(self, text: str) -> object:
        """The JSON objects of the reply, separated by ";" (or only whitespace); None if anything else is there."""
        text = text.strip()
        text = text[len(PYTHON_TAG):] if text.startswith(PYTHON_TAG) else text
        decoder, values, at = json.JSONDecoder(), [], 0
        while True:
            while at < len(text) and (text[at].isspace() or (values and text[at] == ";")):
                at += 1
            if at == len(text):
                return values or None
            try:
                value, at = decoder.raw_decode(text, at)
            except ValueError:
                return None
            values.append(value)


FORMAT = Llama3Json()
