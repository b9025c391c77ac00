"""Tool calling and JSON mode as the official openai SDK sees them, in-process (WSGI transport), the worker faked
with `responses`: its typed objects, its stream helper's accumulated message, its errors."""
import json

import openai
import pytest

from tests.fakes import MODEL, text_frames
from tests.test_api_tools import ASK, HERMES_TWO, MISTRAL_TWO, SCHEMA, TOOLS, cumulative, ready
from tests.test_openai_sdk import config, sdk  # noqa: F401 (fixtures)
from tests.test_prompt import MISTRAL, QWEN, VICUNA

STRICT_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "strict": True, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}}


def test_whole_tool_calls(sdk, cluster):
    ready(cluster, QWEN)
    cluster.generates("Checking.\n" + HERMES_TWO)
    choice = sdk.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert len({c.id for c in choice.message.tool_calls}) == 2


@pytest.mark.parametrize("conv, text", [(QWEN, "Checking.\n" + HERMES_TWO), (MISTRAL, MISTRAL_TWO)],
                         ids=["hermes", "mistral"])
def test_the_stream_helper_accumulates_the_calls(sdk, cluster, conv, text):
    ready(cluster, conv)
    cluster.streams(text_frames(cumulative(text)))
    tools = [STRICT_WEATHER, TOOLS[1]]
    with sdk.chat.completions.stream(model=MODEL, messages=ASK, tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    # Without text before the calls the content stays the first chunk's "" (OpenAI's first delta has null).
    assert choice.message.content == ("Checking." if conv is QWEN else "")
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    # The helper parses a strict tool's arguments from the accumulated string.
    assert calls[0].function.parsed_arguments == {"city": "Paris"}
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [e.name for e in done] == ["get_weather", "get_time"]


def test_a_full_round_trip(sdk, cluster):
    ready(cluster, QWEN)
    cluster.generates(HERMES_TWO.split("\n<tool_call>\n{\"name\": \"get_time\"")[0])
    first = sdk.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS).choices[0].message
    call = first.tool_calls[0]
    # The model list, worker, template and context are cached by now.
    cluster.generates("It is 18C in Paris.")
    messages = [*ASK, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
    answer = sdk.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS).choices[0]
    assert answer.message.content == "It is 18C in Paris." and answer.finish_reason == "stop"
    prompt = cluster.sent("/worker_generate")[-1]["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18C\n</tool_response>" in prompt


def test_json_mode_and_its_error(sdk, cluster):
    ready(cluster, VICUNA)
    cluster.generates('```json\n{"city": "Paris"}\n```')
    completion = sdk.chat.completions.create(model=MODEL, messages=ASK, response_format=SCHEMA)
    assert json.loads(completion.choices[0].message.content) == {"city": "Paris"}
    cluster.generates("no")
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"})
    assert caught.value.status_code == 502 and caught.value.code == "response_format_not_followed"


def test_a_non_compliant_stream_raises_in_the_sdk(sdk, cluster):
    ready(cluster, VICUNA)
    cluster.streams(text_frames(cumulative('{"town": "Paris"}')))
    stream = sdk.chat.completions.create(model=MODEL, messages=ASK, response_format=SCHEMA, stream=True)
    with pytest.raises(openai.APIError, match="response_format"):
        list(stream)


def test_bad_tools_are_a_bad_request(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=ASK, tools=[
            {"type": "function", "function": {"name": "bad name"}}])
    assert caught.value.param == "tools[0].function.name"
