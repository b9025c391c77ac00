"""Spec conformance: real responses and every stream chunk of the gateway (real gunicorn, a simulated worker)
validate against OpenAI's published schemas, so clients generated from them in any language accept the replies.

The schemas are `shared/spec/` beside the checkout (or above a worktree), or the folder OPENAI_SPEC names; without
them the tier is skipped, saying where it looked.

The published schema is stricter than OpenAI's own API in a few places (shared/spec/README.md lists them); each is
relaxed once, in QUIRKS or CHUNK_QUIRKS below, with the reason. Everything else is validated as published.
"""
from __future__ import annotations

import copy
import json

import pytest
import requests

from harness import sse
from harness.gateway import over_simulated_worker
from tests.published_spec import SPEC, SPEC_FILE, assert_valid, needs_spec, nullable, read_nullable

KEY = "sk-spec"
MODEL = "sim-model"

pytestmark = needs_spec


# --- the published schemas, with the README's quirks relaxed ------------------------------------------------------


# (schema, path inside it, relaxation, reason): applied to every response the schema validates.
QUIRKS = [
    ("CreateCompletionResponse",
     ("properties", "choices", "items", "properties", "logprobs", "anyOf", 0, "properties", "token_logprobs",
      "items"), nullable,
     "With `echo`, the prompt's first token has no logprob: token_logprobs[0] is null (OpenAI's API does the same)."),
    ("Embedding", ("properties", "embedding"),
     lambda node: {"anyOf": [node, {"type": "string", "contentEncoding": "base64"}]},
     "With encoding_format base64, the embedding is a base64 string, not an array of numbers."),
]

# A completion stream chunk is documented with CreateCompletionResponse too; these apply to chunks only.
CHUNK = "CompletionStreamChunk"
CHUNK_QUIRKS = [
    (("properties", "choices", "items", "properties", "finish_reason"), nullable,
     "Every chunk but a choice's last has finish_reason null; the schema's finish_reason is not nullable."),
    (("properties", "usage"), nullable,
     "With include_usage, every chunk but the usage chunk has usage: null; CompletionUsage is not nullable."),
]


def relax(schema: dict, path: tuple, relaxation) -> None:
    *parents, last = path
    node = schema
    for key in parents:
        node = node[key]
    node[last] = relaxation(node[last])


@pytest.fixture(scope="module")
def published() -> dict:
    document = json.loads(SPEC_FILE.read_text())
    schemas = document["components"]["schemas"]
    for name, path, relaxation, _reason in QUIRKS:
        relax(schemas[name], path, relaxation)
    schemas[CHUNK] = copy.deepcopy(schemas["CreateCompletionResponse"])
    for path, relaxation, _reason in CHUNK_QUIRKS:
        relax(schemas[CHUNK], path, relaxation)
    return read_nullable(document)


def test_the_relaxed_quirks_are_the_ones_the_readme_lists():
    """read_nullable, QUIRKS and CHUNK_QUIRKS: one each for the README's five; a new quirk there fails here."""
    quirks = (SPEC / "README.md").read_text().split("\n- ")[1:]  # the bullets, continuation lines included
    assert len(quirks) == 1 + len(QUIRKS) + len(CHUNK_QUIRKS)
    for words in ("nullable: true", "finish_reason", "usage: null", "token_logprobs", "base64"):
        assert any(words in quirk for quirk in quirks), words


def test_a_relaxed_schema_still_rejects_what_the_quirk_does_not_cover(published):
    """The relaxations stay narrow: a whole completion still needs a finish_reason, usage is still an object."""
    whole = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": MODEL,
             "choices": [{"index": 0, "text": "a", "logprobs": None, "finish_reason": None}]}
    with pytest.raises(AssertionError, match="finish_reason"):
        assert_valid(published, "CreateCompletionResponse", whole)
    with pytest.raises(AssertionError, match="usage"):
        assert_valid(published, CHUNK, {**whole, "usage": 3})


# --- the gateway -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(run_dir):
    # A token delay, so that frames arrive one by one and every stream has several chunks to check.
    with over_simulated_worker(run_dir, "spec", "--tokens", "5", "--token-delay", "0.005",
                               API_KEYS=KEY) as (gateway, _):
        yield gateway


@pytest.fixture(scope="module")
def http(gateway):
    with requests.Session() as session:
        session.trust_env = False  # 127.0.0.1 only, never a proxy from the environment
        session.headers["Authorization"] = f"Bearer {KEY}"
        yield session


def call(http, gateway, method: str, path: str, status: int = 200, **body) -> requests.Response:
    response = http.request(method, f"{gateway.url}{path}", json=body or None, timeout=20)
    assert response.status_code == status, response.text
    return response


def events(response: requests.Response) -> list[dict]:
    """The JSON of every `data:` event of a stream, checking the framing and that it ends with `data: [DONE]`."""
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return sse.parse_json(response.content)[:-1]


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say something"}]}
CHAT_PATHS = ["/v1/chat/completions", "/api/v1/chat/completions"]


def test_models(published, http, gateway):
    listing = call(http, gateway, "GET", "/v1/models").json()
    assert [model["id"] for model in listing["data"]] == [MODEL]
    assert_valid(published, "ListModelsResponse", listing)
    assert_valid(published, "Model", call(http, gateway, "GET", f"/v1/models/{MODEL}").json())


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("extra", [{}, {"n": 2}, {"logprobs": True, "top_logprobs": 2}], ids=["n1", "n2", "logprobs"])
def test_chat_completion(published, http, gateway, path, extra):
    body = call(http, gateway, "POST", path, **CHAT, **extra).json()
    assert len(body["choices"]) == extra.get("n", 1)
    assert body["choices"][0]["message"]["refusal"] is None
    assert (body["choices"][0]["logprobs"] is not None) == ("logprobs" in extra)
    assert_valid(published, "CreateChatCompletionResponse", body)


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("extra", [{}, {"n": 2, "stream_options": {"include_usage": True}},
                                   {"logprobs": True, "top_logprobs": 2, "stream_options": {"include_usage": True}}],
                         ids=["plain", "n2-usage", "logprobs-usage"])
def test_chat_chunks(published, http, gateway, path, extra):
    chunks = events(call(http, gateway, "POST", path, **CHAT, **extra, stream=True))
    assert len(chunks) > 3
    for chunk in chunks:
        assert_valid(published, "CreateChatCompletionStreamResponse", chunk)
    assert {choice["index"] for chunk in chunks for choice in chunk["choices"]} == set(range(extra.get("n", 1)))
    if "stream_options" in extra:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert all(chunk["usage"] is None for chunk in chunks[:-1])


COMPLETIONS = [{}, {"n": 2, "prompt": ["One", "Two"]}, {"logprobs": 1}, {"echo": True, "logprobs": 1}]
COMPLETION_IDS = ["plain", "prompts-n2", "logprobs", "echo-logprobs"]


@pytest.mark.parametrize("extra", COMPLETIONS, ids=COMPLETION_IDS)
def test_completion(published, http, gateway, extra):
    request = {"model": MODEL, "prompt": "Once upon", **extra}
    body = call(http, gateway, "POST", "/v1/completions", **request).json()
    prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
    assert len(body["choices"]) == len(prompts) * request.get("n", 1)
    if extra.get("echo"):
        assert body["choices"][0]["logprobs"]["token_logprobs"][0] is None  # the quirk is exercised
    assert_valid(published, "CreateCompletionResponse", body)


@pytest.mark.parametrize("extra", [*COMPLETIONS[:3], {"logprobs": 1, "stream_options": {"include_usage": True}}],
                         ids=[*COMPLETION_IDS[:3], "logprobs-usage"])
def test_completion_chunks(published, http, gateway, extra):
    chunks = events(call(http, gateway, "POST", "/v1/completions",
                         **{"model": MODEL, "prompt": "Once upon", **extra, "stream": True}))
    assert len(chunks) > 3 and chunks[0]["choices"][0]["finish_reason"] is None
    for chunk in chunks:
        assert_valid(published, CHUNK, chunk)
    if "stream_options" in extra:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("path", ["/v1/embeddings", f"/v1/engines/{MODEL}/embeddings"])
@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings(published, http, gateway, path, encoding_format):
    body = call(http, gateway, "POST", path, model=MODEL, input=["a", "b c"], encoding_format=encoding_format).json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert isinstance(body["data"][0]["embedding"], list if encoding_format == "float" else str)
    assert_valid(published, "CreateEmbeddingResponse", body)


@pytest.mark.parametrize("method, path, status, body", [
    ("GET", "/v1/models/no-such-model", 404, {}),
    ("POST", "/v1/chat/completions", 404, {**CHAT, "model": "no-such-model"}),
    ("POST", "/v1/chat/completions", 400, {**CHAT, "n": 0}),
    ("POST", "/v1/completions", 400, {"model": MODEL, "prompt": "x", "suffix": "tail"}),
    ("POST", "/v1/embeddings", 400, {"model": MODEL, "input": ""}),
    ("GET", "/v1/nothing-here", 404, {}),
], ids=["unknown-model", "chat-unknown-model", "chat-bad-n", "completion-suffix", "empty-input", "no-route"])
def test_errors(published, http, gateway, method, path, status, body):
    assert_valid(published, "ErrorResponse", call(http, gateway, method, path, status, **body).json())


def test_missing_api_key(published, gateway):
    response = requests.get(f"{gateway.url}/v1/models", timeout=10)
    assert response.status_code == 401
    assert_valid(published, "ErrorResponse", response.json())


def test_an_error_mid_stream(published, http, gateway):
    """A worker failure after the first chunk: the error event is an ErrorResponse too."""
    body = {**CHAT, "messages": [{"role": "user", "content": "[[fault:error]] Say something"}], "stream": True}
    chunks = events(call(http, gateway, "POST", "/v1/chat/completions", **body))
    for chunk in chunks[:-1]:
        assert_valid(published, "CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["object"] == "error"
    assert_valid(published, "ErrorResponse", chunks[-1])
