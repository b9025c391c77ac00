"""The gateway's OpenAPI 3 document (served at GET /openapi.json), generated with apispec from the marshmallow
schemas: the request schemas the views load bodies with (as the app configured them, so MAX_N and
MAX_STOP_SEQUENCES show as limits) and app/schemas/responses.py for every body the views send.

Every route is listed in OPERATIONS; tests/test_openapi.py fails when the app registers one that is not.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver
from flask import Flask
from marshmallow import Schema, fields, validate

from app.schemas import responses
from app.schemas.chat import (ROLES, ChatCompletionRequestSchema, FastChatChatCompletionRequestSchema, MessageContent,
                              Messages, MessageSchema)
from app.schemas.completions import MAX_PROMPTS, CompletionRequestSchema, Prompts
from app.schemas.embeddings import EmbeddingInputs, EmbeddingRequestSchema
from app.schemas.fields import StringOrList
from app.schemas.sampling import SamplingRequestSchema
from app.schemas.tokens import TokenCheckItemSchema, TokenCheckRequestSchema

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "ApiKey"
EXTENSION_KEY = "openapi_spec"

# Statuses an error keeps under ERROR_STATUS_MODE=fastchat (they belong to HTTP itself); every other is a 400 there.
KEPT_STATUSES = frozenset({401, 413})


@dataclass(frozen=True)
class Operation:
    """One documented route and method.

    rule: the Flask rule, as app.url_map spells it. response: the component of the 200 JSON body, or `content`
    for other media types. request: the key of the request schema in app.extensions["schemas"]. stream: the
    component of the chunks sent as server-sent events when the request says `stream: true`.
    """

    rule: str
    method: str
    operation_id: str
    tag: str
    summary: str
    description: str = ""
    response: str | None = None
    content: Mapping | None = None
    request: str | None = None
    stream: str | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    error_notes: Mapping[int, str] = field(default_factory=dict)


_GENERATION_ERRORS = (400, 401, 404, 413, 500, 502, 503, 504)
_UPSTREAM_ERRORS = (500, 502, 503, 504)

OPERATIONS: tuple[Operation, ...] = (
    Operation("/health", "get", "health", "probes", "Liveness",
              "The process answers: no upstream calls and no API key, so load balancers may poll it freely.",
              response="Health", public=True),
    Operation("/ready", "get", "ready", "probes", "Readiness",
              "Whether the gateway can reach its FastChat cluster; no API key.", response="Ready", errors=(503,),
              public=True, error_notes={503: "Not ready: the controller (or every listed worker) cannot be reached."}),
    Operation("/metrics", "get", "metrics", "probes", "Prometheus metrics",
              "Metrics in Prometheus' text exposition format; no API key.", public=True,
              content={"text/plain": {"schema": {"type": "string"}}}),
    Operation("/openapi.json", "get", "openapi", "meta", "This document",
              "The OpenAPI 3 description of this server; no API key.", public=True,
              content={"application/json": {"schema": {"type": "object"}}}),
    Operation("/v1/models", "get", "listModels", "models", "List models",
              "Every model some worker serves, sorted by name.", response="ModelList",
              errors=(401, *_UPSTREAM_ERRORS)),
    Operation("/v1/models/<path:model>", "get", "retrieveModel", "models", "Retrieve a model",
              "One model; 404 `model_not_found` when no worker serves it.", response="ModelCard",
              errors=(401, 404, *_UPSTREAM_ERRORS)),
    Operation("/v1/chat/completions", "post", "createChatCompletion", "chat", "Create a chat completion",
              "The prompt is rendered from the worker's conversation template; with `stream: true` the reply is "
              "server-sent events of ChatCompletionChunk.", response="ChatCompletion", request="chat",
              stream="ChatCompletionChunk", errors=_GENERATION_ERRORS),
    Operation("/v1/completions", "post", "createCompletion", "completions", "Create a text completion",
              "`prompts x n` choices generated concurrently; with `stream: true` the reply is server-sent events of "
              "CompletionChunk.", response="Completion", request="completion", stream="CompletionChunk",
              errors=_GENERATION_ERRORS),
    Operation("/v1/embeddings", "post", "createEmbedding", "embeddings", "Create embeddings",
              "One embedding per input, in input order.", response="EmbeddingList", request="embedding",
              errors=_GENERATION_ERRORS),
    Operation("/v1/engines/<path:model>/embeddings", "post", "createEngineEmbedding", "embeddings",
              "Create embeddings (FastChat's engines path)",
              "The same as POST /v1/embeddings; the model comes from the path unless the body names one.",
              response="EmbeddingList", request="embedding", errors=_GENERATION_ERRORS),
    Operation("/api/v1/chat/completions", "post", "createFastChatChatCompletion", "fastchat",
              "Create a chat completion (FastChat's variant)",
              "The same as POST /v1/chat/completions, with repetition_penalty always sent to the worker "
              "(default 1.0).", response="ChatCompletion", request="fastchat_chat", stream="ChatCompletionChunk",
              errors=_GENERATION_ERRORS),
    Operation("/api/v1/token_check", "post", "checkTokens", "fastchat", "Check prompts against the context",
              "For each {model, prompt, max_tokens}: whether it fits the model's context, the prompt's token count "
              "and the context length.", response="TokenCheckResponse", request="token_check",
              errors=(400, 401, 404, 413, *_UPSTREAM_ERRORS)),
)

# key in app.extensions["schemas"] -> (component name, the schema used when the app has none, description)
REQUEST_SCHEMAS: dict[str, tuple[str, type[Schema], str]] = {
    "chat": ("ChatCompletionRequest", ChatCompletionRequestSchema,
             "An OpenAI chat completion request. Unknown fields are ignored; fields FastChat workers cannot honour "
             "are rejected by name (400 `unsupported_parameter`); an explicit null means the default."),
    "fastchat_chat": ("FastChatChatCompletionRequest", FastChatChatCompletionRequestSchema,
                      "The chat completion request of FastChat's /api/v1/chat/completions: the same fields as "
                      "ChatCompletionRequest; repetition_penalty defaults to 1.0 and is always sent."),
    "completion": ("CompletionRequest", CompletionRequestSchema,
                   "An OpenAI text completion request. Unknown fields are ignored; an explicit null means the "
                   "default."),
    "embedding": ("EmbeddingRequest", EmbeddingRequestSchema,
                  "An OpenAI embeddings request. Unknown fields are ignored."),
    "token_check": ("TokenCheckRequest", TokenCheckRequestSchema, "FastChat's token check request."),
}

TAGS = [
    {"name": "models", "description": "The models the FastChat cluster serves."},
    {"name": "chat", "description": "Chat completions."},
    {"name": "completions", "description": "Text completions."},
    {"name": "embeddings", "description": "Embeddings."},
    {"name": "fastchat", "description": "FastChat's own API extensions."},
    {"name": "probes", "description": "Health, readiness and metrics; no API key."},
    {"name": "meta", "description": "This document."},
]

_ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid request: a body that is not a JSON object, a schema violation (`param` names the "
                        "field), a parameter out of range or unsupported (`unsupported_parameter`), a prompt over the "
                        "context (`context_length_exceeded`), or a worker error in FastChat's 4xxxx range. With "
                        "ERROR_STATUS_MODE=fastchat, every handled error."),
    401: ("Unauthorized", "Missing or wrong API key (`invalid_api_key`); only when the server has API keys."),
    404: ("NotFound", "No worker serves the model (`model_not_found`)."),
    413: ("PayloadTooLarge", "The request body is larger than MAX_REQUEST_BODY_BYTES."),
    500: ("InternalServerError", "A worker error (`worker_error`), or an unexpected server error."),
    502: ("BadGateway", "The controller or a worker sent a non-200 or malformed reply (`upstream_error`)."),
    503: ("ServiceUnavailable", "No worker for the model, the controller or worker unreachable "
                                "(`upstream_unavailable`), or the worker out of CUDA memory (`worker_error`)."),
    504: ("GatewayTimeout", "The controller or a worker timed out (`upstream_timeout`)."),
}

_INFO_DESCRIPTION = """\
An OpenAI-compatible API for FastChat controller/worker clusters.

Every error is the `Error` body with the HTTP status of its kind, including routing 404/405 and malformed JSON. \
Streamed responses (`stream: true`) are server-sent events: one `data: <chunk JSON>` event per chunk, then \
`data: [DONE]`; a failure after the first event is one `data: <Error JSON>` event, then `data: [DONE]`. \
The `x-sse-data-schema` of a `text/event-stream` response is the schema of its events' data.

When the server has API keys, every route except /health, /ready, /metrics and /openapi.json needs \
`Authorization: Bearer <key>`."""


def build_spec(app: Flask) -> dict:
    """The OpenAPI document of `app` as a dict, for the request schemas and settings `app` was built with."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="fastchat-gateway", version=_version(), openapi_version=OPENAPI_VERSION, plugins=[plugin],
                   info={"description": _INFO_DESCRIPTION}, security=[{SECURITY_SCHEME: []}])
    plugin.converter.add_attribute_function(gateway_field_properties)
    for tag in TAGS:
        spec.tag(tag)
    spec.components.security_scheme(SECURITY_SCHEME, {
        "type": "http", "scheme": "bearer",
        "description": "One of the server's API keys (API_KEYS), as `Authorization: Bearer <key>`."})

    for schema in responses.COMPONENTS:
        _register(spec, schema)
    _register(spec, MessageSchema, name="ChatMessage",
              description="One chat message; roles `tool` and `function` are rejected (400 unsupported_parameter).")
    _register(spec, TokenCheckItemSchema)
    schemas = app.extensions.get("schemas", {})
    for key, (name, default, description) in REQUEST_SCHEMAS.items():
        spec.components.schema(name, {"description": description}, schema=schemas.get(key) or default())

    fastchat_statuses = app.config.get("ERROR_STATUS_MODE") == "fastchat"
    for status, (name, description) in _ERROR_RESPONSES.items():
        spec.components.response(name, _error_response(spec, description, status))

    paths: dict[str, dict] = {}
    for operation in OPERATIONS:
        paths.setdefault(openapi_path(operation.rule), {})[operation.method] = \
            _operation(spec, operation, fastchat_statuses)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: /v1/models/<path:model> -> /v1/models/{model}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _version() -> str:
    try:
        return metadata.version("fastchat-gateway")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _register(spec: APISpec, schema: type[Schema], *, name: str | None = None,
              description: str | None = None) -> None:
    """Register `schema` as a component after the schemas it nests (so each gets its name and description)."""
    for nested in _nested_schemas(schema):
        _register(spec, nested)
    name = name or resolver(schema)
    if name not in spec.components.schemas:
        doc = description or inspect.cleandoc(schema.__doc__ or "")
        spec.components.schema(name, {"description": doc} if doc else None, schema=schema)


def _nested_schemas(schema: type[Schema]) -> list[type[Schema]]:
    found = []
    for declared in schema._declared_fields.values():
        while isinstance(declared, fields.List):
            declared = declared.inner
        if isinstance(declared, fields.Nested) and isinstance(declared.nested, type):
            found.append(declared.nested)
    return found


def _error_response(spec: APISpec, description: str, status: int) -> dict:
    response = {"description": description,
                "content": {"application/json": {"schema": spec.components.get_ref("schema", "Error")}}}
    if status == 504:
        response["headers"] = {"x-should-retry": {
            "description": "`false`: the generation already cost the worker its time; the openai SDK does not "
                           "retry.", "required": True, "schema": {"type": "string", "enum": ["false"]}}}
    return response


def _operation(spec: APISpec, operation: Operation, fastchat_statuses: bool) -> dict:
    doc: dict = {"operationId": operation.operation_id, "tags": [operation.tag], "summary": operation.summary}
    if operation.description:
        doc["description"] = operation.description
    parameters = [_path_parameter(converter, name) for converter, name in
                  re.findall(r"<(?:([^:<>(]+)(?:\([^)]*\))?:)?([^<>]+)>", operation.rule)]
    if parameters:
        doc["parameters"] = parameters
    if operation.request:
        doc["requestBody"] = {
            "required": True,
            "description": "Parsed as JSON whatever the Content-Type says (curl -d sends form-urlencoded).",
            "content": {"application/json": {
                "schema": spec.components.get_ref("schema", REQUEST_SCHEMAS[operation.request][0])}},
        }
    doc["responses"] = {"200": _success(spec, operation)}
    statuses = set(operation.errors)
    if fastchat_statuses and not operation.public:  # ERROR_STATUS_MODE=fastchat: handled errors are all 400
        statuses = {status if status in KEPT_STATUSES else 400 for status in statuses}
    for status in sorted(statuses):
        if status in operation.error_notes:
            doc["responses"][str(status)] = {
                "description": operation.error_notes[status],
                "content": {"application/json": {"schema": spec.components.get_ref("schema", "Error")}}}
        else:
            doc["responses"][str(status)] = spec.components.get_ref("response", _ERROR_RESPONSES[status][0])
    doc["security"] = [] if operation.public else [{SECURITY_SCHEME: []}]
    return doc


def _path_parameter(converter: str, name: str) -> dict:
    schema: dict = {"type": "string", "minLength": 1}
    description = f"The {name}."
    if converter == "path":
        description = (f"The {name}; it may contain slashes (e.g. meta-llama/Llama-2-7b-chat-hf), sent as they are "
                       "or percent-encoded.")
    else:
        schema["pattern"] = "^[^/]+$"
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _success(spec: APISpec, operation: Operation) -> dict:
    if operation.content is not None:
        return {"description": operation.summary, "content": dict(operation.content)}
    content: dict = {"application/json": {"schema": spec.components.get_ref("schema", operation.response)}}
    description = f"A {operation.response} object."
    if operation.stream:
        content["text/event-stream"] = {
            "schema": {"type": "string", "description": (
                f"Server-sent events: `data: <{operation.stream} JSON>` per chunk, then `data: [DONE]`; a failure "
                "after the first event is one `data: <Error JSON>` event, then `data: [DONE]`.")},
            "x-sse-data-schema": {"oneOf": [spec.components.get_ref("schema", operation.stream),
                                            spec.components.get_ref("schema", "Error")]},
        }
        description = (f"A {operation.response} object (application/json), or with `stream: true` server-sent "
                       f"events of {operation.stream} (text/event-stream).")
    return {"description": description, "content": content}


# --- marshmallow fields -> OpenAPI -----------------------------------------------------------------------------------

TOKEN_ID = {"type": "integer", "minimum": 0}
TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}


def _falsy(description: str) -> dict:
    """A field the server accepts only when it is absent, null or empty (any JSON value Python finds false)."""
    return {"description": description + " Only null or an empty value is accepted.", "oneOf": [
        {"type": "array", "maxItems": 0, "nullable": True},
        {"type": "object", "maxProperties": 0},
        {"type": "string", "maxLength": 0},
        {"type": "number", "enum": [0]},
        {"type": "boolean", "enum": [False]},
    ]}


def _null_only(description: str) -> dict:
    return {"description": description + " Only null is accepted.", "nullable": True, "enum": [None]}


_NONE_OR_AUTO = {"type": "string", "enum": ["none", "auto", None], "nullable": True}

# (schema class, field name) -> OpenAPI properties the validators say but apispec cannot read from them. An entry
# with "oneOf" or "enum": [None] replaces the field's property; others are merged into it.
FIELD_DOCS: dict[tuple[type[Schema], str], dict] = {
    (MessageSchema, "role"): {"enum": list(ROLES), "description": "`developer` is treated as `system`."},
    (MessageSchema, "tool_calls"): _falsy("Tool calls are not supported."),
    (MessageSchema, "function_call"): _falsy("Function calls are not supported."),
    (SamplingRequestSchema, "model"): {"description": "A model some worker serves."},
    (SamplingRequestSchema, "top_k"): {"minimum": -1, "not": {"enum": [0]}, "description": "-1 disables; 0 is "
                                       "rejected. Forwarded to the worker."},
    (SamplingRequestSchema, "max_tokens"): {"description": "Default: the rest of the context for chat, 16 for "
                                            "text completions. Over the context: 400 context_length_exceeded "
                                            "(or clipped with CONTEXT_OVERFLOW=clip)."},
    (SamplingRequestSchema, "stop"): {"description": "Up to MAX_STOP_SEQUENCES strings, merged with the "
                                      "template's stop strings."},
    (SamplingRequestSchema, "stream"): {"description": "Reply with server-sent events (text/event-stream)."},
    (SamplingRequestSchema, "stream_options"): {
        "description": "Only with `stream: true`. `include_usage: true` adds `usage: null` to every chunk and a "
                       "last chunk with no choices and the usage of the whole request.",
        "properties": {"include_usage": {"type": "boolean"}}},
    (SamplingRequestSchema, "repetition_penalty"): {"description": "Forwarded to the worker."},
    (SamplingRequestSchema, "seed"): {"description": "Forwarded to the worker."},
    (SamplingRequestSchema, "user"): {"description": "Ignored."},
    (SamplingRequestSchema, "logit_bias"): {"maxProperties": 0, "description": "Not supported: only null or {} "
                                            "is accepted."},
    (ChatCompletionRequestSchema, "messages"): {"description": "The conversation, or (FastChat's extension) a "
                                                "string sent to the worker verbatim as the prompt."},
    (ChatCompletionRequestSchema, "max_completion_tokens"): {"description": "max_tokens under its new name; "
                                                              "when both are set they must be equal."},
    (ChatCompletionRequestSchema, "logprobs"): {"description": "Return the logprobs of the generated tokens (when "
                                                "the worker computes them; null otherwise)."},
    (ChatCompletionRequestSchema, "top_logprobs"): {"description": "Alternatives per token; requires `logprobs: "
                                                    "true`."},
    (ChatCompletionRequestSchema, "tools"): _falsy("Tools (function calling) are not supported."),
    (ChatCompletionRequestSchema, "functions"): _falsy("Functions (function calling) are not supported."),
    (ChatCompletionRequestSchema, "tool_choice"): {**_NONE_OR_AUTO, "description": "Only none or auto."},
    (ChatCompletionRequestSchema, "function_call"): {**_NONE_OR_AUTO, "description": "Only none or auto."},
    (ChatCompletionRequestSchema, "response_format"): {
        "type": "object", "required": ["type"], "properties": {"type": {"type": "string", "enum": ["text"]}},
        "description": "Only {\"type\": \"text\"}."},
    (ChatCompletionRequestSchema, "modalities"): {
        "type": "array", "items": {"type": "string", "enum": ["text"]}, "minItems": 1, "maxItems": 1,
        "description": "Only [\"text\"]."},
    (ChatCompletionRequestSchema, "audio"): _null_only("Audio output is not supported."),
    (ChatCompletionRequestSchema, "prediction"): _null_only("Predicted outputs are not supported."),
    (ChatCompletionRequestSchema, "web_search_options"): _null_only("Web search is not supported."),
    (CompletionRequestSchema, "prompt"): {"description": "A string, strings, token ids or token-id lists (token "
                                          "ids are decoded with tiktoken; ids outside its vocabulary are a 400)."},
    (CompletionRequestSchema, "echo"): {"description": "Prepend the prompt to each choice's text."},
    (CompletionRequestSchema, "logprobs"): {"description": "Return the logprobs of the tokens (the worker "
                                            "decides how many alternatives)."},
    (CompletionRequestSchema, "best_of"): {"description": "At least n; not with `stream`. Forwarded to the "
                                           "worker."},
    (CompletionRequestSchema, "use_beam_search"): {"description": "Not with `stream`. Forwarded to the worker."},
    (CompletionRequestSchema, "suffix"): {"enum": ["", None], "description": "Insertion is not supported: only "
                                          "\"\" or null."},
    (EmbeddingRequestSchema, "model"): {"description": "Required here unless the path names the model."},
    (EmbeddingRequestSchema, "input"): {"description": "A string, strings, token ids or token-id lists, nothing "
                                        "empty (token ids are decoded with tiktoken)."},
    (EmbeddingRequestSchema, "encoding_format"): {"description": "base64 is always little-endian float32."},
    (EmbeddingRequestSchema, "dimensions"): {"description": "Only the model's own dimensions (reduced dimensions "
                                             "are not supported)."},
    (EmbeddingRequestSchema, "user"): {"description": "Ignored."},
}


def gateway_field_properties(self, field: fields.Field, ret: dict, **kwargs) -> dict:
    """apispec attribute function (bound to its OpenAPIConverter), run after the built-in ones: the custom union
    fields as oneOf, ranges with exclusive bounds, nullable nested schemas that accept only null besides the
    schema, and FIELD_DOCS. Edits `ret` in place."""
    branches = _union_branches(self, field)
    if branches is not None:
        nullable = ret.pop("nullable", False)
        for key in ("type", "format"):
            ret.pop(key, None)
        if nullable:
            branches[0] = {**branches[0], "nullable": True}
        ret["oneOf"] = branches
    _exclusive_bounds(field, ret)
    if isinstance(field, fields.Nested) and field.allow_none and "anyOf" in ret:
        # apispec's {"type": "object", "nullable": true} branch would accept any object: accept only null there.
        refs = [branch for branch in ret["anyOf"] if "$ref" in branch]
        ret["anyOf"] = [*refs, {"type": "object", "nullable": True, "enum": [None]}]
    docs = _field_docs(field)
    if docs:
        if "oneOf" in docs or docs.get("enum") == [None]:
            description = ret.get("description")
            ret.clear()
            if description:
                ret["description"] = description
        ret.update(docs)
    return {}


def _union_branches(converter, field: fields.Field) -> list[dict] | None:
    """The shapes each custom field of app/schemas accepts, exactly (None for other fields)."""
    if isinstance(field, StringOrList):
        strings = {"type": "array", "items": {"type": "string"}}
        if field.max_items is not None:
            strings["maxItems"] = field.max_items
        return [{"type": "string"}, strings]
    if isinstance(field, MessageContent):
        return [{"type": "string"},
                {"type": "array", "items": TEXT_PART, "description": "Text parts, joined with newlines."}]
    if isinstance(field, Messages):
        messages = {"type": "array", "minItems": 1, "items": converter.resolve_nested_schema(MessageSchema)}
        if getattr(field, "max_items", None) is not None:
            messages["maxItems"] = field.max_items
        return [{"type": "string", "description": "A raw prompt, used verbatim (FastChat's extension)."}, messages]
    if isinstance(field, Prompts):
        return [{"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_PROMPTS},
                {"type": "array", "items": TOKEN_ID, "minItems": 1, "description": "One prompt as token ids."},
                {"type": "array", "items": {"type": "array", "items": TOKEN_ID, "minItems": 1}, "minItems": 1,
                 "maxItems": MAX_PROMPTS}]
    if isinstance(field, EmbeddingInputs):
        return [{"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_PROMPTS},
                {"type": "array", "items": TOKEN_ID, "minItems": 1, "description": "One input as token ids."},
                {"type": "array", "items": {"type": "array", "items": TOKEN_ID, "minItems": 1}, "minItems": 1,
                 "maxItems": MAX_PROMPTS}]
    return None


def _exclusive_bounds(field: fields.Field, ret: dict) -> None:
    """apispec reads Range's min and max but not min_inclusive/max_inclusive (OpenAPI 3.0: boolean exclusive*)."""
    for validator in field.validators:
        if not isinstance(validator, validate.Range):
            continue
        if validator.min is not None and not validator.min_inclusive and ret.get("minimum") == validator.min:
            ret["exclusiveMinimum"] = True
        if validator.max is not None and not validator.max_inclusive and ret.get("maximum") == validator.max:
            ret["exclusiveMaximum"] = True


def _field_docs(field: fields.Field) -> dict | None:
    parent = getattr(field, "parent", None)
    if not isinstance(parent, Schema):
        return None
    for cls in type(parent).__mro__:
        docs = FIELD_DOCS.get((cls, field.name))
        if docs is not None:
            return docs
    return None
