"""The official openai SDK's Responses client against the app in-process (WSGI transport), upstream faked with
`responses`: what the SDK makes of our response objects and event streams, and of our errors."""
import json

import openai
import pytest

from tests.fakes import MODEL, frames, text_frames
from tests.test_api_tools import HERMES_TWO, PARIS, cumulative, ready
from tests.test_openai_sdk import sdk  # noqa: F401 (the fixture)
from tests.test_prompt import QWEN
from tests.test_responses_api import TOOLS


@pytest.fixture
def config(config):
    return {**config, "API_KEYS": ("sk-test",)}


def test_create(sdk, cluster):  # noqa: F811
    cluster.chat_ready()
    cluster.generates("Hello there")
    response = sdk.responses.create(model=MODEL, input="Hi", instructions="Be kind.")
    assert response.output_text == "Hello there"
    assert response.status == "completed" and response.store is False
    assert response.usage.input_tokens == 5 and response.usage.output_tokens == 2


def test_stream_accumulates_into_the_final_response(sdk, cluster):  # noqa: F811
    cluster.chat_ready()
    cluster.streams(text_frames(["Hel", "Hello", "Hello there"]))
    with sdk.responses.stream(model=MODEL, input="Hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello there" == final.output_text
    assert final.usage.output_tokens == 3


def test_streamed_function_calls_are_parsed(sdk, cluster):  # noqa: F811
    ready(cluster, QWEN)
    cluster.streams(text_frames(cumulative(HERMES_TWO)))
    with sdk.responses.stream(model=MODEL, input="Weather and time?", tools=TOOLS) as stream:
        done = [(event.name, event.arguments) for event in stream
                if event.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("get_weather", PARIS), ("get_time", {})]
    assert done == [(call.name, call.arguments) for call in calls]


def test_a_failure_mid_stream_raises_api_error(sdk, cluster):  # noqa: F811
    cluster.chat_ready()
    cluster.streams(frames({"text": "Hel", "error_code": 0},
                           {"text": "**NETWORK ERROR**\n\n(boom)", "error_code": 50001}))
    seen = []
    with pytest.raises(openai.APIError) as caught:
        with sdk.responses.stream(model=MODEL, input="Hi") as stream:
            seen.extend(event.type for event in stream)
    assert "boom" in caught.value.message and caught.value.code == "worker_error"
    assert seen[-1] == "response.failed"


def test_a_refused_feature_is_a_bad_request_naming_it(sdk):  # noqa: F811
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input="Hi", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0].type" and caught.value.code == "unsupported_parameter"


def test_retrieving_a_response_is_not_found(sdk):  # noqa: F811
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.retrieve("resp_123")
    assert "does not store responses" in caught.value.message
