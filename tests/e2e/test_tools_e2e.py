"""Tool calling and structured output end to end: the official openai SDK -> the gateway under real gunicorn ->
simulated workers serving a ChatML (Hermes), a llama-3 and a mistral template, which answer tool offers with calls
in their format and tool results with an answer (bench/simworker/scripted.py), and a vicuna one, which has no tool
format. No controller (WORKER_ADDRESSES)."""
from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest
import requests

from harness import sse
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker, simulated_workers

KEY = "sk-tools"
# model name -> the conversation template its worker serves (the gateway picks the tool format from it).
MODELS = {"sim-hermes": "qwen-7b-chat", "sim-llama3": "llama-3", "sim-mistral": "mistral"}
NO_FORMAT = "sim-vicuna"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": WEATHER, "strict": True}},
         {"type": "function", "function": {"name": "get_time", "description": "The local time.",
                                           "parameters": {"type": "object", "properties": {}}}}]
QUESTION = [{"role": "user", "content": "What is the weather and the time in Paris?"}]
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"},
                                                  "tags": {"type": "array", "items": {"type": "string"}}},
                 "required": ["city", "temperature", "tags"], "additionalProperties": False}


@pytest.fixture(scope="module")
def workers(run_dir):
    # A token delay makes the worker write each frame on its own, so the gateway sees the markers split.
    with simulated_workers(run_dir, {**MODELS, NO_FORMAT: "vicuna_v1.1"}, "--token-delay", "0.002", name="sim") as started:
        yield started


@pytest.fixture(scope="module")
def gateway(run_dir, workers):
    gateway = Gateway(run_dir, name="gateway-tools", API_KEYS=KEY,
                      WORKER_ADDRESSES=",".join(worker.address for worker in workers.values()))
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return request.param


def assert_the_two_calls(tool_calls) -> None:
    assert [call.function.name for call in tool_calls] == ["get_weather", "get_time"]
    assert all(call.type == "function" and call.id.startswith("call_") for call in tool_calls)
    assert len({call.id for call in tool_calls}) == 2
    jsonschema.validate(json.loads(tool_calls[0].function.arguments), WEATHER)
    assert json.loads(tool_calls[1].function.arguments) == {}


def test_a_whole_reply_holds_the_calls(client, model):
    completion = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert_the_two_calls(choice.message.tool_calls)


def raw_stream(gateway, **body) -> list:
    reply = requests.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={**body, "stream": True}, timeout=30)
    assert reply.status_code == 200, reply.text
    events = sse.parse_json(reply.content)
    assert events[-1] == "[DONE]"
    return events[:-1]


def test_streamed_calls_are_deltas_with_an_index_and_the_id_type_and_name_first(gateway, client, model):
    events = raw_stream(gateway, model=model, messages=QUESTION, tools=TOOLS)
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    assert not any(delta.get("content") for delta in deltas)
    calls: dict[int, dict] = {}
    for delta in deltas:
        for item in delta.get("tool_calls") or ():
            assert isinstance(item["index"], int)
            if item["index"] not in calls:
                assert item["id"].startswith("call_") and item["type"] == "function"
                assert item["function"]["name"]
                calls[item["index"]] = {"id": item["id"], "name": item["function"]["name"], "arguments": ""}
            calls[item["index"]]["arguments"] += item["function"].get("arguments") or ""
    assert sorted(calls) == [0, 1]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["choices"][0]["delta"] == {}  # the finish in a chunk of its own, as OpenAI sends it
    whole = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS).choices[0].message
    assert [(c["name"], c["arguments"]) for c in calls.values()] == \
           [(c.function.name, c.function.arguments) for c in whole.tool_calls]


def test_the_sdk_stream_helper_accumulates_the_calls(client, model):
    with client.chat.completions.stream(model=model, messages=QUESTION, tools=TOOLS) as stream:
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls" and not final.message.content
    assert_the_two_calls(final.message.tool_calls)
    # get_weather is strict: the helper parses its arguments.
    assert final.message.tool_calls[0].function.parsed_arguments == \
           json.loads(final.message.tool_calls[0].function.arguments)


def test_the_sdk_stream_helper_reports_each_call_done(client, model):
    # The helper checks a chunk's finish_reason before its tool_calls: a call sent in the chunk that carries the
    # finish_reason would never get its done event (OpenAI sends the finish_reason in a chunk of its own).
    with client.chat.completions.stream(model=model, messages=QUESTION, tools=TOOLS) as stream:
        done = [event.name for event in stream if event.type == "tool_calls.function.arguments.done"]
    assert done == ["get_weather", "get_time"]
    with client.chat.completions.stream(model=model, messages=QUESTION, tools=TOOLS,
                                        parallel_tool_calls=False) as stream:
        done = [event.name for event in stream if event.type == "tool_calls.function.arguments.done"]
    assert done == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_call_then_tool_results_then_an_answer(client, model, stream):
    first = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS).choices[0].message
    results = {"get_weather": '{"temperature": 21, "sky": "clear"}', "get_time": "14:05"}
    messages = QUESTION + [first.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": results[call.function.name]}
        for call in first.tool_calls]
    expected = 'The tools answered: {"temperature": 21, "sky": "clear"} | 14:05.'
    if stream:
        with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as events:
            final = events.get_final_completion().choices[0]
    else:
        final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS).choices[0]
    assert final.finish_reason == "stop"
    assert final.message.content == expected and not final.message.tool_calls


def test_parallel_tool_calls_false_gives_one_call(client, model):
    for stream in (False, True):
        if stream:
            with client.chat.completions.stream(model=model, messages=QUESTION, tools=TOOLS,
                                                parallel_tool_calls=False) as events:
                choice = events.get_final_completion().choices[0]
        else:
            choice = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS,
                                                    parallel_tool_calls=False).choices[0]
        assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
        assert choice.finish_reason == "tool_calls"


@pytest.mark.parametrize("tool_choice, names", [
    ("auto", ["get_weather", "get_time"]),
    ("required", ["get_weather", "get_time"]),
    ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
    ("none", []),
], ids=["auto", "required", "named", "none"])
def test_tool_choice(client, model, tool_choice, names):
    choice = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS,
                                            tool_choice=tool_choice).choices[0]
    assert [call.function.name for call in choice.message.tool_calls or ()] == names
    if not names:  # not offered: the worker saw no tools and wrote its filler text
        assert choice.finish_reason == "stop" and choice.message.content
        assert "get_weather" not in choice.message.content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_is_best_effort_a_model_that_answers_in_text_is_still_answered(gateway, client, workers, stream):
    disobey(workers["sim-mistral"], 1)
    request = {"model": "sim-mistral", "messages": QUESTION, "tools": TOOLS, "tool_choice": "required"}
    if stream:
        events = raw_stream(gateway, **request)
        assert not any("error" in event for event in events)
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        finish = events[-1]["choices"][0]["finish_reason"]
    else:
        choice = client.chat.completions.create(**request).choices[0]
        assert not choice.message.tool_calls
        content, finish = choice.message.content, choice.finish_reason
    assert finish == "stop" and len(content.split()) == 16  # the worker's filler, as it wrote it


def test_a_tool_choice_naming_a_function_not_offered_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="sim-hermes", messages=QUESTION, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "get_moon"}})
    assert caught.value.body["param"] == "tool_choice"


def test_call_ids_are_unique_across_the_choices_of_a_response(client):
    completion = client.chat.completions.create(model="sim-hermes", messages=QUESTION, tools=TOOLS, n=2)
    ids = [call.id for choice in completion.choices for call in choice.message.tool_calls]
    assert len(ids) == 4 and len(set(ids)) == 4


@pytest.mark.parametrize("tool, param", [
    ({"type": "function", "function": {"name": "no spaces allowed"}}, "tools[0].function.name"),
    ({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 3}}},
     "tools[0].function.parameters"),
    ({"type": "retrieval"}, "tools[0].type"),
], ids=["name", "parameters", "type"])
def test_a_malformed_tool_is_a_400_naming_the_field(client, tool, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="sim-hermes", messages=QUESTION, tools=[tool])
    assert caught.value.body["param"] == param


def test_a_template_without_a_tool_format_answers_tools_with_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=NO_FORMAT, messages=QUESTION, tools=TOOLS)
    assert caught.value.body["param"] == "tools"
    assert "vicuna_v1.1" in caught.value.body["message"]
    # Without tools the same model answers.
    assert client.chat.completions.create(model=NO_FORMAT, messages=QUESTION).choices[0].message.content


JSON_MODELS = ["sim-hermes", NO_FORMAT]  # JSON mode needs no tool format


@pytest.mark.parametrize("json_model", JSON_MODELS)
def test_json_object_mode(client, json_model):
    choice = client.chat.completions.create(model=json_model, messages=QUESTION,
                                            response_format={"type": "json_object"}).choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content), dict)


def schema_format(strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": strict}}


@pytest.mark.parametrize("json_model", JSON_MODELS)
def test_json_schema_mode_whole_and_streamed(gateway, client, json_model):
    whole = client.chat.completions.create(model=json_model, messages=QUESTION,
                                           response_format=schema_format()).choices[0].message.content
    jsonschema.validate(json.loads(whole), ANSWER_SCHEMA)
    events = raw_stream(gateway, model=json_model, messages=QUESTION, response_format=schema_format())
    assert not any("error" in event for event in events)
    streamed = "".join(event["choices"][0]["delta"].get("content") or "" for event in events if event["choices"])
    assert streamed == whole
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


class Forecast(pydantic.BaseModel):
    city: str
    temperature: float
    tags: list[str]


def test_the_sdk_parse_helper_gets_its_pydantic_model(client):
    completion = client.chat.completions.parse(model="sim-mistral", messages=QUESTION, response_format=Forecast)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and parsed.tags


def test_the_sdk_stream_helper_parses_a_streamed_pydantic_reply(client):
    with client.chat.completions.stream(model="sim-llama3", messages=QUESTION, response_format=Forecast) as stream:
        kinds = {event.type for event in stream}
        parsed = stream.get_final_completion().choices[0].message.parsed
    assert "content.done" in kinds and isinstance(parsed, Forecast)


def test_tools_and_json_mode_together_call_first_then_answer_in_json(client, model):
    first = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS,
                                           response_format=schema_format()).choices[0].message
    assert first.tool_calls
    messages = QUESTION + [first.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": "ok"} for call in first.tool_calls]
    answer = client.chat.completions.create(model=model, messages=messages, tools=TOOLS,
                                            response_format=schema_format()).choices[0].message
    jsonschema.validate(json.loads(answer.content), ANSWER_SCHEMA)


def disobey(worker: SimulatedWorker, count: int) -> None:
    """The worker's next `count` replies ignore the JSON instruction (filler text), as a free model may."""
    worker.reset()
    requests.post(f"{worker.address}/sim/fault", json={"mode": "disobey", "count": count},
                  timeout=5).raise_for_status()


def generations(worker: SimulatedWorker) -> int:
    return sum(worker.stats()["requests"].get(path, 0) for path in ("/worker_generate", "/worker_generate_stream"))


def test_a_whole_reply_that_ignores_json_mode_is_generated_again(client, workers):
    worker = workers[NO_FORMAT]
    disobey(worker, 1)
    completion = client.chat.completions.create(model=NO_FORMAT, messages=QUESTION, response_format=schema_format())
    jsonschema.validate(json.loads(completion.choices[0].message.content), ANSWER_SCHEMA)
    assert generations(worker) == 2


def test_a_reply_that_still_ignores_it_is_an_error_the_sdk_does_not_retry(gateway, workers):
    worker = workers[NO_FORMAT]
    disobey(worker, 2)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=3, timeout=30) as retrying:
        with pytest.raises(openai.InternalServerError) as caught:
            retrying.chat.completions.create(model=NO_FORMAT, messages=QUESTION, response_format=schema_format())
    assert caught.value.status_code == 502 and caught.value.code == "response_format_not_followed"
    assert generations(worker) == 2  # one retry by the gateway (STRUCTURED_OUTPUT_RETRIES), none by the SDK


def test_a_stream_that_ignores_json_mode_ends_with_an_error_event(gateway, workers):
    worker = workers[NO_FORMAT]
    disobey(worker, 1)
    events = raw_stream(gateway, model=NO_FORMAT, messages=QUESTION, response_format=schema_format())
    assert events[-1]["error"]["code"] == "response_format_not_followed"
    assert not any(event.get("choices") and event["choices"][0].get("finish_reason") for event in events)
    assert generations(worker) == 1  # streams are never retried
