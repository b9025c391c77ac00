"""GET /openapi.json: a valid OpenAPI 3 document listing every route, and real responses conform to it."""
from __future__ import annotations

import copy

import pytest
import requests
from jsonschema import Draft4Validator
from marshmallow import ValidationError
from openapi_spec_validator import validate as validate_openapi

from app import auth, create_app
from app.openapi import EXTENSION_KEY, build_spec, openapi_path
from app.upstream.errors import UpstreamError
from tests.fakes import CONTROLLER, MODEL, WORKER, frames, text_frames
from tests.test_api_tools import HERMES_TWO, TOOLS, cumulative, ready
from tests.test_prompt import QWEN
from tests.openapi_json_schema import to_json_schema
from tests.test_api_chat import WORKER_LOGPROBS, sse_events

IGNORED_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every rule
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def spec(app):
    return build_spec(app)


# --- helpers ---------------------------------------------------------------------------------------------------------

def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        section, kind, name = node["$ref"].removeprefix("#/").split("/")
        node = spec[section][kind][name]
    return node


def assert_conforms(spec: dict, schema: dict, instance) -> None:
    """Validate `instance` against an OpenAPI schema of `spec` (refs to components resolved)."""
    root = {**to_json_schema(schema), "components": to_json_schema(spec["components"])}
    errors = sorted(Draft4Validator(root).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def documented_response(spec: dict, path: str, method: str, status: int) -> dict:
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    return resolve(spec, responses[str(status)])


def assert_response_conforms(spec: dict, path: str, method: str, response) -> None:
    """The status, media type and (JSON) body of a real response are the ones `spec` documents for it."""
    documented = documented_response(spec, path, method, response.status_code)
    assert response.mimetype in documented["content"], response.mimetype
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers
    if response.mimetype == "application/json":
        assert_conforms(spec, documented["content"]["application/json"]["schema"], response.get_json())


def assert_events_conform(spec: dict, path: str, response) -> list:
    """Every `data:` event of a streamed response conforms to the documented event schema; returns the events."""
    documented = documented_response(spec, path, "post", response.status_code)
    assert response.mimetype == "text/event-stream"
    events = sse_events(response)[:-1]
    for event in events:
        assert_conforms(spec, documented["content"]["text/event-stream"]["x-sse-data-schema"], event)
    return events


def component(spec: dict, name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


# --- the document --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [{}, {"ERROR_STATUS_MODE": "fastchat"}, {"API_KEYS": ("k",), "MAX_N": 4}])
def test_the_document_is_valid_openapi_3(config, settings):
    app = create_app({**config, **settings}, environ={})
    document = build_spec(app)
    validate_openapi(copy.deepcopy(document))
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] == "fastchat-gateway" and document["info"]["version"]


def test_served_without_an_api_key_and_built_once(config, monkeypatch):
    app = create_app({**config, "API_KEYS": ("secret",)}, environ={})
    client = app.test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == build_spec(app)
    monkeypatch.setattr("app.openapi.build_spec", lambda app: pytest.fail("the document was built again"))
    assert client.get("/openapi.json").get_json() == response.get_json()
    assert app.extensions[EXTENSION_KEY]["paths"]
    assert client.get("/v1/models").status_code == 401  # the rest still needs the key


def test_every_registered_route_is_documented_with_its_methods(app, spec):
    registered: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        registered.setdefault(openapi_path(rule.rule), set()).update(
            method.lower() for method in rule.methods - IGNORED_METHODS)
    documented = {path: {method for method in item if method in HTTP_METHODS} for path, item in spec["paths"].items()}
    assert documented == registered


def test_operations_come_from_the_views_and_an_undocumented_view_fails_the_build(config):
    app = create_app(config, environ={})
    operation = build_spec(app)["paths"]["/v1/models/{model}"]["get"]
    assert (operation["operationId"], operation["summary"]) == ("retrieveModel", "Retrieve a model")
    assert operation["description"] == "One model; 404 `model_not_found` when no worker serves it."

    @app.get("/undocumented")
    def undocumented():
        """Not in the document."""
    with pytest.raises(LookupError, match="undocumented"):
        build_spec(app)


def test_every_operation_but_the_public_ones_needs_the_api_key(app, spec):
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["security"] == [{"ApiKey": []}]
    public = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - IGNORED_METHODS:
            operation = spec["paths"][openapi_path(rule.rule)][method.lower()]
            if rule.endpoint in auth.PUBLIC_ENDPOINTS:
                public.add(rule.rule)
                assert operation["security"] == [], rule.rule
            else:
                assert operation["security"] == [{"ApiKey": []}], rule.rule
                assert "401" in operation["responses"], rule.rule
    assert public == {"/health", "/ready", "/metrics", "/openapi.json"}


def test_operations_are_complete(spec):
    operation_ids = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            parameters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert parameters == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
            # Only the routes of stored responses (which this server never has) document no 200: always a 404.
            assert "200" in operation["responses"] or (path.startswith("/v1/responses/") and
                                                       set(operation["responses"]) == {"401", "404"}), path
            for status, response in operation["responses"].items():
                if status != "200":
                    schema = resolve(spec, response)["content"]["application/json"]["schema"]
                    assert schema == component(spec, "Error"), (path, status)
            if method == "post" and "200" in operation["responses"]:  # (cancelling a response takes no body)
                assert operation["requestBody"]["required"]
    assert len(operation_ids) == len(set(operation_ids))


def test_generation_endpoints_document_both_json_and_event_streams(spec):
    for path in ("/v1/chat/completions", "/api/v1/chat/completions", "/v1/completions", "/v1/responses"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
    for path in ("/v1/embeddings", "/v1/engines/{model}/embeddings"):
        assert set(spec["paths"][path]["post"]["responses"]["200"]["content"]) == {"application/json"}


def test_the_configured_limits_are_documented(config):
    spec = build_spec(create_app({**config, "MAX_N": 4, "MAX_STOP_SEQUENCES": 2, "MAX_TOKENS_CAP": 100,
                                  "MAX_MESSAGES": 3}, environ={}))
    properties = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert properties["n"]["maximum"] == 4
    assert properties["max_tokens"]["maximum"] == 100
    assert properties["stop"]["oneOf"][1]["maxItems"] == 2
    assert properties["messages"]["oneOf"][1]["maxItems"] == 3


def test_fastchat_status_mode_documents_400_for_handled_errors(config):
    spec = build_spec(create_app({**config, "ERROR_STATUS_MODE": "fastchat"}, environ={}))
    assert set(spec["paths"]["/v1/chat/completions"]["post"]["responses"]) == {"200", "400", "401", "413", "429"}
    assert set(spec["paths"]["/v1/models/{model}"]["get"]["responses"]) == {"200", "400", "401"}
    assert set(spec["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}  # the probe keeps its status


# --- the documented request bodies accept exactly what the server accepts -----------------------------------------------

CHAT_BODIES = [
    ({}, True), ({"messages": "a raw prompt"}, True), ({"messages": []}, False), ({"messages": None}, False),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, True),
    ({"messages": [{"role": "user", "content": []}]}, True),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, False),
    ({"messages": [{"role": "user", "content": None}]}, False),
    # A tool message's tool_call_id must answer an earlier call: a rule across messages the document cannot say,
    # so only the missing id is listed here.
    ({"messages": [{"role": "tool", "content": "x"}]}, False), ({"messages": [{"role": "robot", "content": "x"}]}, False),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "x", "tool_call_id": "call_1"}]}, True),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "function": {"name": "bad name", "arguments": "{}"}}]}]}, False),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": []}]}, True),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{}]}]}, False),
    ({"messages": [{"content": "x"}]}, False), ({"model": None}, False), ({"model": 3}, False),
    ({"stop": "x"}, True), ({"stop": ["a", "b"]}, True), ({"stop": None}, True), ({"stop": [1]}, False),
    ({"stop": ["s"] * 17}, False), ({"stop": 3}, False),
    # tools, tool_choice and response_format are served now: their entries changed with that.
    ({"tools": []}, True), ({"tools": None}, True), ({"tools": False}, False), ({"tools": [{"type": "function"}]}, False),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "tool_choice": "required", "parallel_tool_calls": False}, True),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, False),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, False),
    ({"tools": [{"type": "function", "function": {"name": "f"}}] * 129}, False),
    ({"parallel_tool_calls": 1}, False),
    ({"tool_choice": "auto"}, True), ({"tool_choice": "sometimes"}, False), ({"function_call": "none"}, True),
    ({"response_format": {"type": "text"}}, True), ({"response_format": {"type": "json_object"}}, True),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}}, True),
    ({"response_format": {"type": "json_schema"}}, False), ({"response_format": {"type": "xml"}}, False),
    ({"modalities": ["text"]}, True), ({"modalities": ["text", "audio"]}, False),
    ({"audio": None}, True), ({"audio": {}}, False), ({"web_search_options": {}}, False),
    ({"top_k": -1}, True), ({"top_k": 5}, True), ({"top_k": 0}, False), ({"top_k": -2}, False),
    ({"repetition_penalty": 0.5}, True), ({"repetition_penalty": 0}, False),
    ({"n": 1}, True), ({"n": 0}, False), ({"n": 129}, False), ({"n": 1.5}, False), ({"n": True}, False),
    ({"max_tokens": 1}, True), ({"max_tokens": 0}, False), ({"temperature": None}, True),
    ({"temperature": 2}, True), ({"temperature": 2.5}, False), ({"temperature": True}, False),
    ({"logit_bias": {}}, True), ({"logit_bias": {"1": 2}}, False), ({"stream": "yes"}, False),
    ({"logprobs": True, "top_logprobs": 20}, True), ({"logprobs": True, "top_logprobs": 21}, False),
    ({"stream": True, "stream_options": {"include_usage": True}}, True),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, False),
    ({"metadata": {"a": "b"}, "store": False, "anything": [1]}, True),
]

COMPLETION_BODIES = [
    ({}, True), ({"prompt": ""}, True), ({"prompt": ["a", "b"]}, True), ({"prompt": [1, 2]}, True),
    ({"prompt": [[1], [2, 3]]}, True), ({"prompt": []}, False), ({"prompt": [[]]}, False), ({"prompt": [[1], []]}, False),
    ({"prompt": [1, "a"]}, False), ({"prompt": None}, False), ({"prompt": ["a"] * 2049}, False),
    ({"prompt": [True]}, False), ({"suffix": ""}, True), ({"suffix": None}, True), ({"suffix": "tail"}, False),
    ({"logprobs": 5}, True), ({"logprobs": 6}, False), ({"echo": "yes"}, False), ({"best_of": 2, "n": 2}, True),
    ({"best_of": 21}, False),
]

EMBEDDING_BODIES = [
    ({}, True), ({"input": ["a", "b"]}, True), ({"input": [1, 2]}, True), ({"input": [[1], [2]]}, True),
    ({"input": ""}, False), ({"input": ["a", ""]}, False), ({"input": [[1], []]}, False), ({"input": []}, False),
    ({"input": None}, False), ({"input": ["a", 1]}, False), ({"model": None}, True),
    ({"encoding_format": "base64"}, True), ({"encoding_format": None}, True), ({"encoding_format": "hex"}, False),
    ({"dimensions": 3}, True), ({"dimensions": 0}, False),
]

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
RESPONSES_BODIES = [
    ({}, True), ({"input": []}, False), ({"input": None}, False), ({"input": 3}, False),
    ({"input": [{"role": "user", "content": "a"}]}, True),
    ({"input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}]}]}, True),
    ({"input": [{"role": "assistant", "content": [{"type": "output_text", "text": "a", "annotations": []}]}]}, True),
    ({"input": [{"role": "tool", "content": "a"}]}, False), ({"input": [{"content": "a"}]}, False),
    ({"input": [{"role": "user", "content": None}]}, False),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, False),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, False),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, False),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, False),
    ({"input": [{"type": "reasoning", "summary": []}]}, False),
    ({"input": [{"role": "user", "content": "a"}, CALL,
                {"type": "function_call_output", "call_id": "call_1", "output": "x"}], "tools": [WEATHER]}, True),
    ({"input": [{"role": "user", "content": "a"}, {**CALL, "name": "bad name"}]}, False),
    ({"input": [{"role": "user", "content": "a"}, {**CALL, "call_id": ""}]}, False),
    ({"input": [{"role": "user", "content": "a"}, {"type": "function_call_output", "call_id": "c"}]}, False),
    ({"instructions": "Be brief.", "instructions_extra": 1}, True), ({"instructions": 3}, False),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}}, True),
    ({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}, True),
    ({"tools": [{"type": "web_search"}]}, False), ({"tools": [{"type": "function"}]}, False),
    ({"tools": [{**WEATHER, "name": "no spaces"}]}, False), ({"tools": [WEATHER] * 129}, False),
    ({"tool_choice": "sometimes"}, False), ({"tool_choice": {"type": "function"}}, False),
    ({"text": {"format": {"type": "text"}}}, True), ({"text": {"format": {"type": "json_object"}}}, True),
    ({"text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": True}}}, True),
    ({"text": {"format": {"type": "json_schema", "name": "r"}}}, False), ({"text": {"format": {"type": "xml"}}}, False),
    ({"text": {"verbosity": "medium"}}, True), ({"text": {"verbosity": "low"}}, False),
    ({"temperature": 2}, True), ({"temperature": 2.5}, False), ({"top_p": 1.5}, False),
    ({"max_output_tokens": 16}, True), ({"max_output_tokens": 0}, False),
    ({"store": True, "metadata": {"a": "b"}, "user": "u", "service_tier": "auto", "max_tool_calls": 2}, True),
    ({"metadata": {"a": 1}}, False), ({"metadata": {str(i): "v" for i in range(17)}}, False), ({"store": "no"}, False),
    ({"stream": True, "stream_options": {"include_obfuscation": False}}, True),
    ({"previous_response_id": None, "conversation": None, "prompt": None, "background": False}, True),
    ({"previous_response_id": "resp_1"}, False), ({"conversation": "conv_1"}, False), ({"background": True}, False),
    ({"prompt": {"id": "p"}}, False), ({"truncation": "disabled"}, True), ({"truncation": "auto"}, False),
    ({"top_logprobs": 0}, True), ({"top_logprobs": 3}, False),
    ({"include": ["reasoning.encrypted_content"]}, True), ({"include": ["message.output_text.logprobs"]}, False),
    ({"reasoning": {"effort": None}}, True), ({"reasoning": {"effort": "high"}}, False),
    ({"reasoning": {"summary": "auto"}}, False), ({"context_management": []}, True),
    ({"context_management": [{"type": "compaction"}]}, False),
]

TOKEN_CHECK_BODIES = [
    ({}, True), ({"prompts": []}, False), ({"prompts": [{"model": MODEL, "prompt": "a"}]}, False),
    ({"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": -1}]}, False),
    ({"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 0, "extra": 1}]}, True),
]

BASE_BODIES = {
    "chat": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "completion": {"model": MODEL, "prompt": "Once upon"},
    "embedding": {"model": MODEL, "input": "hello"},
    "token_check": {"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 1}]},
    "responses": {"model": MODEL, "input": "hi"},
}
COMPONENTS = {"chat": "ChatCompletionRequest", "completion": "CompletionRequest", "embedding": "EmbeddingRequest",
              "token_check": "TokenCheckRequest", "responses": "CreateResponseRequest"}


@pytest.mark.parametrize("kind, change, accepted", [
    *(("chat", change, accepted) for change, accepted in CHAT_BODIES),
    *(("completion", change, accepted) for change, accepted in COMPLETION_BODIES),
    *(("embedding", change, accepted) for change, accepted in EMBEDDING_BODIES),
    *(("token_check", change, accepted) for change, accepted in TOKEN_CHECK_BODIES),
    *(("responses", change, accepted) for change, accepted in RESPONSES_BODIES),
])
def test_documented_request_bodies_match_what_the_server_accepts(app, spec, kind, change, accepted):
    body = {**BASE_BODIES[kind], **change}
    schema = app.extensions["schemas"][kind]
    assert loads(schema, body) == accepted, "the server's verdict changed"
    root = {**to_json_schema(component(spec, COMPONENTS[kind])), "components": to_json_schema(spec["components"])}
    assert Draft4Validator(root).is_valid(body) == accepted


def loads(schema, body: dict) -> bool:
    """The server's verdict: loaded whole (a Responses request is judged by the chat schema in its post_load,
    which marshmallow's validate() skips)."""
    try:
        schema.load(body)
    except ValidationError:
        return False
    return True


# --- real responses conform to the documented ones ---------------------------------------------------------------------

def chat(client, path="/v1/chat/completions", **body):
    return client.post(path, json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body})


def test_probes_and_this_document(client, cluster, spec):
    assert_response_conforms(spec, "/health", "get", client.get("/health"))
    cluster.serves()
    assert_response_conforms(spec, "/ready", "get", client.get("/ready"))
    metrics = client.get("/metrics")
    assert_response_conforms(spec, "/metrics", "get", metrics)
    assert_response_conforms(spec, "/openapi.json", "get", client.get("/openapi.json"))


def test_not_ready(client, cluster, spec):
    cluster.unreachable(f"{CONTROLLER}/list_models")
    response = client.get("/ready")
    assert response.status_code == 503
    assert_response_conforms(spec, "/ready", "get", response)


def test_models(client, cluster, upstream, spec):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.serves("meta-llama/Llama-2-7b-chat-hf", "vicuna")
    response = client.get("/v1/models")
    assert response.status_code == 200 and len(response.get_json()["data"]) == 2
    assert_response_conforms(spec, "/v1/models", "get", response)
    response = client.get("/v1/models/meta-llama/Llama-2-7b-chat-hf")
    assert response.status_code == 200
    assert_response_conforms(spec, "/v1/models/{model}", "get", response)
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert_response_conforms(spec, "/v1/models/{model}", "get", response)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat/completions"])
def test_chat_completion_with_and_without_logprobs(client, cluster, spec, path):
    cluster.chat_ready()
    cluster.generates("Hello", logprobs=WORKER_LOGPROBS)
    response = chat(client, path, logprobs=True, top_logprobs=1)
    assert response.status_code == 200 and response.get_json()["choices"][0]["logprobs"]["content"]
    assert_response_conforms(spec, path, "post", response)
    cluster.generates("Hello", finish_reason="length")
    response = chat(client, path, n=1)
    assert response.get_json()["choices"][0]["logprobs"] is None
    assert_response_conforms(spec, path, "post", response)


def test_chat_chunks(client, cluster, spec):
    cluster.chat_ready()
    first = {key: values[:1] for key, values in WORKER_LOGPROBS.items()}
    cluster.streams(frames({"text": "He", "error_code": 0, "logprobs": first, "finish_reason": None},
                           {"text": "Hello", "error_code": 0, "logprobs": WORKER_LOGPROBS, "finish_reason": "stop",
                            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}))
    response = chat(client, stream=True, logprobs=True, stream_options={"include_usage": True})
    events = assert_events_conform(spec, "/v1/chat/completions", response)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["logprobs"]["content"] and events[1]["usage"] is None
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 7
    chunk = events[1]  # one chat chunk, against the chunk component itself
    assert_conforms(spec, component(spec, "ChatCompletionChunk"), chunk)


def test_tool_calls_and_json_mode_responses(client, cluster, spec):
    ready(cluster, QWEN)
    cluster.generates("Checking.\n" + HERMES_TWO)
    response = chat(client, tools=TOOLS)
    assert response.get_json()["choices"][0]["finish_reason"] == "tool_calls"
    assert_response_conforms(spec, "/v1/chat/completions", "post", response)
    cluster.streams(text_frames(cumulative(HERMES_TWO)))
    events = assert_events_conform(spec, "/v1/chat/completions", chat(client, tools=TOOLS, stream=True))
    assert sum(len(e["choices"][0]["delta"].get("tool_calls", ())) for e in events if e.get("choices")) == 2
    cluster.generates("not JSON")  # twice: the retry
    response = chat(client, response_format={"type": "json_object"})
    assert response.status_code == 502
    assert_response_conforms(spec, "/v1/chat/completions", "post", response)


def test_chat_chunks_without_usage_and_a_closing_chunk_without_text(client, cluster, spec):
    cluster.chat_ready()
    cluster.streams(text_frames(["Hi", "Hi"], finish_reason="length"))
    events = assert_events_conform(spec, "/v1/chat/completions", chat(client, stream=True))
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all("usage" not in event for event in events)


def test_an_error_event_mid_stream(client, cluster, spec):
    cluster.chat_ready()
    cluster.streams(frames({"text": "Hel", "error_code": 0}, {"text": "boom", "error_code": 50001}))
    events = assert_events_conform(spec, "/v1/chat/completions", chat(client, stream=True))
    assert events[-1]["object"] == "error"
    assert_conforms(spec, component(spec, "Error"), events[-1])


def ready_for_completion(cluster):
    cluster.serves(MODEL)
    cluster.routes()
    cluster.template()
    cluster.context(2048)  # max_tokens fits whatever the prompt: no /count_token call


def test_completion_with_echoed_logprobs(client, cluster, spec):
    ready_for_completion(cluster)
    logprobs = {"text_offset": [0, 4], "token_logprobs": [None, -0.5], "tokens": ["Once", " upon"],
                "top_logprobs": [{}, {" upon": -0.5}]}
    cluster.generates("Once upon a time", logprobs=logprobs)
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once", "echo": True, "logprobs": 1})
    assert response.status_code == 200 and response.get_json()["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert_response_conforms(spec, "/v1/completions", "post", response)


def test_completion_chunks(client, cluster, spec):
    ready_for_completion(cluster)
    lp = {"text_offset": [0, 1], "token_logprobs": [-0.1, -0.2], "tokens": ["a", "b"], "top_logprobs": [{}, {}]}
    cluster.streams(frames({"text": "a", "error_code": 0, "logprobs": {k: v[:1] for k, v in lp.items()}},
                           {"text": "ab", "error_code": 0, "logprobs": lp, "finish_reason": "length"}))
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "stream": True, "logprobs": 0,
                                                    "stream_options": {"include_usage": True}})
    events = assert_events_conform(spec, "/v1/completions", response)
    assert [event["choices"][0]["finish_reason"] for event in events[:-1]] == [None, "length"]
    assert_conforms(spec, component(spec, "CompletionChunk"), events[0])  # one completion chunk


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings(client, cluster, upstream, spec, encoding_format):
    cluster.serves(MODEL)  # listed and picked once: both are cached
    cluster.routes()
    for _ in range(2):
        upstream.post(f"{WORKER}/worker_get_embeddings", json={"embedding": [[0.1, 0.2, 0.3]], "token_num": 1})
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "a", "encoding_format": encoding_format})
    assert response.status_code == 200
    assert isinstance(response.get_json()["data"][0]["embedding"], list if encoding_format == "float" else str)
    assert_response_conforms(spec, "/v1/embeddings", "post", response)
    response = client.post(f"/v1/engines/{MODEL}/embeddings", json={"input": "a", "encoding_format": encoding_format})
    assert response.status_code == 200
    assert_response_conforms(spec, "/v1/engines/{model}/embeddings", "post", response)


def test_token_check_with_a_known_and_an_unknown_context(client, cluster, spec):
    cluster.serves(MODEL)
    cluster.routes()
    cluster.context(None)
    cluster.counts(4)
    response = client.post("/api/v1/token_check", json={"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 1}]})
    assert response.get_json() == {"prompts": [{"fits": True, "tokenCount": 4, "contextLength": None}]}
    assert_response_conforms(spec, "/api/v1/token_check", "post", response)


def test_error_bodies(config, cluster, spec):
    client = create_app({**config, "API_KEYS": ("k",)}, environ={}).test_client()
    key = {"Authorization": "Bearer k"}
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": "hi"})
    assert response.status_code == 401
    assert_response_conforms(spec, "/v1/chat/completions", "post", response)

    response = client.post("/v1/chat/completions", headers=key, json={"model": MODEL, "messages": "hi", "n": 0})
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "n"
    assert_response_conforms(spec, "/v1/chat/completions", "post", response)

    response = client.post("/v1/completions", headers=key, data="{not json")
    assert response.status_code == 400 and response.get_json()["error"]["param"] is None
    assert_response_conforms(spec, "/v1/completions", "post", response)

    cluster.serves("other")
    response = client.post("/v1/embeddings", headers=key, json={"model": "nope", "input": "a"})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "model_not_found"
    assert_response_conforms(spec, "/v1/embeddings", "post", response)

    response = client.post("/api/v1/token_check", headers=key, json={"prompts": [{"model": "a" * 20_000_000}]})
    assert response.status_code == 413
    assert_response_conforms(spec, "/api/v1/token_check", "post", response)


@pytest.mark.parametrize("kind, status", [("unavailable", 503), ("timeout", 504), ("bad_response", 502),
                                          ("worker_error", 500)])
def test_upstream_error_bodies(client, spec, monkeypatch, kind, status):
    def fail(*args):
        raise UpstreamError(kind, "upstream said no", error_code=50001 if kind == "worker_error" else None)

    monkeypatch.setattr("app.serving.chat.create_chat_completion", fail)
    response = chat(client)
    assert response.status_code == status
    assert_response_conforms(spec, "/v1/chat/completions", "post", response)


def test_the_controller_unreachable_on_a_listing(client, cluster, upstream, spec):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", body=requests.ConnectionError("refused"))
    upstream.post(f"{CONTROLLER}/list_models", body=requests.ConnectionError("refused"))
    response = client.get("/v1/models")
    assert response.status_code in (502, 503)
    assert_response_conforms(spec, "/v1/models", "get", response)


# --- the Responses API ------------------------------------------------------------------------------------------

def assert_named_events_conform(spec: dict, response) -> list:
    """Every named event of a streamed response conforms to the documented event schemas; returns the events."""
    from tests.test_responses_api import named_events
    documented = documented_response(spec, "/v1/responses", "post", response.status_code)
    assert response.mimetype == "text/event-stream"
    events = named_events(response.get_data())
    for event in events:
        assert_conforms(spec, documented["content"]["text/event-stream"]["x-sse-data-schema"], event)
    return events


def test_responses_whole_and_streamed(client, cluster, spec):
    ready(cluster, QWEN)
    cluster.generates("Checking.\n" + HERMES_TWO)
    tools = [{"type": "function", "name": tool["function"]["name"], "parameters": tool["function"]["parameters"]}
             for tool in TOOLS]
    response = client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "tools": tools,
                                                  "text": {"format": {"type": "json_object"}}})
    assert [item["type"] for item in response.get_json()["output"]] == ["message", "function_call", "function_call"]
    assert_response_conforms(spec, "/v1/responses", "post", response)
    cluster.generates("Hello", finish_reason="length")
    response = client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 3})
    assert response.get_json()["status"] == "incomplete"
    assert_response_conforms(spec, "/v1/responses", "post", response)
    cluster.streams(text_frames(cumulative("Checking.\n" + HERMES_TWO)))
    events = assert_named_events_conform(spec, client.post("/v1/responses", json={
        "model": MODEL, "input": "Hi", "tools": tools, "stream": True}))
    assert events[-1]["type"] == "response.completed"
    cluster.streams(frames({"text": "Hel", "error_code": 0}, {"text": "boom", "error_code": 50001}))
    events = assert_named_events_conform(spec, client.post("/v1/responses", json={
        "model": MODEL, "input": "Hi", "stream": True}))
    assert [event["type"] for event in events[-2:]] == ["response.failed", "error"]


def test_responses_errors_and_stored_responses(client, spec):
    response = client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "previous_response_id": "resp_1"})
    assert response.status_code == 400
    assert_response_conforms(spec, "/v1/responses", "post", response)
    for method, path, documented in (("get", "/v1/responses/resp_1", "/v1/responses/{response_id}"),
                                     ("delete", "/v1/responses/resp_1", "/v1/responses/{response_id}"),
                                     ("get", "/v1/responses/resp_1/input_items",
                                      "/v1/responses/{response_id}/input_items"),
                                     ("post", "/v1/responses/resp_1/cancel", "/v1/responses/{response_id}/cancel")):
        response = getattr(client, method)(path)
        assert response.status_code == 404
        assert_response_conforms(spec, documented, method, response)


def test_a_keys_429_is_documented(config, tmp_path, cluster):
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "one"\nkey = "sk-one"\nrequests_per_minute = 1\n')
    app = create_app({**config, "API_KEYS_FILE": str(keys), "RATE_LIMIT_DIR": str(tmp_path / "limits")}, environ={})
    spec = build_spec(app)
    client, key = app.test_client(), {"Authorization": "Bearer sk-one"}
    cluster.serves("other")
    assert client.post("/v1/embeddings", headers=key, json={"model": "nope", "input": "a"}).status_code == 404
    response = client.post("/v1/embeddings", headers=key, json={"model": "nope", "input": "a"})
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert_response_conforms(spec, "/v1/embeddings", "post", response)
