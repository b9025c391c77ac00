"""Hostile input against the live gateway (issue 7, part 2): every case gets the documented 4xx and error body,
and the server keeps serving after each one.

Requests are sent byte-exact (http.client, or a raw socket where gunicorn answers before the app runs), against
the session's `gateway` (gunicorn, 2 processes, MAX_REQUEST_BODY_BYTES = 1 MiB) in front of `sim_worker` (context
512 tokens). After every case GET /health must answer 200; the last test of the module runs a real chat completion.

Expected statuses come from README.md's Errors table: 400 for bodies that are not JSON objects or violate the schema
(FastChat code 40001), 400 with 40302 for values out of range, 400 `unsupported_parameter`, 400
`context_length_exceeded` (40303), 404 `model_not_found` (40301), routing 404/405, 413 over the body limit; and
431/414/400 from gunicorn for oversized or broken request heads ("refused before the app runs": gunicorn's own page).
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests

from harness import sse

MODEL = "sim-model"
LIMIT = 1024 * 1024  # the fixture's MAX_REQUEST_BODY_BYTES
TIMEOUT = 30
ENVELOPE = {"object", "message", "code", "error"}
DETAIL = {"message", "type", "param", "code"}
ANY = object()  # "do not check this field"

CHAT = "/v1/chat/completions"
FASTCHAT_CHAT = "/api/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
TOKEN_CHECK = "/api/v1/token_check"

CHAT_BASE = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
COMPLETION_BASE = {"model": MODEL, "prompt": "hello"}
EMBEDDING_BASE = {"model": MODEL, "input": "hello"}
TOKEN_CHECK_BASE = {"prompts": [{"model": MODEL, "prompt": "hello", "max_tokens": 10}]}

COUNTS = {"cases": 0, "rejected_4xx": 0, "accepted": 0, "server_errors": 0, "health_checks": 0,
          "stalled_connections": 0, "starved": 0}


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def chat(**fields) -> bytes:
    return j({**CHAT_BASE, **fields})


def completion(**fields) -> bytes:
    return j({**COMPLETION_BASE, **fields})


def embedding(**fields) -> bytes:
    return j({**EMBEDDING_BASE, **fields})


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the error it must get. `param` is the exact error.param, or a prefix ending in '*'."""

    id: str
    method: str
    path: str
    body: bytes | None
    status: int
    content_type: str | None = "application/json"
    param: object = ANY
    code: object = ANY
    fastchat: object = ANY
    type: object = "invalid_request_error"


def bad(id, path, body, *, status=400, param=ANY, code=ANY, fastchat=ANY, **kw) -> Hostile:
    return Hostile(id, kw.pop("method", "POST"), path, body, status, param=param, code=code, fastchat=fastchat, **kw)


# --- the issue's list, one row per hostile request ----------------------------------------------------------------

NESTED_LIST = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
NESTED_IN_FIELD = b'{"model": "sim-model", "messages": "hi", "metadata": ' + NESTED_LIST + b"}"
MULTIPART = (b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nsim-model\r\n'
             b'--xyz\r\nContent-Disposition: form-data; name="messages"\r\n\r\nhello\r\n--xyz--\r\n')
CHAT_JSON = chat()

CASES: list[Hostile] = [
    # malformed / truncated JSON
    bad("malformed-json", CHAT, b"{model: sim-model}", param=None, fastchat=40001),
    bad("truncated-json-object", CHAT, CHAT_JSON[: len(CHAT_JSON) // 2], param=None, fastchat=40001),
    bad("truncated-json-key", CHAT, b'{"model": ', param=None, fastchat=40001),
    bad("truncated-json-string", CHAT, b'{"model": "sim-mo', param=None, fastchat=40001),
    bad("trailing-garbage", CHAT, CHAT_JSON + b" garbage", param=None, fastchat=40001),
    bad("two-json-documents", CHAT, CHAT_JSON + CHAT_JSON, param=None, fastchat=40001),
    bad("single-quoted-json", CHAT, b"{'model': 'sim-model', 'messages': 'hi'}", param=None),
    bad("empty-body", CHAT, b"", param=None, fastchat=40001),
    bad("whitespace-body", CHAT, b"   \r\n\t ", param=None),
    bad("json-null-body", CHAT, b"null", param=None),
    bad("json-array-body", CHAT, b"[]", param=None),
    bad("json-string-body", CHAT, b'"hello"', param=None),
    bad("json-number-body", COMPLETIONS, b"42", param=None),
    bad("empty-object", CHAT, b"{}", param=ANY),
    bad("empty-body-completions", COMPLETIONS, b"", param=None),
    bad("empty-body-embeddings", EMBEDDINGS, b"", param=None),
    bad("empty-body-token-check", TOKEN_CHECK, b"", param=None),
    bad("empty-body-fastchat-chat", FASTCHAT_CHAT, b"", param=None),
    bad("empty-body-engines", "/v1/engines/sim-model/embeddings", b"", param=None),
    # wrong content types (the body is parsed as JSON whatever the type says, so non-JSON bodies are a 400)
    bad("multipart-form-data", CHAT, MULTIPART, content_type="multipart/form-data; boundary=xyz", param=None),
    bad("form-urlencoded", CHAT, b"model=sim-model&messages=hello",
        content_type="application/x-www-form-urlencoded", param=None),
    bad("text-plain-not-json", CHAT, b"model: sim-model\nmessages: hello", content_type="text/plain", param=None),
    bad("xml", CHAT, b"<chat><model>sim-model</model></chat>", content_type="application/xml", param=None),
    bad("octet-stream-binary", CHAT, bytes(range(256)), content_type="application/octet-stream", param=None),
    bad("no-content-type-not-json", CHAT, b"hello", content_type=None, param=None),
    # deeply nested JSON
    bad("nested-list-100k", CHAT, NESTED_LIST, param=None),
    bad("nested-object-100k", CHAT, NESTED_OBJECT, param=None),
    bad("nested-100k-in-field", CHAT, NESTED_IN_FIELD, param=None),
    bad("nested-content-parts", CHAT, chat(messages=[{"role": "user", "content": [[[[[[[["deep"]]]]]]]]}]),
        param="messages[0].content*"),
    # huge bodies (the fixture's limit is 1 MiB)
    bad("body-just-over-limit", CHAT, chat(messages=[{"role": "user", "content": "a" * LIMIT}])[: LIMIT + 1],
        status=413, param=None, fastchat=40001),
    bad("body-far-over-limit", CHAT, b'{"model": "' + b"a" * (8 * LIMIT) + b'"}', status=413, param=None),
    # enormous n / max_tokens / stop lists / messages / prompts (caps: MAX_N 128, MAX_TOKENS_CAP 131072, 16 stops,
    # 2048 messages, 2048 prompts and inputs)
    bad("n-1e9", CHAT, chat(n=10**9), param="n", fastchat=40302),
    bad("n-zero", CHAT, chat(n=0), param="n", fastchat=40302),
    bad("n-negative", CHAT, chat(n=-1), param="n", fastchat=40302),
    bad("n-129", CHAT, chat(n=129), param="n", fastchat=40302),
    bad("n-1e9-completions", COMPLETIONS, completion(n=10**9), param="n", fastchat=40302),
    bad("max-tokens-1e12", CHAT, chat(max_tokens=10**12), param="max_tokens", fastchat=40302),
    bad("max-completion-tokens-1e12", CHAT, chat(max_completion_tokens=10**12), param="max_completion_tokens",
        fastchat=40302),
    bad("max-tokens-1e12-completions", COMPLETIONS, completion(max_tokens=10**12), param="max_tokens",
        fastchat=40302),
    bad("max-tokens-zero", CHAT, chat(max_tokens=0), param="max_tokens", fastchat=40302),
    bad("max-tokens-negative-huge", CHAT, chat(max_tokens=-(10**30)), param="max_tokens", fastchat=40302),
    bad("max-tokens-over-context", CHAT, chat(max_tokens=100_000), param="messages",
        code="context_length_exceeded", fastchat=40303),
    bad("stop-10000-strings", CHAT, chat(stop=[f"stop-{i}" for i in range(10_000)]), param="stop", fastchat=40302),
    bad("stop-17-strings", CHAT, chat(stop=[f"s{i}" for i in range(17)]), param="stop", fastchat=40302),
    bad("stop-10000-completions", COMPLETIONS, completion(stop=[f"s{i}" for i in range(10_000)]), param="stop",
        fastchat=40302),
    bad("messages-10000", CHAT, chat(messages=[{"role": "user", "content": "m"}] * 10_000), param="messages",
        fastchat=40302),
    bad("prompts-3000", COMPLETIONS, completion(prompt=["p"] * 3000), param="prompt", fastchat=40302),
    bad("inputs-3000", EMBEDDINGS, embedding(input=["i"] * 3000), param="input", fastchat=40302),
    bad("token-check-3000", TOKEN_CHECK, j({"prompts": TOKEN_CHECK_BASE["prompts"] * 3000}), param="prompts*"),
    bad("top-logprobs-21", CHAT, chat(logprobs=True, top_logprobs=21), param="top_logprobs", fastchat=40302),
    bad("logprobs-6-completions", COMPLETIONS, completion(logprobs=6), param="logprobs", fastchat=40302),
    bad("best-of-21", COMPLETIONS, completion(best_of=21), param="best_of", fastchat=40302),
    bad("temperature-999999", CHAT, chat(temperature=999999), param="temperature", fastchat=40302),
    bad("top-p-negative", CHAT, chat(top_p=-1), param="top_p", fastchat=40302),
    bad("top-k-zero", CHAT, chat(top_k=0), param="top_k", fastchat=40302),
    bad("repetition-penalty-zero", CHAT, chat(repetition_penalty=0), param="repetition_penalty", fastchat=40302),
    # huge numbers, NaN and Infinity (Python's json reads these literals; the gateway must refuse them)
    bad("temperature-1e400", CHAT, CHAT_JSON[:-1] + b', "temperature": 1e400}', param="temperature"),
    bad("top-p-minus-1e400", CHAT, CHAT_JSON[:-1] + b', "top_p": -1e400}', param="top_p"),
    bad("max-tokens-1e400", CHAT, CHAT_JSON[:-1] + b', "max_tokens": 1e400}', param="max_tokens"),
    bad("n-400-digit-integer", CHAT, CHAT_JSON[:-1] + b', "n": 1' + b"0" * 400 + b"}", param="n", fastchat=40302),
    bad("seed-5000-digit-integer", CHAT, CHAT_JSON[:-1] + b', "seed": 1' + b"0" * 5000 + b"}", param=ANY),
    bad("temperature-nan", CHAT, CHAT_JSON[:-1] + b', "temperature": NaN}', param="temperature"),
    bad("temperature-infinity", CHAT, CHAT_JSON[:-1] + b', "temperature": Infinity}', param="temperature"),
    bad("presence-penalty-minus-infinity", CHAT, CHAT_JSON[:-1] + b', "presence_penalty": -Infinity}',
        param="presence_penalty"),
    bad("max-tokens-nan", CHAT, CHAT_JSON[:-1] + b', "max_tokens": NaN}', param="max_tokens"),
    bad("n-infinity-completions", COMPLETIONS, j(COMPLETION_BASE)[:-1] + b', "n": Infinity}', param="n"),
    bad("dimensions-nan", EMBEDDINGS, j(EMBEDDING_BASE)[:-1] + b', "dimensions": NaN}', param="dimensions"),
    bad("token-check-max-tokens-nan", TOKEN_CHECK,
        b'{"prompts": [{"model": "sim-model", "prompt": "hi", "max_tokens": NaN}]}', param="prompts*"),
    # invalid UTF-8
    bad("invalid-utf8-in-string", CHAT, b'{"model": "sim-model", "messages": "\xff\xfe\xc3\x28 hello"}', param=None),
    bad("invalid-utf8-overlong", CHAT, b'{"model": "sim-model", "messages": "\xc0\xaf"}', param=None),
    bad("latin1-declared", CHAT, '{"model": "sim-model", "messages": "caf\u00e9"}'.encode("latin-1"),
        content_type="application/json; charset=latin-1", param=None),
    # unknown and unsupported roles
    bad("role-unknown", CHAT, chat(messages=[{"role": "hacker", "content": "hi"}]), param="messages[0].role",
        fastchat=40001, code=None),
    bad("role-empty", CHAT, chat(messages=[{"role": "", "content": "hi"}]), param="messages[0].role"),
    bad("role-uppercase", CHAT, chat(messages=[{"role": "USER", "content": "hi"}]), param="messages[0].role"),
    bad("role-with-nul", CHAT, chat(messages=[{"role": "user\u0000", "content": "hi"}]), param="messages[0].role"),
    # role "tool" is served now: without tool_call_id it is a 400 naming that field.
    bad("role-tool", CHAT, chat(messages=[{"role": "tool", "content": "hi"}]), param="messages[0].tool_call_id"),
    bad("role-tool-unknown-call", CHAT, chat(messages=[{"role": "tool", "content": "hi", "tool_call_id": "x"}]),
        param="messages[0].tool_call_id"),
    bad("role-function", CHAT, chat(messages=[{"role": "function", "content": "hi"}]), param="messages[0].role",
        code="unsupported_parameter"),
    bad("role-second-message", CHAT,
        chat(messages=[{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]),
        param="messages[1].role"),
    bad("role-unknown-fastchat", FASTCHAT_CHAT, chat(messages=[{"role": "hacker", "content": "hi"}]),
        param="messages[0].role"),
    # null where a value is required
    bad("model-null", CHAT, chat(model=None), param="model", fastchat=40001),
    bad("messages-null", CHAT, chat(messages=None), param="messages"),
    bad("content-null", CHAT, chat(messages=[{"role": "user", "content": None}]), param="messages[0].content"),
    bad("role-null", CHAT, chat(messages=[{"role": None, "content": "hi"}]), param="messages[0].role"),
    bad("message-null", CHAT, chat(messages=[None]), param="messages*"),
    bad("model-missing", CHAT, j({"messages": "hi"}), param="model"),
    bad("messages-missing", CHAT, j({"model": MODEL}), param="messages"),
    bad("prompt-null", COMPLETIONS, completion(prompt=None), param="prompt"),
    bad("prompt-missing", COMPLETIONS, j({"model": MODEL}), param="prompt"),
    bad("completions-model-null", COMPLETIONS, completion(model=None), param="model"),
    bad("input-null", EMBEDDINGS, embedding(input=None), param="input"),
    bad("embeddings-model-null", EMBEDDINGS, embedding(model=None), param="model"),
    bad("prompts-null", TOKEN_CHECK, j({"prompts": None}), param="prompts"),
    bad("token-check-model-null", TOKEN_CHECK, j({"prompts": [{"model": None, "prompt": "hi", "max_tokens": 1}]}),
        param="prompts*"),
    # duplicated keys: whichever value wins, it is refused
    bad("duplicate-key-n", CHAT, CHAT_JSON[:-1] + b', "n": 0, "n": 1000}', param="n", fastchat=40302),
    bad("duplicate-key-model", CHAT, b'{"model": null, "model": 7, "messages": "hi"}', param="model"),
    # unsupported content parts and parameters
    bad("image-url-part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]), param="messages[0].content*",
        code="unsupported_parameter"),
    # tools and response_format are served now: malformed ones are a 400 naming the field (vLLM CVE-2025-48944).
    bad("tool-name", CHAT, chat(tools=[{"type": "function", "function": {"name": "rm -rf"}}]),
        param="tools[0].function.name"),
    bad("tool-parameters-not-object", CHAT, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": "x"}}]), param="tools[0].function.parameters"),
    bad("tool-parameters-deep", CHAT, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": json.loads('{"items":' * 40 + '{}' + '}' * 40)}}]),
        param="tools[0].function.parameters", fastchat=40302),
    bad("tool-parameters-remote-ref", CHAT, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"$ref": "http://169.254.169.254/latest"}}}]), param="tools[0].function.parameters"),
    bad("tools-too-many", CHAT, chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]),
        param="tools", fastchat=40302),
    bad("tool-choice-not-offered", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}],
                                              tool_choice={"type": "function", "function": {"name": "g"}}),
        param="tool_choice"),
    bad("response-format-json-schema-missing", CHAT, chat(response_format={"type": "json_schema"}),
        param="response_format.json_schema"),
    bad("logit-bias", CHAT, chat(logit_bias={"50256": -100}), param="logit_bias", code="unsupported_parameter"),
    bad("suffix", COMPLETIONS, completion(suffix="x"), param="suffix", code="unsupported_parameter"),
    bad("stream-options-without-stream", CHAT, chat(stream_options={"include_usage": True}),
        param="stream_options"),
    bad("best-of-with-stream", COMPLETIONS, completion(best_of=2, n=1, stream=True), param="best_of"),
    # unknown models, unknown paths, wrong methods
    bad("model-unknown", CHAT, chat(model="no-such-model"), status=404, param="model", code="model_not_found",
        fastchat=40301),
    bad("model-with-nul", CHAT, chat(model="sim-model\u0000"), status=404, param="model", code="model_not_found"),
    bad("model-empty", CHAT, chat(model=""), status=404, param="model", code="model_not_found"),
    bad("model-1mb-name", CHAT, chat(model="m" * (LIMIT - 200)), status=404, param="model",
        code="model_not_found"),
    bad("unknown-path", "/v1/nothing-here", None, status=404, method="GET", param=None),
    bad("unknown-path-post", "/v1/chat/completionz", CHAT_JSON, status=404, param=None),
    bad("unknown-root-path", "/admin", None, status=404, method="GET", param=None),
    bad("fastchat-worker-path", "/worker_generate_stream", CHAT_JSON, status=404, param=None),
    bad("get-chat-with-body", CHAT, CHAT_JSON, status=405, method="GET", param=None),
    bad("put-chat", CHAT, CHAT_JSON, status=405, method="PUT", param=None),
    bad("delete-models", "/v1/models", None, status=405, method="DELETE", param=None),
    bad("patch-completions", COMPLETIONS, completion(), status=405, method="PATCH", param=None),
    bad("post-models", "/v1/models", CHAT_JSON, status=405, param=None),
    bad("post-health", "/health", b"{}", status=405, param=None),
    # path traversal in /v1/models/{model}: a 404, never a file
    bad("traversal-plain", "/v1/models/../../etc/passwd", None, status=404, method="GET"),
    bad("traversal-encoded-slash", "/v1/models/..%2F..%2Fetc%2Fpasswd", None, status=404, method="GET"),
    bad("traversal-encoded-dots", "/v1/models/%2e%2e/%2e%2e/etc/passwd", None, status=404, method="GET"),
    bad("traversal-double-encoded", "/v1/models/..%252F..%252Fetc%252Fpasswd", None, status=404, method="GET"),
    bad("traversal-absolute", "/v1/models//etc/passwd", None, status=404, method="GET"),
    bad("traversal-backslash", "/v1/models/..%5C..%5Cetc%5Cpasswd", None, status=404, method="GET"),
    bad("traversal-nul", "/v1/models/sim-model%00../../etc/passwd", None, status=404, method="GET"),
    bad("traversal-engines", "/v1/engines/..%2F..%2Fetc%2Fpasswd/embeddings", j({"input": "hi"}), status=404),
    bad("traversal-proc-environ", "/v1/models/..%2F..%2F..%2Fproc%2Fself%2Fenviron", None, status=404,
        method="GET"),
]


# --- wrong types for every field of chat, completions, embeddings and token_check ---------------------------------

_INT_WRONG = ["1", 1.5, True, [], {}]
_BOOL_WRONG = ["true", "false", 1, 0, 1.0, [], {}]
_STR_WRONG = [1, 1.5, True, [], {}]
_DICT_WRONG = ["x", 1, [], True]

SAMPLING_FIELDS = {
    "model": _STR_WRONG,
    "temperature": ["1", True, [], {}],
    "top_p": ["1", True, [], {}],
    "presence_penalty": ["1", True, [], {}],
    "frequency_penalty": ["1", True, [], {}],
    "repetition_penalty": ["1", True, [], {}],
    "top_k": _INT_WRONG,
    "n": _INT_WRONG,
    "max_tokens": _INT_WRONG,
    "seed": _INT_WRONG,
    "stop": [1, True, {}, [1], [None], [[]], ["ok", 2]],
    "stream": _BOOL_WRONG,
    "stream_options": _DICT_WRONG,
    "user": _STR_WRONG,
    "logit_bias": ["x", 1, [], True],
}
CHAT_FIELDS = {
    **SAMPLING_FIELDS,
    "messages": [1, True, {}, [], [1], ["hello"], [[]], [{"role": "user"}], [{"content": "hi"}],
                 [{"role": 1, "content": "hi"}], [{"role": "user", "content": 1}],
                 [{"role": "user", "content": {"text": "hi"}}], [{"role": "user", "content": [1]}],
                 [{"role": "user", "content": [{"type": "text", "text": 1}]}],
                 [{"role": "user", "content": [{"type": "text"}]}],
                 [{"role": "user", "content": "hi", "name": 1}]],
    "max_completion_tokens": _INT_WRONG,
    "logprobs": _BOOL_WRONG,
    "top_logprobs": _INT_WRONG,
    "tools": ["x", [{"type": "function"}], {"a": 1}],
    "tool_choice": ["required", {"type": "function"}],
    "functions": ["x", [{"name": "f"}]],
    "function_call": ["f", {"name": "f"}],
    "response_format": ["json", {"type": "xml"}, 1],
    "modalities": ["text", ["audio"], 1],
    "audio": [{}, "x", 1],
    "prediction": [{}, "x"],
    "web_search_options": [{}, "x"],
}
COMPLETION_FIELDS = {
    **SAMPLING_FIELDS,
    "prompt": [1, True, {}, [], [1.5], [None], [True], [[]], [["a"]], ["a", 1], [[1], "a"], [-1.5]],
    "echo": _BOOL_WRONG,
    "logprobs": ["1", 1.5, True, []],
    "best_of": _INT_WRONG,
    "use_beam_search": _BOOL_WRONG,
    "suffix": [1, [], {}],
}
EMBEDDING_FIELDS = {
    "model": _STR_WRONG,
    "input": [1, True, {}, [], [""], "", [1.5], [None], [[]], ["a", 1], [True]],
    "encoding_format": [1, "hex", [], "FLOAT"],
    "dimensions": ["1", 1.5, True, 0, -1],
    "user": _STR_WRONG,
}
TOKEN_CHECK_ITEMS = [
    "x", 1, {}, [], [1], [None], ["hi"],
    [{"model": 1, "prompt": "hi", "max_tokens": 1}],
    [{"model": MODEL, "prompt": 1, "max_tokens": 1}],
    [{"model": MODEL, "prompt": "hi", "max_tokens": "1"}],
    [{"model": MODEL, "prompt": "hi", "max_tokens": 1.5}],
    [{"model": MODEL, "prompt": "hi", "max_tokens": -1}],
    [{"model": MODEL, "prompt": "hi"}],
]


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


ENDPOINT_NAMES = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}


def _wrong_types() -> list[Hostile]:
    cases = []
    for path, base, table in ((CHAT, CHAT_BASE, CHAT_FIELDS), (COMPLETIONS, COMPLETION_BASE, COMPLETION_FIELDS),
                              (EMBEDDINGS, EMBEDDING_BASE, EMBEDDING_FIELDS)):
        for name, values in table.items():
            for value in values:
                body = {**base, name: value}
                if name == "stream_options":
                    body["stream"] = True  # so only the type of stream_options is wrong
                cases.append(bad(f"type-{ENDPOINT_NAMES[path]}-{name}={_short(value)}", path, j(body),
                                 param=f"{name}*"))
    for value in TOKEN_CHECK_ITEMS:
        cases.append(bad(f"type-token_check-prompts={_short(value)}", TOKEN_CHECK, j({"prompts": value}),
                         param="prompts*"))
    return cases


WRONG_TYPES = _wrong_types()


# --- inputs that are valid JSON and must be accepted or refused cleanly (never a 5xx) -----------------------------

@dataclass(frozen=True)
class Edge:
    id: str
    path: str
    body: bytes | None
    method: str = "POST"
    content_type: str | None = "application/json"
    statuses: tuple[int, ...] = (200, 400)


CONTROL = "".join(chr(c) for c in range(32)) + "\u007f\u0085\u2028\u2029\ufeff"
EDGES: list[Edge] = [
    Edge("nul-in-content", CHAT, chat(messages=[{"role": "user", "content": "a\u0000b"}])),
    Edge("control-chars-in-content", CHAT, chat(messages=[{"role": "user", "content": CONTROL}])),
    Edge("control-chars-streamed", CHAT, chat(messages=[{"role": "user", "content": CONTROL}], stream=True)),
    Edge("lone-surrogate-in-content", CHAT, b'{"model": "sim-model", "messages": "\\ud800 x \\udfff"}'),
    # Python's json reads UTF-8-encoded surrogates (CESU) like their \\u escapes: the same lone surrogate.
    Edge("utf8-encoded-surrogate", CHAT, b'{"model": "sim-model", "messages": "\xed\xa0\x80"}'),
    Edge("nul-in-prompt", COMPLETIONS, completion(prompt="a\u0000b" + CONTROL)),
    Edge("nul-in-stop", CHAT, chat(stop=["\u0000", "\u0001\u0002"])),
    Edge("control-chars-in-user", CHAT, chat(user=CONTROL)),
    Edge("nul-in-embedding-input", EMBEDDINGS, embedding(input=["a\u0000b", CONTROL])),
    Edge("nul-in-token-check", TOKEN_CHECK, j({"prompts": [{"model": MODEL, "prompt": "a\u0000b", "max_tokens": 1}]})),
    Edge("control-chars-in-model", CHAT, chat(model=CONTROL), statuses=(404,)),
    Edge("text-plain-with-json", CHAT, chat(), content_type="text/plain"),
    Edge("form-type-with-json", CHAT, chat(), content_type="application/x-www-form-urlencoded"),
    Edge("no-content-type-with-json", CHAT, chat(), content_type=None),
    Edge("utf8-bom", CHAT, b"\xef\xbb\xbf" + chat()),
    Edge("utf16-body", CHAT, json.dumps(CHAT_BASE).encode("utf-16")),
    Edge("get-models-with-body", "/v1/models", b'{"junk": [1, 2, 3]}', method="GET"),
    Edge("unknown-fields", CHAT, chat(base_url="http://x", metadata={"a": "b"}, store=True, service_tier="auto",
                                      parallel_tool_calls=False, something_else=[1, {"x": None}])),
    Edge("nested-800-in-unknown-field", CHAT, CHAT_JSON[:-1] + b', "x": ' + b"[" * 800 + b"]" * 800 + b"}"),
    Edge("seed-huge", CHAT, chat(seed=10**30)),
    Edge("explicit-nulls", CHAT, chat(temperature=None, top_p=None, n=None, max_tokens=None, stop=None,
                                      stream=None, user=None, seed=None, logprobs=None, tools=None)),
    Edge("body-exactly-at-limit", CHAT, (lambda b: b + b" " * (LIMIT - len(b)))(chat())),
    Edge("prompt-1mib-one-token", CHAT, chat(messages=[{"role": "user", "content": "a" * (LIMIT - 300)}]),
         statuses=(200,)),
    Edge("prompt-1mib-many-tokens", CHAT, chat(messages=[{"role": "user", "content": "a " * ((LIMIT - 300) // 2)}]),
         statuses=(400,)),
    Edge("completion-prompt-1mib-many-tokens", COMPLETIONS, completion(prompt="a " * ((LIMIT - 300) // 2)),
         statuses=(400,)),
    Edge("stop-16-strings", CHAT, chat(stop=[f"s{i}" for i in range(16)])),
    Edge("n-128-max-tokens-1", CHAT, chat(n=128, max_tokens=1)),
]


# --- sending and checking --------------------------------------------------------------------------------------------

def _send(gateway, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
    """Byte-exact request with http.client; returns (status, lower-cased headers, body)."""
    url = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) and close before a huge body is all sent: read its answer
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _headers(auth: dict, content_type: str | None) -> dict:
    headers = dict(auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def assert_error_body(status: int, headers: dict, body: bytes, *, param=ANY, code=ANY, fastchat=ANY,
                      type="invalid_request_error") -> dict:
    """The README's error envelope, with the expected param/code where given."""
    assert headers.get("content-type", "").split(";")[0] == "application/json", (status, headers, body[:300])
    data = json.loads(body)
    assert isinstance(data, dict) and set(data) == ENVELOPE, data
    assert data["object"] == "error"
    assert isinstance(data["message"], str) and data["message"], data
    assert isinstance(data["code"], int) and not isinstance(data["code"], bool), data
    detail = data["error"]
    assert isinstance(detail, dict) and set(detail) == DETAIL, data
    assert detail["message"] == data["message"]
    assert detail["type"] == (type if status < 500 else detail["type"]), data
    assert detail["param"] is None or isinstance(detail["param"], str), data
    assert detail["code"] is None or isinstance(detail["code"], str), data
    if param is not ANY:
        if isinstance(param, str) and param.endswith("*"):
            prefix = param[:-1]
            assert isinstance(detail["param"], str) and detail["param"].startswith(prefix), (param, data)
            rest = detail["param"][len(prefix):]
            assert rest == "" or rest[0] in ".[", (param, data)
        else:
            assert detail["param"] == param, (param, data)
    if code is not ANY:
        assert detail["code"] == code, (code, data)
    if fastchat is not ANY:
        assert data["code"] == fastchat, (fastchat, data)
    return data


def _still_serving(gateway) -> None:
    resp = requests.get(f"{gateway.url}/health", timeout=10)
    COUNTS["health_checks"] += 1
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}, resp.text


def _record(status: int) -> None:
    COUNTS["cases"] += 1
    if 400 <= status < 500:
        COUNTS["rejected_4xx"] += 1
    elif status >= 500:
        COUNTS["server_errors"] += 1
    else:
        COUNTS["accepted"] += 1


@pytest.fixture(scope="module", autouse=True)
def _write_counts(report, gateway, sim_worker):
    yield
    sim_stats(sim_worker)  # leave the worker's stats readable for the modules that follow
    report.add("hostile_input", **COUNTS, gateway_rss_kib=gateway.proc.tree_rss_kib())


@pytest.mark.parametrize("case", CASES + WRONG_TYPES, ids=lambda c: c.id)
def test_hostile_request_gets_its_error(gateway, auth, report, case: Hostile):
    status, headers, body = _send(gateway, case.method, case.path, case.body, _headers(auth, case.content_type))
    _record(status)
    assert status == case.status, (case.id, status, body[:400])
    assert_error_body(status, headers, body, param=case.param, code=case.code, fastchat=case.fastchat,
                      type=case.type)
    assert b"root:" not in body  # no file content, whatever the path
    if status == 405:
        assert headers.get("allow"), headers
    _still_serving(gateway)


def sim_stats(sim_worker) -> dict:
    """The simulated worker's stats. Its /sim/stats answers 500 once a payload it logged holds a lone surrogate
    (bench/simworker encodes its JSON replies as strict UTF-8), and these tests send such prompts on
    purpose: then its stats are reset, so this and later tests can read them again."""
    try:
        return sim_worker.stats()
    except ValueError:
        sim_worker.reset()
        return sim_worker.stats()


def _stats(sim_worker) -> dict:
    return sim_stats(sim_worker)["requests"]


@pytest.mark.parametrize("edge", EDGES, ids=lambda e: e.id)
def test_edge_input_is_accepted_or_refused_cleanly(gateway, sim_worker, auth, report, edge: Edge):
    before = _stats(sim_worker)
    status, headers, body = _send(gateway, edge.method, edge.path, edge.body, _headers(auth, edge.content_type))
    _record(status)
    assert status in edge.statuses, (edge.id, status, body[:400])
    ctype = headers.get("content-type", "").split(";")[0]
    if status >= 400:
        data = assert_error_body(status, headers, body)
        if edge.id.startswith(("prompt-1mib-many", "completion-prompt-1mib-many")):
            assert data["error"]["code"] == "context_length_exceeded" and data["code"] == 40303, data
    elif ctype == "text/event-stream":
        try:
            events = sse.parse(body, lenient=True)
        except sse.SSEError as exc:
            raise AssertionError(f"{exc}; body ...{body[-300:]!r}") from None
        for event in events[:-1]:
            assert json.loads(event).get("object") != "error", event
    else:
        assert ctype == "application/json", headers
        data = json.loads(body)
        assert data.get("object") in ("chat.completion", "text_completion", "list") or "prompts" in data, data
    if edge.id == "prompt-1mib-one-token":
        after = _stats(sim_worker)
        assert after.get("/worker_generate", 0) == before.get("/worker_generate", 0) + 1, (before, after)
        payloads = sim_stats(sim_worker)["generate_payloads"]
        assert payloads and len(payloads[-1]["prompt"]) >= LIMIT - 300, "the 1 MiB prompt did not reach the worker"
    _still_serving(gateway)


# --- what gunicorn refuses before the app runs (its own page, not the JSON envelope) ------------------------------

def _raw(gateway, data: bytes, timeout: float = 15) -> bytes:
    url = urlsplit(gateway.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 100:
                break
        return b"".join(chunks)


HEAD_CASES = [
    ("header-64kib", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n", 431),
    ("auth-header-64kib", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 65536
     + b"\r\n\r\n", 431),
    ("200-headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
     + b"\r\n", 431),
    ("request-line-8kib", b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("content-length-not-a-number", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
     400),
    ("content-length-negative", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    ("garbage-request-line", b"\x00\x01\x02 garbage\r\n\r\n", 400),
    ("http-0.9", b"GET /health\r\n\r\n", 400),
]


@pytest.mark.parametrize("name,data,expected", HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_broken_request_head_is_refused_by_gunicorn(gateway, report, name, data, expected):
    reply = _raw(gateway, data)
    assert reply.startswith(b"HTTP/1."), reply[:200]
    status = int(reply.split(b" ", 2)[1])
    _record(status)
    assert status == expected, reply[:300]
    _still_serving(gateway)


# --- bodies over the limit sent chunked (no Content-Length) ---------------------------------------------------------

def _chunks(data: bytes, size: int = 65536):
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("name,body", [
    pytest.param("not-json", b"a" * (LIMIT + 4096), id="chunked-not-json-over-limit"),
    pytest.param("valid-json", chat(messages=[{"role": "user", "content": "a" * (LIMIT + 4096)}]),
                 id="chunked-valid-json-over-limit"),
    pytest.param("json-then-padding", chat() + b" " * (2 * LIMIT), id="chunked-json-padded-over-limit"),
])
def test_chunked_body_over_limit_is_413(gateway, auth, report, name, body):
    """MAX_REQUEST_BODY_BYTES holds whatever the framing: a chunked body over it is a 413, never truncated."""
    resp = requests.post(f"{gateway.url}{CHAT}", data=_chunks(body), timeout=TIMEOUT,
                         headers={**auth, "Content-Type": "application/json"})
    _record(resp.status_code)
    assert resp.status_code == 413, (name, resp.status_code, resp.text[:300])
    assert_error_body(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content, param=None)
    _still_serving(gateway)


# --- incomplete requests must not hold the server ------------------------------------------------------------------

HEALTH_WAIT = 15.0  # seconds a probe may wait while stalled clients are connected


@pytest.fixture(scope="module")
def gevent_gateway(run_dir, sim_worker):
    """gunicorn's gthread worker reads a request's head and body on a thread with no timeout, so each stalled
    client holds a thread (the README says so, and that nginx, which buffers requests, or the gevent worker class
    is the answer). This is the gevent one, where a stalled client costs a greenlet."""
    from harness.gateway import Gateway

    gateway = Gateway(run_dir, name="gateway-reliability-gevent", WORKER_ADDRESSES=sim_worker.address,
                      API_KEYS="sk-reliability", GUNICORN_WORKER_CLASS="gevent")
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("name,head", [
    pytest.param("body-never-sent", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}"
                 b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\"",
                 id="body-never-sent"),
    pytest.param("headers-never-finished", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
                 id="headers-never-finished"),
])
def test_incomplete_requests_do_not_starve_the_gevent_server(gevent_gateway, auth, name, head):
    """Clients that stop mid-request (a body never sent, a head never finished) must not take the server down.

    48 such connections stay open (more than the 16 threads a gthread process of the `gateway` fixture has). Then 12 GET /health run at once on fresh connections (so both processes get some) and each must
    answer within HEALTH_WAIT seconds: a server that times stalled reads out within that bound passes too."""
    head = head.replace(b"{key}", auth["Authorization"].split(" ", 1)[1].encode())
    url = urlsplit(gevent_gateway.url)
    stalled = []

    def probe(_):
        started = time.monotonic()
        try:
            return requests.get(f"{gevent_gateway.url}/health", timeout=HEALTH_WAIT).status_code
        except requests.RequestException as exc:
            return f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"

    try:
        for _ in range(48):
            sock = socket.create_connection((url.hostname, url.port), timeout=10)
            sock.sendall(head)
            stalled.append(sock)
        time.sleep(0.5)
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(probe, range(12)))
        COUNTS["stalled_connections"] += len(stalled)
        COUNTS["starved"] += sum(answer != 200 for answer in answers)
        assert all(answer == 200 for answer in answers), \
            f"{len(stalled)} stalled connections ({name}) starved the server: GET /health -> {answers}"
    finally:
        for sock in stalled:
            sock.close()
        # Closing frees the threads at once; wait (bounded) so later tests see a serving gateway either way.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{gevent_gateway.url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
    _still_serving(gevent_gateway)


# --- and at the end, real work still succeeds ---------------------------------------------------------------------

def test_still_serving_after_hostile_input(gateway, auth, report):
    resp = requests.post(f"{gateway.url}{CHAT}", headers=auth, timeout=TIMEOUT,
                         json={"model": MODEL, "messages": [{"role": "user", "content": "still there?"}]})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"], data
    streamed = requests.post(f"{gateway.url}{CHAT}", headers=auth, timeout=TIMEOUT, json={
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "and streaming?"}]})
    assert streamed.status_code == 200, streamed.text[-300:]
    sse.parse(streamed.content)  # SSEError unless the framing is strict and the stream ends with [DONE]
    _still_serving(gateway)
