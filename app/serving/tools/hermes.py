"""The Hermes format (Hermes 2 Pro / 3, Qwen 2.5 and the ChatML family): <tools> in the system message,
<tool_call> blocks in replies, <tool_response> blocks in the user turn that answers them.

The framing text is that of vLLM's examples/tool_chat_template_hermes.jinja (tests/tools_oracle); each tool
signature is the tool itself as JSON, where that template writes a Python-style docstring into an unclosed object.
"""
from __future__ import annotations

import json

from app.serving.tools.calls import arguments_object
from app.serving.tools.formats import SYSTEM, Marker, ToolFormat

START, END = "<tool_call>", "</tool_call>"

INTRO = ("You are a function calling AI model. You are provided with function signatures within <tools></tools> "
         "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
         "about what values to plug into functions. Here are the available tools: <tools> ")
# Kept as the template has it, including the extra closing brace the models were prompted with.
OUTRO = (" </tools>Use the following pydantic model json schema for each tool call you will make: "
         '{"properties": {"name": {"title": "Name", "type": "string"}, "arguments": {"title": "Arguments", '
         '"type": "object"}}, "required": ["name", "arguments"], "title": "FunctionCall", "type": "object"}}\n'
         "For each function call return a json object with function name and arguments within "
         "<tool_call></tool_call> XML tags as follows:\n"
         "<tool_call>\n"
         '{"name": <function-name>, "arguments": <args-dict>}\n'
         "</tool_call>")


class Hermes(ToolFormat):
    name = "hermes"
    placement = SYSTEM
    markers = (Marker(START, END),)

    def tool_block(self, tools: list[dict]) -> str:
        return INTRO + "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools) + OUTRO

    def call_echo(self, content: str | None, tool_calls: list[dict]) -> str:
        blocks = [START + "\n" + json.dumps({"name": call["function"]["name"],
                                             "arguments": arguments_object(call["function"]["arguments"])},
                                            ensure_ascii=False) + "\n" + END
                  for call in tool_calls]
        return "\n".join(([content] if content else []) + blocks)

    def result_turn(self, results: list[dict]) -> str:
        return "\n".join(f"<tool_response>\n{result['content']}\n</tool_response>" for result in results)

    def decode_block(self, marker: Marker, body: str) -> object:
        try:
            return json.loads(body)
        except ValueError:
            return None


FORMAT = Hermes()
