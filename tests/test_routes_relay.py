"""Routed models: relayed to their OpenAI-compatible base URLs through the same reply() as FastChat's, so keys,
limits, admission and the access log apply; the client's body passes through, the upstream's errors keep their
status class, failover happens only before the first byte."""
import json
import logging

import pytest
import requests
from responses import matchers

from app import create_app
from harness import sse
from tests.fakes import CONTROLLER
from tests.test_responses_api import assert_published, named_events, published  # noqa: F401 (a fixture)

A, B = "http://up-a.test/v1", "http://up-b.test/v1"
CLIENT_KEY = "sk-client-key"
ROUTES = f'''
[[routes]]
model = "routed"
base_url = "{A}"
api_key = "up-key-a"
upstream_model = "org/real-name"

[[routes]]
model = "routed"
base_url = "{B}"
api_key_env = "UP_KEY_B"
weight = 0.000001

[[routes]]
model = "other-routed"
base_url = "{B}"
'''
CHAT = {"model": "routed", "messages": [{"role": "user", "content": "Hi"}]}
REPLY = {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "org/real-name",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, "system_fingerprint": "fp_x"}


@pytest.fixture
def routed_app(tmp_path, config):
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    return create_app({**config, "ROUTES_FILE": str(path), "API_KEYS": (CLIENT_KEY,)}, environ={"UP_KEY_B": "up-key-b"})


@pytest.fixture
def client(routed_app):
    return routed_app.test_client()


@pytest.fixture(autouse=True)
def a_first(monkeypatch):
    """A is always chosen first while it is left (its weight dwarfs B's); failover then takes B."""
    monkeypatch.setattr("app.routes.relay.random.choices", lambda items, weights: [items[0]])


def post(client, path="/v1/chat/completions", **body):
    return client.post(path, json=body or CHAT, headers={"Authorization": f"Bearer {CLIENT_KEY}"})


def sent(call) -> dict:
    return json.loads(call.request.body)


def events_of(response) -> list[dict]:
    """The JSON events of our stream, its framing checked strictly, [DONE] last."""
    *events, done = sse.parse_json(response.get_data())
    assert done == "[DONE]"
    return events


def sse_stream(*events, done=True) -> bytes:
    body = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(content=None, usage=None, choices=True):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "org/real-name",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}] if choices else [],
            "usage": usage}


class TestWholeReplies:
    def test_the_reply_is_the_upstreams_and_the_body_passes_through_with_its_unmodelled_fields(self, client,
                                                                                               upstream):
        call = upstream.post(f"{A}/chat/completions", json=REPLY)
        extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                 "response_format": {"type": "json_object"}, "seed": 7, "logit_bias": {"42": -100},
                 "vendor_field": {"x": 1}}
        response = post(client, **CHAT, **extra)
        assert response.status_code == 200 and response.get_json() == REPLY
        assert sent(call.calls[0]) == {**CHAT, **extra, "model": "org/real-name"}

    def test_the_upstream_key_replaces_the_clients_and_the_request_id_goes_along(self, client, upstream):
        call = upstream.post(f"{A}/chat/completions", json=REPLY)
        response = client.post("/v1/chat/completions", json=CHAT,
                               headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-Id": "rid-7"})
        headers = call.calls[0].request.headers
        assert headers["Authorization"] == "Bearer up-key-a" and headers["X-Request-Id"] == "rid-7"
        assert CLIENT_KEY not in str(call.calls[0].request.headers) + call.calls[0].request.body.decode()
        assert response.headers["X-Request-Id"] == "rid-7"

    def test_no_api_key_means_no_authorization_header(self, client, upstream):
        call = upstream.post(f"{B}/chat/completions", json=REPLY)
        post(client, **{**CHAT, "model": "other-routed"})
        assert "Authorization" not in call.calls[0].request.headers
        assert sent(call.calls[0])["model"] == "other-routed"  # no upstream_model: the same name

    def test_completions_and_embeddings_go_to_their_paths(self, client, upstream):
        upstream.post(f"{A}/completions", json={"object": "text_completion", "choices": []},
                      match=[matchers.json_params_matcher({"model": "org/real-name", "prompt": "Once",
                                                           "suffix": "end"})])
        upstream.post(f"{A}/embeddings", json={"object": "list", "data": []},
                      match=[matchers.json_params_matcher({"model": "org/real-name", "input": ["a"]})])
        assert post(client, "/v1/completions", model="routed", prompt="Once", suffix="end").status_code == 200
        assert post(client, "/v1/embeddings", model="routed", input=["a"]).get_json() == {"object": "list",
                                                                                       "data": []}

    def test_our_schemas_still_validate_first(self, client, upstream):
        response = post(client, model="routed", messages=[{"role": "user"}], temperature=5)
        assert response.status_code == 400  # and no upstream call: none is registered

    def test_only_a_routed_model_is_spared_fastchats_unsupported_parameters(self, client, upstream):
        refused = post(client, model="fastchat-model", messages=CHAT["messages"], logit_bias={"1": 2})
        assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "logit_bias"
        wrong = post(client, model="routed", messages=CHAT["messages"], logit_bias={"1": 2}, top_p="high")
        assert wrong.status_code == 400  # unsupported and invalid: the invalid field is still refused

    def test_content_parts_fastchat_workers_lack_reach_a_routed_upstream(self, client, upstream):
        """input_audio and file parts are refused for FastChat workers, by name; a routed model's upstream may
        take them (vLLM serves audio models), so it is sent the message whole."""
        content = [{"type": "text", "text": "What is said?"},
                   {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                   {"type": "file", "file": {"file_id": "file-1"}}]
        messages = [{"role": "user", "content": content}]
        refused = post(client, model="fastchat-model", messages=messages)
        assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "unsupported_parameter"
        call = upstream.post(f"{A}/chat/completions", json=REPLY)
        response = post(client, model="routed", messages=messages)
        assert response.status_code == 200, response.get_json()
        assert sent(call.calls[0])["messages"] == messages
        broken = post(client, model="routed", messages=[{"role": "user", "content": [*content, {"type": "nope"}]}])
        assert broken.status_code == 400  # a part that is no content part at all is still refused

    def test_the_access_log_counts_the_upstreams_usage(self, client, upstream, caplog):
        upstream.post(f"{A}/chat/completions", json=REPLY)
        with caplog.at_level(logging.INFO, logger="app.access"):
            post(client)
        line = [r.getMessage() for r in caplog.records if r.name == "app.access"][0]
        assert "model=routed" in line and "prompt_tokens=3" in line and "completion_tokens=1" in line

    def test_a_reply_that_is_not_a_json_object_is_502(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body="<html>")
        assert post(client).status_code == 502


class TestModels:
    def test_routed_models_are_listed_beside_the_controllers(self, client, cluster, upstream):
        upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
        cluster.serves("fastchat-model")
        ids = [card["id"] for card in client.get("/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
               .get_json()["data"]]
        assert ids == ["fastchat-model", "other-routed", "routed"]

    def test_the_keys_allow_list_applies(self, tmp_path, config, cluster, upstream):
        routes, keys = tmp_path / "routes.toml", tmp_path / "keys.toml"
        routes.write_text(ROUTES)
        keys.write_text('[[keys]]\nname = "team"\nkey = "sk-team"\nmodels = ["routed"]\n')
        app = create_app({**config, "ROUTES_FILE": str(routes), "API_KEYS_FILE": str(keys)},
                         environ={"UP_KEY_B": "b"})
        upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
        cluster.serves("fastchat-model")
        headers = {"Authorization": "Bearer sk-team"}
        client = app.test_client()
        assert [card["id"] for card in client.get("/v1/models", headers=headers).get_json()["data"]] == ["routed"]
        refused = client.post("/v1/chat/completions", json={**CHAT, "model": "other-routed"}, headers=headers)
        assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "model_not_found"

    def test_a_name_both_serve_is_logged_once_and_listed_once(self, client, cluster, upstream, caplog):
        upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
        cluster.serves("routed")
        with caplog.at_level(logging.ERROR, logger="app.serving.models"):
            for _ in range(2):
                ids = [card["id"] for card in client.get("/v1/models", headers={
                    "Authorization": f"Bearer {CLIENT_KEY}"}).get_json()["data"]]
        assert ids == ["other-routed", "routed"]
        assert len([r for r in caplog.records if "'routed' is served by FastChat workers and by ROUTES_FILE"
                    in r.getMessage()]) == 1

    def test_routed_models_are_listed_when_the_controller_is_down(self, client, cluster, upstream):
        upstream.post(f"{CONTROLLER}/refresh_all_workers", body=requests.ConnectionError())
        cluster.unreachable(f"{CONTROLLER}/list_models")
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert [card["id"] for card in response.get_json()["data"]] == ["other-routed", "routed"]

    def test_a_routed_model_is_retrieved_without_the_controller(self, client):
        assert client.get("/v1/models/routed", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).get_json()[
            "id"] == "routed"


class TestStreams:
    def test_events_are_relayed_and_the_usage_asked_for_but_kept_from_a_client_that_did_not(self, client,
                                                                                            upstream, caplog):
        call = upstream.post(f"{A}/chat/completions", body=sse_stream(
            chunk("Hel"), chunk("lo"), chunk(choices=False, usage={"prompt_tokens": 3, "completion_tokens": 2,
                                                                   "total_tokens": 5})))
        with caplog.at_level(logging.INFO, logger="app.access"):
            response = post(client, **CHAT, stream=True)
            events = events_of(response)
        assert response.mimetype == "text/event-stream"
        assert [event["choices"][0]["delta"]["content"] for event in events] == ["Hel", "lo"]
        assert sent(call.calls[0])["stream_options"] == {"include_usage": True}
        line = [r.getMessage() for r in caplog.records if r.name == "app.access"][0]
        assert "stream=true" in line and "completion_tokens=2" in line

    def test_a_client_that_asked_for_usage_gets_the_usage_chunk(self, client, upstream):
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        upstream.post(f"{A}/chat/completions", body=sse_stream(chunk("Hi"), chunk(choices=False, usage=usage)))
        events = events_of(post(client, **CHAT, stream=True, stream_options={"include_usage": True}))
        assert events[-1]["choices"] == [] and events[-1]["usage"] == usage

    def test_an_upstream_that_dies_mid_stream_ends_ours_with_an_error_and_done(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=sse_stream(chunk("Hel"), done=False))
        body = post(client, **CHAT, stream=True).get_data()
        assert body.endswith(b"data: [DONE]\n\n")
        *events, _ = sse.parse_json(body)
        assert events[0]["choices"][0]["delta"]["content"] == "Hel"
        assert events[-1]["error"]["code"] == "upstream_error"

    def test_an_error_event_of_the_upstream_is_ours(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=sse_stream(chunk("a"), {"error": {"message": "GPU fell off"}}))
        events = events_of(post(client, **CHAT, stream=True))
        assert events[-1]["error"]["message"] == "GPU fell off"


    def test_fastchats_in_band_error_frame_is_ours(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=sse_stream(chunk("a"), {"text": "CUDA out of memory",
                                                                           "error_code": 50002}))
        events = events_of(post(client, **CHAT, stream=True))
        assert events[-1]["error"]["message"] == "CUDA out of memory"


class TestUpstreamErrors:
    def test_a_400_keeps_its_status_and_message(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=400, json={"error": {
            "message": "tools are not supported by this model", "type": "invalid_request_error", "param": "tools",
            "code": "unsupported_parameter"}})
        response = post(client)
        assert response.status_code == 400
        assert response.get_json()["error"] == {"message": "tools are not supported by this model",
                                                "type": "invalid_request_error", "param": "tools",
                                                "code": "unsupported_parameter"}

    def test_fastchats_error_body_keeps_its_message_and_code(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=400, json={
            "object": "error", "message": "This model's maximum context length is 64 tokens.", "code": 40303})
        body = post(client).get_json()
        assert (body["code"], body["error"]["message"]) == (40303, "This model's maximum context length is 64 tokens.")

    def test_a_429_keeps_retry_after_and_is_not_retried_elsewhere(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=429, headers={"Retry-After": "7", "retry-after-ms": "6500"},
                      json={"error": {"message": "slow down", "type": "requests"}})
        response = post(client)
        assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
        assert response.headers["retry-after-ms"] == "6500"  # what the openai SDK waits for first
        assert response.get_json()["message"] == "slow down"

    def test_a_refused_upstream_key_is_the_gateways_problem_not_the_clients(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=401, json={"error": {"message": "bad key"}})
        upstream.post(f"{B}/chat/completions", status=401, json={"error": {"message": "bad key"}})
        assert post(client).status_code == 502

    @pytest.mark.parametrize("failure", [{"status": 500, "json": {"error": {"message": "boom"}}},
                                         {"body": requests.ConnectionError("refused")}])
    def test_5xx_or_no_connection_fails_over_to_the_next_base_url(self, client, upstream, failure):
        first = upstream.post(f"{A}/chat/completions", **failure)
        second = upstream.post(f"{B}/chat/completions", json=REPLY)
        assert post(client).get_json() == REPLY
        assert second.calls[0].request.headers["Authorization"] == "Bearer up-key-b"
        assert first.call_count == 1

    def test_a_stream_fails_over_before_its_first_byte(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=503, body="overloaded")
        upstream.post(f"{B}/chat/completions", body=sse_stream(chunk("ok")))
        events = events_of(post(client, **CHAT, stream=True))
        assert events[0]["choices"][0]["delta"]["content"] == "ok"

    def test_when_every_base_url_fails_the_last_failure_is_the_reply(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=requests.ConnectionError())
        upstream.post(f"{B}/chat/completions", status=500, json={"error": {"message": "boom"}})
        response = post(client)
        assert response.status_code == 502 and "HTTP 500: boom" in response.get_json()["message"]
        upstream.post(f"{A}/chat/completions", body=requests.ConnectionError())
        upstream.post(f"{B}/chat/completions", body=requests.ConnectionError())
        assert post(client).status_code == 503

    def test_a_redirect_is_not_followed_but_failed_over(self, client, upstream):
        """A prompt goes only where ROUTES_FILE says: a 3xx's Location is never asked."""
        elsewhere = upstream.post("http://elsewhere.test/v1/chat/completions", json=REPLY)
        upstream.post(f"{A}/chat/completions", status=307,
                      headers={"Location": "http://elsewhere.test/v1/chat/completions"})
        upstream.post(f"{B}/chat/completions", status=302, headers={"Location": "http://elsewhere.test/"})
        response = post(client)
        assert response.status_code == 502 and "HTTP 302" in response.get_json()["message"]
        assert elsewhere.call_count == 0
        upstream.assert_all_requests_are_fired = False

    def test_a_timeout_is_504_and_not_repeated(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=requests.ReadTimeout())
        assert post(client).status_code == 504


class TestResponsesApi:
    """/v1/responses for a routed model: its chat translation goes to the upstream's /chat/completions (which
    needs no Responses API), and the completion or chunks come back as a response or its events."""

    CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}

    def respond(self, client, **body):
        return post(client, "/v1/responses", **{"model": "routed", "input": "Hi", **body})

    def test_a_whole_response_from_the_upstreams_chat_completion(self, client, upstream, published):
        call = upstream.post(f"{A}/chat/completions", json=REPLY)
        response = self.respond(client, instructions="Be brief", max_output_tokens=5, temperature=0.5)
        assert response.status_code == 200, response.get_json()
        assert sent(call.calls[0]) == {"model": "org/real-name", "max_tokens": 5, "temperature": 0.5,
                                       "messages": [{"role": "system", "content": "Be brief"},
                                                    {"role": "user", "content": "Hi"}]}
        body = response.get_json()
        assert (body["object"], body["status"], body["model"]) == ("response", "completed", "routed")
        assert [item["content"][0]["text"] for item in body["output"]] == ["Hello"]
        assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (3, 1)
        assert_published(published, "Response", body)

    def test_a_tool_call_round_trip_is_sent_as_chat_messages(self, client, upstream):
        reply = {**REPLY, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [self.CALL]}}]}
        call = upstream.post(f"{A}/chat/completions", json=reply)
        body = self.respond(client, tools=[self.TOOL], input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "call_0", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_0", "output": "sunny"}]).get_json()
        [item] = body["output"]
        assert (item["type"], item["call_id"], item["name"], item["arguments"]) == (
            "function_call", "call_1", "get_weather", '{"city":"Paris"}')
        messages = sent(call.calls[0])["messages"]
        assert messages[1]["tool_calls"][0]["id"] == "call_0" and messages[2] == {
            "role": "tool", "tool_call_id": "call_0", "content": "sunny"}
        assert sent(call.calls[0])["tools"][0]["function"]["name"] == "get_weather"

    def test_a_reply_without_a_message_is_502(self, client, upstream):
        upstream.post(f"{A}/chat/completions", json={"object": "chat.completion", "choices": []})
        assert self.respond(client).status_code == 502

    def test_a_stream_with_a_call_sent_in_pieces(self, client, upstream, published):
        def call_piece(**fields):
            return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, **fields}]}, "finish_reason": None}]}
        pieces = [chunk("Let me look."),
                  call_piece(id="call_1", type="function", function={"name": "get_weather", "arguments": ""}),
                  call_piece(function={"arguments": '{"city":'}), call_piece(function={"arguments": '"Paris"}'}),
                  {**chunk(), "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                  chunk(usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}, choices=False)]
        call = upstream.post(f"{A}/chat/completions", body=sse_stream(*pieces), content_type="text/event-stream")
        response = self.respond(client, tools=[self.TOOL], stream=True)
        assert response.status_code == 200
        events = named_events(response.get_data())
        assert sent(call.calls[0])["stream_options"] == {"include_usage": True}
        types = [event["type"] for event in events]
        assert types[-1] == "response.completed" and "error" not in types
        [done] = [event for event in events if event["type"] == "response.function_call_arguments.done"]
        assert (done["name"], done["arguments"]) == ("get_weather", '{"city":"Paris"}')
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == ["message", "function_call"]
        assert final["output"][0]["content"][0]["text"] == "Let me look."
        assert final["output"][1]["call_id"] == "call_1"
        assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (9, 4)
        for event in events:
            assert_published(published, "ResponseStreamEvent", event)

    def test_an_upstream_400_keeps_its_status_and_message(self, client, upstream):
        upstream.post(f"{A}/chat/completions", status=400, json={"error": {
            "message": "tools are not supported by this model", "type": "invalid_request_error", "param": "tools"}})
        response = self.respond(client, tools=[self.TOOL])
        assert response.status_code == 400
        assert response.get_json()["error"]["message"] == "tools are not supported by this model"

    def test_an_upstream_that_dies_mid_stream_fails_the_response(self, client, upstream):
        upstream.post(f"{A}/chat/completions", body=sse_stream(chunk("Hel"), done=False),
                      content_type="text/event-stream")
        events = named_events(self.respond(client, stream=True).get_data())
        assert [event["type"] for event in events][-2:] == ["response.failed", "error"]
        assert (events[-1]["code"], events[-1]["message"]) == (
            "upstream_error", "The upstream closed the stream before it finished.")
        assert events[-2]["response"]["output"][0]["content"][0]["text"] == "Hel"  # what it had


def test_token_check_for_a_routed_model_is_a_clear_400_not_a_404(client, upstream):
    """The upstream's OpenAI API has no token count: the client is told so, naming the prompt, and nothing is
    sent upstream (no call is registered)."""
    response = post(client, "/api/v1/token_check",
                    prompts=[{"model": "routed", "prompt": "Hi", "max_tokens": 4}])
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_model" and error["param"] == "prompts.0.model"
    assert "OpenAI-compatible upstream" in error["message"]
