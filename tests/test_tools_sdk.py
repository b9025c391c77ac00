"""The streamed tool-call deltas and the whole message, as the official openai SDK reads them: its stream
helper (client.chat.completions.stream) accumulates our chunks into the same message the whole reply gives."""
import json

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.serving.tools import hermes, mistral
from app.serving.tools.parse import finish_reason, parse_reply
from app.serving.tools.stream import ToolCallStream

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}, "strict": True}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
NAMES = ["get_weather", "get_time"]
REPLY = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')


def chunk(delta: dict, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})


def sdk_stream(fmt, deltas: list[str]):
    state = ChatCompletionStreamState(input_tools=TOOLS)
    state.handle_chunk(chunk({"role": "assistant", "content": ""}))
    parser = ToolCallStream(fmt, NAMES)
    for delta in deltas:
        step = parser.feed(delta)
        if step.delta():
            state.handle_chunk(chunk(step.delta()))
    last = parser.finish()
    state.handle_chunk(chunk(last.delta(), finish_reason("stop", bool(parser.calls))))
    return state.get_final_completion().choices[0]


def test_the_sdk_stream_helper_accumulates_our_deltas_into_the_calls():
    for fmt, reply in ((hermes.FORMAT, REPLY), (mistral.FORMAT, 'Let me look. [TOOL_CALLS] [{"name": '
                       '"get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]')):
        choice = sdk_stream(fmt, [reply[i:i + 3] for i in range(0, len(reply), 3)])
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me look."
        calls = choice.message.tool_calls
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
            ("get_weather", {"city": "Paris"}), ("get_time", {})]
        assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
        # The helper parses the arguments of strict tools (parsed_arguments) from the accumulated string.
        assert calls[0].function.parsed_arguments == {"city": "Paris"}


def test_the_whole_message_is_a_valid_sdk_completion():
    reply = parse_reply(hermes.FORMAT, REPLY, NAMES)
    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": reply.message(), "logprobs": None,
                     "finish_reason": reply.finish_reason}]})
    message = completion.choices[0].message
    assert message.content == "Let me look." and len(message.tool_calls) == 2
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
