"""The stateless Responses API end to end: the official openai SDK's `client.responses` -> the gateway under real
gunicorn -> simulated workers, a ChatML (Hermes) one that answers tool offers with calls and tool results with an
answer (bench/simworker/scripted.py), and a vicuna one without a tool format. No controller (WORKER_ADDRESSES)."""
from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest
import requests

from harness.gateway import Gateway
from harness.simworkers import simulated_workers
from tests.published_spec import needs_spec
from tests.test_responses_api import assert_published, assert_stream_published, named_events, published  # noqa: F401

KEY = "sk-responses"
TOOLS_MODEL, PLAIN_MODEL = "sim-hermes", "sim-vicuna"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER,
          "strict": True},
         {"type": "function", "name": "get_time", "description": "The local time.",
          "parameters": {"type": "object", "properties": {}}, "strict": False}]
QUESTION = "What is the weather and the time in Paris?"
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"},
                                                  "tags": {"type": "array", "items": {"type": "string"}}},
                 "required": ["city", "temperature", "tags"], "additionalProperties": False}
RESULTS = {"get_weather": '{"temperature": 21, "sky": "clear"}', "get_time": "14:05"}
ANSWER = 'The tools answered: {"temperature": 21, "sky": "clear"} | 14:05.'


@pytest.fixture(scope="module")
def workers(run_dir):
    # A token delay makes the worker write each frame on its own, so the gateway sees the markers split.
    with simulated_workers(run_dir, {TOOLS_MODEL: "qwen-7b-chat", PLAIN_MODEL: "vicuna_v1.1"}, "--token-delay", "0.002", name="responses") as started:
        yield started


@pytest.fixture(scope="module")
def gateway(run_dir, workers):
    gateway = Gateway(run_dir, name="gateway-responses", API_KEYS=KEY,
                      WORKER_ADDRESSES=",".join(worker.address for worker in workers.values()))
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
        yield client


def raw_stream(gateway, **body) -> list[dict]:
    reply = requests.post(f"{gateway.url}/v1/responses", headers={"Authorization": f"Bearer {KEY}"},
                          json={**body, "stream": True}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    return named_events(reply.content)


# --- text ----------------------------------------------------------------------------------------------------------

def test_create_text(client):
    response = client.responses.create(model=PLAIN_MODEL, input="Tell me a story.", instructions="Be brief.",
                                       max_output_tokens=8, metadata={"run": "e2e"})
    assert response.output_text and response.status in ("completed", "incomplete")
    assert response.instructions == "Be brief." and response.metadata == {"run": "e2e"}
    assert response.store is False and response.id.startswith("resp_")
    assert response.usage.output_tokens == len(response.output_text.split())  # the simulated model's tokens


def test_max_output_tokens_reached_is_incomplete(client):
    response = client.responses.create(model=PLAIN_MODEL, input="Tell me a long story.", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 2


def test_stream_accumulates_into_the_final_response(client):
    request = {"model": PLAIN_MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
               "temperature": 0}  # no max_output_tokens: the SDK's helper wants response.completed, not incomplete
    with client.responses.stream(**request) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text
    # The same request, whole: the same text (the simulated model is a function of the prompt).
    assert client.responses.create(**request).output_text == final.output_text


def test_the_raw_stream_is_the_responses_event_sequence(gateway):
    events = raw_stream(gateway, model=PLAIN_MODEL, input="Hi", max_output_tokens=20)
    types = [event["type"] for event in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


# --- JSON mode -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [TOOLS_MODEL, PLAIN_MODEL])
def test_json_object_mode(client, model):
    response = client.responses.create(model=model, input=QUESTION, text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(response.output_text), dict)


def test_json_schema_mode_whole_and_streamed(client):
    fmt = {"type": "json_schema", "name": "weather", "schema": ANSWER_SCHEMA, "strict": True}
    whole = client.responses.create(model=PLAIN_MODEL, input=QUESTION, text={"format": fmt})
    jsonschema.validate(json.loads(whole.output_text), ANSWER_SCHEMA)
    with client.responses.stream(model=PLAIN_MODEL, input=QUESTION, text={"format": fmt}) as stream:
        assert stream.get_final_response().output_text == whole.output_text


class Forecast(pydantic.BaseModel):
    city: str
    temperature: float
    tags: list[str]


def test_the_sdk_parse_helper_gets_its_pydantic_model(client):
    parsed = client.responses.parse(model=TOOLS_MODEL, input=QUESTION, text_format=Forecast).output_parsed
    assert isinstance(parsed, Forecast) and parsed.tags


# --- function calls ----------------------------------------------------------------------------------------------

def assert_the_two_calls(calls) -> None:
    assert [call.name for call in calls] == ["get_weather", "get_time"]
    assert all(call.type == "function_call" and call.call_id.startswith("call_") for call in calls)
    assert len({call.call_id for call in calls}) == 2
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    assert json.loads(calls[1].arguments) == {}


def function_calls(response) -> list:
    return [item for item in response.output if item.type == "function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_function_call_round_trip(client, stream):
    first = client.responses.create(model=TOOLS_MODEL, input=QUESTION, tools=TOOLS)
    calls = function_calls(first)
    assert_the_two_calls(calls)
    # The calls go back as they came (SDK objects dumped), each followed by its output.
    follow_up = [{"role": "user", "content": QUESTION}, *(item.model_dump(exclude_none=True) for item in first.output),
                 *({"type": "function_call_output", "call_id": call.call_id, "output": RESULTS[call.name]}
                   for call in calls)]
    if stream:
        with client.responses.stream(model=TOOLS_MODEL, input=follow_up, tools=TOOLS) as events:
            final = events.get_final_response()
    else:
        final = client.responses.create(model=TOOLS_MODEL, input=follow_up, tools=TOOLS)
    assert final.output_text == ANSWER and not function_calls(final)


def test_streamed_function_call_events_are_parsed_by_the_sdk(client):
    with client.responses.stream(model=TOOLS_MODEL, input=QUESTION, tools=TOOLS) as stream:
        done = [event for event in stream if event.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    calls = function_calls(final)
    assert_the_two_calls(calls)
    assert [(event.name, event.arguments) for event in done] == [(call.name, call.arguments) for call in calls]
    # get_weather is strict: the SDK parses its arguments.
    assert calls[0].parsed_arguments == json.loads(calls[0].arguments)


def test_parallel_tool_calls_false_and_a_named_tool_choice(client):
    one = client.responses.create(model=TOOLS_MODEL, input=QUESTION, tools=TOOLS, parallel_tool_calls=False)
    assert [call.name for call in function_calls(one)] == ["get_weather"]
    named = client.responses.create(model=TOOLS_MODEL, input=QUESTION, tools=TOOLS,
                                    tool_choice={"type": "function", "name": "get_time"})
    assert [call.name for call in function_calls(named)] == ["get_time"]
    assert named.tool_choice.name == "get_time"


# --- refusals ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "get_moon"}}, "tool_choice"),
    ({"input": [{"role": "user", "content": "q"}, {"type": "function_call_output", "call_id": "call_x",
                                                   "output": "r"}]}, "input[1].call_id"),
    ({"max_output_tokens": 100_000_000}, "max_output_tokens"),
], ids=["hosted-tool", "previous_response_id", "tool-choice-not-offered", "output-without-call", "max-tokens"])
def test_refusals_are_a_400_naming_the_responses_field(client, request_, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**{"model": TOOLS_MODEL, "input": QUESTION, **request_})
    assert caught.value.param == param


def test_a_model_without_a_tool_format_answers_tools_with_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=PLAIN_MODEL, input=QUESTION, tools=TOOLS)
    assert caught.value.param == "tools" and "vicuna_v1.1" in caught.value.message


def test_stored_responses_are_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_123")
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_123")


# --- OpenAI's published schemas ------------------------------------------------------------------------------------

@needs_spec
def test_real_bodies_are_valid_against_the_published_schemas(gateway, published):
    """A whole text reply, a whole function-call reply and their streams, from gunicorn, against Response and
    ResponseStreamEvent (the quirks relaxed are listed in tests/test_responses_api.py's assert_published)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    for body in ({"model": PLAIN_MODEL, "input": "Hi", "max_output_tokens": 3},
                 {"model": TOOLS_MODEL, "input": QUESTION, "tools": TOOLS}):
        whole = requests.post(f"{gateway.url}/v1/responses", headers=headers, json=body, timeout=30)
        assert whole.status_code == 200, whole.text
        assert_published(published, "Response", whole.json())
        assert_stream_published(published, raw_stream(gateway, **body))
