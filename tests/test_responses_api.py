"""POST /v1/responses in-process, the worker faked with `responses`: what reaches the worker, the response object of
a whole reply, the exact event sequence of a streamed one, failures (before and after the first event), and every
body valid against OpenAI's published Response and ResponseStreamEvent schemas (skipped without them)."""
import json
import logging

import pytest

from tests.fakes import MODEL, VICUNA, WORKER, frames, text_frames
from tests.published_spec import SPEC_FILE, assert_valid, needs_spec, read_nullable
from tests.test_api_tools import HERMES_CALL, HERMES_TWO, PARIS, cumulative, ready
from tests.test_prompt import QWEN

RESPONSES = "/v1/responses"
SYSTEM = VICUNA["system_message"]
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
TOOLS = [WEATHER, TIME]


def post(client, **body):
    return client.post(RESPONSES, json={"model": MODEL, "input": "Hi", **body})


def named_events(body: bytes) -> list[dict]:
    """The events of a Responses stream, its framing checked strictly: each event is `event: <type>` then one
    `data:` line whose JSON has that type, ended by a blank line; no [DONE]."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-200:]
    events = []
    for block in text[:-2].split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: "):])
        assert event["type"] == name[len("event: "):]
        events.append(event)
    return events


@pytest.fixture(scope="module")
def published() -> dict | None:
    return read_nullable(json.loads(SPEC_FILE.read_text())) if SPEC_FILE.exists() else None


def assert_published(published, name: str, body) -> None:
    """Valid against OpenAI's schema `name`, when the published schemas are at hand.

    Quirks: the schema's Response.user is a string and Response.usage an object, neither nullable, while OpenAI's
    own examples of Response (in ResponseCreatedEvent, ResponseFailedEvent) and its API send `"user": null` when
    none was given and `"usage": null` until the response is done, as the gateway does; a response's null user
    and usage are left out before validating."""
    if published is not None:
        assert_valid(published, name, _without_null_quirks(body))


def _without_null_quirks(body):
    if isinstance(body, dict):
        return {key: _without_null_quirks(value) for key, value in body.items()
                if not (key in ("user", "usage") and value is None and body.get("object") == "response")}
    return body


# --- whole replies ---------------------------------------------------------------------------------------------------

class TestWhole:
    def test_the_worker_gets_the_chat_prompt_and_settings(self, client, cluster):
        cluster.chat_ready(counted=False)
        cluster.generates(payload={
            "model": MODEL, "prompt": "Answer briefly. USER: Hi ASSISTANT:", "temperature": 0.5, "logprobs": None,
            "top_p": 0.9, "top_k": -1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_new_tokens": 7,
            "echo": False, "stop_token_ids": None, "stop": []})
        response = post(client, instructions="Answer briefly.", temperature=0.5, top_p=0.9, max_output_tokens=7)
        assert response.status_code == 200, response.get_json()

    def test_the_response_object(self, client, cluster, published):
        cluster.chat_ready()
        cluster.generates("Hello there", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        body = post(client, metadata={"run": "1"}, store=True, user="u1").get_json()
        message = body["output"][0]
        assert body["id"].startswith("resp_") and len(body["id"]) == 37
        assert message["id"].startswith("msg_") and len(message["id"]) == 36
        assert isinstance(body["created_at"], int) and isinstance(body["completed_at"], int)
        assert body == {
            "id": body["id"], "object": "response", "created_at": body["created_at"], "status": "completed",
            "background": False, "completed_at": body["completed_at"], "error": None, "incomplete_details": None,
            "instructions": None, "max_output_tokens": None, "max_tool_calls": None, "model": MODEL,
            "output": [{"id": message["id"], "type": "message", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hello there", "annotations": [],
                                     "logprobs": []}]}],
            "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "none",
            "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7},
            "user": "u1", "metadata": {"run": "1"}}
        assert_published(published, "Response", body)

    def test_max_output_tokens_reached_is_incomplete(self, client, cluster, published):
        cluster.chat_ready(counted=False)
        cluster.generates("Hello", finish_reason="length")
        body = post(client, max_output_tokens=2).get_json()
        assert body["status"] == "incomplete" and body["completed_at"] is None
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert body["output"][0]["status"] == "incomplete" and body["max_output_tokens"] == 2
        assert_published(published, "Response", body)

    def test_an_empty_reply_is_an_empty_message(self, client, cluster):
        cluster.chat_ready()
        cluster.generates("")
        output = post(client).get_json()["output"]
        assert [(item["type"], item["content"][0]["text"]) for item in output] == [("message", "")]

    def test_json_mode(self, client, cluster, published):
        cluster.chat_ready()
        cluster.generates('Sure: {"answer": 42}')
        schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
        fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
        body = post(client, text={"format": fmt}).get_json()
        assert body["output"][0]["content"][0]["text"] == '{"answer": 42}'
        assert body["text"] == {"format": fmt}
        assert "Respond with a single JSON object" in cluster.sent("/worker_generate")[0]["prompt"]
        assert_published(published, "Response", body)

    def test_the_access_log_counts_the_tokens(self, client, cluster, caplog):
        cluster.chat_ready()
        cluster.generates("Hi", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        with caplog.at_level(logging.INFO, logger="app.access"):
            post(client)
        line = next(r.getMessage() for r in caplog.records if r.name == "app.access")
        assert "route=/v1/responses" in line and "prompt_tokens=5 completion_tokens=2" in line


class TestWholeFunctionCalls:
    def test_calls_are_function_call_items_after_the_text(self, client, cluster, published):
        ready(cluster, QWEN)
        cluster.generates("Let me check.\n" + HERMES_TWO)
        body = post(client, input="Weather and time in Paris?", tools=TOOLS).get_json()
        kinds = [item["type"] for item in body["output"]]
        assert kinds == ["message", "function_call", "function_call"]
        assert body["output"][0]["content"][0]["text"] == "Let me check."
        calls = body["output"][1:]
        assert [(c["name"], json.loads(c["arguments"]), c["status"]) for c in calls] == \
               [("get_weather", PARIS, "completed"), ("get_time", {}, "completed")]
        assert all(c["id"].startswith("fc_") and c["call_id"].startswith("call_") for c in calls)
        assert len({c["call_id"] for c in calls}) == 2
        assert body["tools"] == [{**WEATHER, "strict": None}, {**TIME, "description": None, "strict": None}]
        assert body["tool_choice"] == "auto" and body["status"] == "completed"
        assert '"name": "get_weather"' in cluster.sent("/worker_generate")[0]["prompt"]
        assert_published(published, "Response", body)

    def test_a_reply_of_calls_only_has_no_message(self, client, cluster):
        ready(cluster, QWEN)
        cluster.generates(HERMES_CALL)
        body = post(client, tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"}).get_json()
        assert [item["type"] for item in body["output"]] == ["function_call"]
        assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
        assert 'You must call the function "get_weather"' in cluster.sent("/worker_generate")[0]["prompt"]

    def test_the_calls_and_their_outputs_go_back_into_the_prompt(self, client, cluster):
        ready(cluster, QWEN)
        cluster.generates("It is sunny in Paris.")
        call = {"type": "function_call", "id": "fc_1", "call_id": "call_abc", "name": "get_weather",
                "arguments": '{"city": "Paris"}', "status": "completed"}
        body = post(client, tools=TOOLS, input=[
            {"role": "user", "content": "Weather in Paris?"}, call,
            {"type": "function_call_output", "call_id": "call_abc", "output": '{"sky": "sunny"}'}]).get_json()
        assert body["output"][0]["content"][0]["text"] == "It is sunny in Paris."
        prompt = cluster.sent("/worker_generate")[0]["prompt"]
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
        assert '<tool_response>\n{"sky": "sunny"}\n</tool_response>' in prompt

    def test_an_error_raised_while_serving_names_the_responses_field(self, client, cluster):
        # Vicuna has no tool format: the chat path refuses the calls in `messages`, reported as `input`.
        cluster.serves(MODEL)
        cluster.routes(MODEL)
        cluster.template(VICUNA)
        response = post(client, input=[
            {"role": "user", "content": "q"}, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "r"}])
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == "input"

    def test_a_prompt_over_the_context_names_input(self, client, cluster):
        cluster.chat_ready(prompt_tokens=100, context=64)
        error = post(client).get_json()["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "input")


class TestRefusedAndMissing:
    def test_a_validation_error_is_a_400_naming_the_responses_field(self, client):
        error = post(client, input=[{"role": "user", "content": "q"},
                                    {"type": "function_call_output", "call_id": "nope", "output": "x"}]).get_json()
        assert error["error"]["param"] == "input[1].call_id"
        assert error["error"]["type"] == "invalid_request_error"

    def test_previous_response_id_is_refused(self, client):
        response = post(client, previous_response_id="resp_123")
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "unsupported_parameter"

    def test_an_unknown_model_is_a_404(self, client, cluster):
        cluster.serves("other")
        response = post(client)
        assert response.status_code == 404 and response.get_json()["error"]["param"] == "model"

    @pytest.mark.parametrize("method, path", [("get", "/v1/responses/resp_1"), ("delete", "/v1/responses/resp_1"),
                                              ("get", "/v1/responses/resp_1/input_items"),
                                              ("post", "/v1/responses/resp_1/cancel")])
    def test_stored_responses_are_a_404_saying_none_are_stored(self, client, method, path):
        response = getattr(client, method)(path)
        assert response.status_code == 404
        error = response.get_json()["error"]
        assert "does not store responses" in error["message"] and error["param"] == "response_id"

    def test_with_fastchat_statuses_a_stored_response_is_a_400_as_the_document_says(self, config):
        from app import create_app
        from app.openapi import build_spec
        app = create_app({**config, "ERROR_STATUS_MODE": "fastchat"}, environ={})
        assert app.test_client().get("/v1/responses/resp_1").status_code == 400
        assert set(build_spec(app)["paths"]["/v1/responses/{response_id}"]["get"]["responses"]) == {"400", "401"}


# --- streamed replies ------------------------------------------------------------------------------------------------

def stream(client, **body) -> list[dict]:
    response = post(client, stream=True, **body)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    return named_events(response.get_data())


def assert_stream_published(published, events: list[dict]) -> None:
    """Numbered from 0, each event valid against the published schema of its type (ResponseStreamEvent's branch
    with that `type`: validating against the whole anyOf would only say "not valid under any")."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    if published is None:
        return
    branches = {}
    for branch in published["components"]["schemas"]["ResponseStreamEvent"]["anyOf"]:
        name = branch["$ref"].rsplit("/", 1)[1]
        branches[published["components"]["schemas"][name]["properties"]["type"]["enum"][0]] = name
    for event in events:
        assert_published(published, branches[event["type"]], event)


class TestStreamed:
    def test_the_event_sequence_of_a_text_reply(self, client, cluster, published):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hel", "Hello", "Hello there"], prompt_tokens=5))
        events = stream(client)
        assert [event["type"] for event in events] == [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.completed"]
        assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo", " there"]
        created, added, done, completed = events[0], events[2], events[9], events[-1]
        assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
        assert created["response"]["usage"] is None
        assert added["item"] == {"id": added["item"]["id"], "type": "message", "status": "in_progress",
                                 "role": "assistant", "content": []}
        assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        assert {e["item_id"] for e in events[3:9]} == {added["item"]["id"]}
        assert events[7]["text"] == "Hello there" and done["item"]["status"] == "completed"
        response = completed["response"]
        assert response["id"] == created["response"]["id"] and response["status"] == "completed"
        assert response["output"] == [done["item"]]
        assert response["usage"]["input_tokens"] == 5 and response["usage"]["output_tokens"] == 3
        assert_stream_published(published, events)

    def test_the_streamed_response_is_the_whole_one(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hel", "Hello", "Hello there"]))
        streamed = stream(client, instructions="Be kind.")[-1]["response"]
        cluster.generates("Hello there", usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
        cluster.rsps.post(f"{WORKER}/count_token", json={"count": 5, "error_code": 0})
        whole = post(client, instructions="Be kind.").get_json()
        ignored = ("id", "created_at", "completed_at")
        strip = lambda body: {**{k: v for k, v in body.items() if k not in ignored},  # noqa: E731
                              "output": [{**item, "id": None} for item in body["output"]]}
        assert strip(streamed) == strip(whole)

    def test_max_output_tokens_reached_ends_with_response_incomplete(self, client, cluster, published):
        cluster.chat_ready(counted=False)
        cluster.streams(text_frames(["He", "Hello"], finish_reason="length"))
        events = stream(client, max_output_tokens=2)
        assert events[-1]["type"] == "response.incomplete"
        assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert events[-2]["item"]["status"] == "incomplete"
        assert_stream_published(published, events)

    def test_an_empty_reply_still_opens_and_closes_a_message(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames([""]))
        events = stream(client)
        assert [e["type"] for e in events] == [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.completed"]
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""

    def test_function_calls_are_streamed_as_items_with_their_whole_arguments(self, client, cluster, published):
        ready(cluster, QWEN)
        cluster.streams(text_frames(cumulative("Checking.\n" + HERMES_TWO)))
        events = stream(client, tools=TOOLS)
        types = [event["type"] for event in events]
        message_done = types.index("response.output_item.done")
        assert types[message_done + 1:] == [
            "response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done"] * 2 + ["response.completed"]
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Checking."
        added = [e for e in events if e["type"] == "response.output_item.added"]
        assert [e["output_index"] for e in added] == [0, 1, 2]
        assert added[1]["item"]["arguments"] == "" and added[1]["item"]["status"] == "in_progress"
        args = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert [(e["name"], json.loads(e["arguments"]), e["output_index"]) for e in args] == \
               [("get_weather", PARIS, 1), ("get_time", {}, 2)]
        deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
        assert [e["delta"] for e in deltas] == [e["arguments"] for e in args]
        assert [e["item_id"] for e in deltas] == [e["item"]["id"] for e in added[1:]]
        final = events[-1]["response"]["output"]
        assert [item["type"] for item in final] == ["message", "function_call", "function_call"]
        assert_stream_published(published, events)

    def test_a_worker_failure_mid_stream_ends_with_response_failed_then_an_error(self, client, cluster, published):
        cluster.chat_ready()
        cluster.streams(frames({"text": "Hel", "error_code": 0},
                               {"text": "**NETWORK ERROR**\n\n(boom)", "error_code": 50001}))
        events = stream(client)
        assert [e["type"] for e in events][-3:] == ["response.output_text.delta", "response.failed", "error"]
        failed, error = events[-2]["response"], events[-1]
        assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
        assert failed["output"][0]["content"][0]["text"] == "Hel" and failed["output"][0]["status"] == "in_progress"
        # The `error` key makes the openai SDK raise APIError with the gateway's fields.
        assert error["error"] == {"message": error["message"], "type": "server_error", "param": None,
                                  "code": "worker_error"}
        assert error["code"] == "worker_error" and "boom" in error["message"]
        assert_stream_published(published, events)

    def test_json_that_does_not_comply_ends_the_stream_with_its_error(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["no json here"]))
        events = stream(client, text={"format": {"type": "json_object"}})
        assert events[-1]["type"] == "error" and events[-1]["code"] == "response_format_not_followed"
        assert not any(e["type"] == "response.completed" for e in events)

    def test_a_failure_before_the_first_event_has_its_own_status(self, client, cluster):
        cluster.serves("other")
        response = post(client, stream=True)
        assert response.status_code == 404 and response.mimetype == "application/json"

    def test_a_stream_is_logged_with_its_tokens(self, client, cluster, caplog):
        cluster.chat_ready()
        cluster.streams(text_frames(["a", "ab"], prompt_tokens=5))
        with caplog.at_level(logging.INFO, logger="app.access"):
            stream(client)
        line = next(r.getMessage() for r in caplog.records if r.name == "app.access")
        assert "stream=true" in line and "prompt_tokens=5 completion_tokens=2" in line and "ttft_ms=-" not in line


@needs_spec
def test_the_published_schema_check_is_not_vacuous(published):
    """The schemas these tests validate against reject a body that breaks them."""
    from jsonschema import ValidationError
    with pytest.raises(AssertionError):
        assert_valid(published, "ResponseStreamEvent", {"type": "response.output_text.delta", "delta": 3})
    with pytest.raises((AssertionError, ValidationError)):
        assert_valid(published, "Response", {"id": "resp_1", "object": "response"})


def test_closing_the_events_closes_the_chat_chunks():
    """What app.streaming does when the client leaves: the chat chunks (so the worker stream) are closed, whether
    or not a chat chunk was read yet."""
    from app.schemas.responses_api import CreateResponseRequestSchema
    from app.serving.responses_api.events import ResponseEvents

    params = CreateResponseRequestSchema().load({"model": MODEL, "input": "Hi", "stream": True})

    class Chunks:
        closed = False

        def __iter__(self):
            yield {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
            yield {"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": None}]}

        def close(self):
            self.closed = True

    for read in (1, 5):  # before the first chunk (created, in_progress), and in the middle of the text
        chunks = Chunks()
        events = ResponseEvents(params, chunks)
        taken = [event["type"] for _, event in zip(range(read), events)]
        events.close()
        assert chunks.closed and list(events) == [] and len(taken) == read


def test_request_bodies_can_be_logged(config, cluster):
    """LOG_REQUEST_BODIES logs the loaded params as JSON: the translated request and its origins are plain data."""
    from app import create_app
    client = create_app({**config, "LOG_REQUEST_BODIES": True}, environ={}).test_client()
    cluster.chat_ready()
    cluster.generates("Hi")
    assert post(client, instructions="x", input=[{"role": "user", "content": "q"}]).status_code == 200
