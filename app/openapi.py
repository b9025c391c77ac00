"""The gateway's OpenAPI 3 document (served at GET /openapi.json), generated with apispec from the app's views
and the marshmallow schemas.

The operations come from app.url_map: each route's rule and methods, its view's docstring (summary, description)
and its @documented details (app/documented.py). The bodies come from the request schemas the views load bodies
with (as the app configured them, so MAX_N and MAX_STOP_SEQUENCES show as limits) and from
app/schemas/responses.py, which app/serving/payloads.py builds every response from.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from importlib import metadata

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver
from flask import Flask
from marshmallow import Schema, fields

from app.auth import PUBLIC_ENDPOINTS
from app.documented import ViewDoc, view_doc
from app.openapi_fields import gateway_field_properties
from app.schemas import responses
from app.schemas.chat import ChatCompletionRequestSchema, FastChatChatCompletionRequestSchema, MessageSchema
from app.schemas.completions import CompletionRequestSchema
from app.schemas.embeddings import EmbeddingRequestSchema
from app.schemas.responses_api import CreateResponseRequestSchema
from app.schemas.tokens import TokenCheckItemSchema, TokenCheckRequestSchema

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "ApiKey"
EXTENSION_KEY = "openapi_spec"

# Statuses an error keeps under ERROR_STATUS_MODE=fastchat (they belong to HTTP itself); every other is a 400 there.
KEPT_STATUSES = frozenset({401, 413, 429})


@dataclass(frozen=True)
class Operation:
    """One documented route and method: what app.url_map and the view's docstring say, and the view's ViewDoc."""

    rule: str
    method: str
    operation_id: str
    summary: str
    description: str
    public: bool
    view: ViewDoc


def operations_of(app: Flask) -> list[Operation]:
    """Every route and method `app` serves (Flask's implicit HEAD and OPTIONS aside), from its views. Raises
    LookupError for a view without @documented, so no route goes undocumented."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        doc = view_doc(view)
        if doc is None:
            raise LookupError(f"{rule.endpoint} ({rule.rule}) has no @documented: the OpenAPI document would "
                              "miss it")
        summary, description = _docstring(view)
        operation_id = doc.operation_id or _camel_case(view.__name__)
        other = doc.other_rules.get(rule.rule)
        if other is not None:
            operation_id, summary, description = other.operation_id, other.summary, other.description
        public = rule.endpoint in PUBLIC_ENDPOINTS
        for method in sorted(rule.methods - _IMPLICIT_METHODS):
            found.append(Operation(rule.rule, method.lower(), operation_id, summary, description, public, doc))
    return found


_IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})


def _docstring(view) -> tuple[str, str]:
    """The first line of the view's docstring, and the rest with each paragraph's lines joined."""
    summary, _, rest = (inspect.getdoc(view) or "").partition("\n")
    if not summary:
        raise LookupError(f"{view.__qualname__} has no docstring: its first line is the operation's summary")
    paragraphs = [" ".join(line.strip() for line in paragraph.splitlines())
                  for paragraph in rest.strip().split("\n\n") if paragraph.strip()]
    return summary.strip(), "\n\n".join(paragraphs)


def _camel_case(name: str) -> str:
    first, *others = name.split("_")
    return first + "".join(word.capitalize() for word in others)


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
    "responses": ("CreateResponseRequest", CreateResponseRequestSchema,
                  "A Responses API request, served statelessly as a chat completion: the chat request's rules apply "
                  "to what it is translated into, and errors name the Responses field. Stateful and hosted "
                  "features are rejected by name (400 `unsupported_parameter`); unknown fields are ignored; an "
                  "explicit null means the default."),
}

TAGS = [
    {"name": "models", "description": "The models the FastChat cluster serves."},
    {"name": "chat", "description": "Chat completions."},
    {"name": "completions", "description": "Text completions."},
    {"name": "embeddings", "description": "Embeddings."},
    {"name": "responses", "description": "The Responses API, stateless (nothing is stored)."},
    {"name": "fastchat", "description": "FastChat's own API extensions."},
    {"name": "probes", "description": "Health, readiness and metrics; no API key."},
    {"name": "operator", "description": "The status page: only with ADMIN_API_KEY set, and that key."},
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
    429: ("TooManyRequests", "Over one of the API key's limits (`rate_limit_exceeded`, `type` `requests` or "
                             "`tokens`), or an upstream's 429 for a routed model; with Retry-After."),
    500: ("InternalServerError", "A worker error (`worker_error`), or an unexpected server error."),
    502: ("BadGateway", "The controller or a worker sent a non-200 or malformed reply (`upstream_error`)."),
    503: ("ServiceUnavailable", "No worker for the model, the controller or worker unreachable "
                                "(`upstream_unavailable`), the worker out of CUDA memory (`worker_error`), or "
                                "back-pressure with a Retry-After header: the model's workers full "
                                "(`model_overloaded`) or this server's streams (`server_overloaded`)."),
    504: ("GatewayTimeout", "The controller or a worker timed out (`upstream_timeout`)."),
}

_INFO_DESCRIPTION = """\
An OpenAI-compatible API for FastChat controller/worker clusters.

Every error is the `Error` body with the HTTP status of its kind, including routing 404/405 and malformed JSON. \
Streamed responses (`stream: true`) are server-sent events: one `data: <chunk JSON>` event per chunk, then \
`data: [DONE]`; a failure after the first event is one `data: <Error JSON>` event, then `data: [DONE]`. \
Streamed responses of POST /v1/responses are the Responses API's named events instead: `event: <type>` and \
`data: <event JSON>` per event, no [DONE]. The `x-sse-data-schema` of a `text/event-stream` response is the \
schema of its events' data.

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
    for operation in operations_of(app):
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
        elif isinstance(declared, responses.BodyUnion):
            found.extend(declared.schemas)
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
    view = operation.view
    doc: dict = {"operationId": operation.operation_id, "tags": [view.tag], "summary": operation.summary}
    if operation.description:
        doc["description"] = operation.description
    parameters = [_path_parameter(converter, name) for converter, name in
                  re.findall(r"<(?:([^:<>(]+)(?:\([^)]*\))?:)?([^<>]+)>", operation.rule)]
    if parameters:
        doc["parameters"] = parameters
    if view.request:
        doc["requestBody"] = {
            "required": True,
            "description": "Parsed as JSON whatever the Content-Type says (curl -d sends form-urlencoded).",
            "content": {"application/json": {
                "schema": spec.components.get_ref("schema", REQUEST_SCHEMAS[view.request][0])}},
        }
    doc["responses"] = {"200": _success(spec, operation)} if view.response or view.content else {}
    statuses = set(view.errors)
    if fastchat_statuses and not operation.public:  # ERROR_STATUS_MODE=fastchat: handled errors are all 400
        statuses = {status if status in KEPT_STATUSES else 400 for status in statuses}
    for status in sorted(statuses):
        if status in view.error_notes:
            doc["responses"][str(status)] = {
                "description": view.error_notes[status],
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
    view = operation.view
    if view.content is not None:
        return {"description": operation.summary, "content": dict(view.content)}
    content: dict = {"application/json": {"schema": spec.components.get_ref("schema", view.response)}}
    description = f"A {view.response} object."
    if isinstance(view.stream, tuple):
        content["text/event-stream"] = {
            "schema": {"type": "string", "description": (
                "Server-sent events, each `event: <type>` then `data: <event JSON>`, numbered by sequence_number "
                "and ending with response.completed or response.incomplete (no [DONE]); a failure after the first "
                "event ends the stream with response.failed and an `error` event.")},
            "x-sse-data-schema": {"oneOf": [spec.components.get_ref("schema", name) for name in view.stream]},
        }
        description = (f"A {view.response} object (application/json), or with `stream: true` the Responses API's "
                       "named server-sent events (text/event-stream).")
    elif view.stream:
        content["text/event-stream"] = {
            "schema": {"type": "string", "description": (
                f"Server-sent events: `data: <{view.stream} JSON>` per chunk, then `data: [DONE]`; a failure "
                "after the first event is one `data: <Error JSON>` event, then `data: [DONE]`.")},
            "x-sse-data-schema": {"oneOf": [spec.components.get_ref("schema", view.stream),
                                            spec.components.get_ref("schema", "Error")]},
        }
        description = (f"A {view.response} object (application/json), or with `stream: true` server-sent "
                       f"events of {view.stream} (text/event-stream).")
    return {"description": description, "content": content}
