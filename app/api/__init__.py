"""HTTP endpoints: blueprints registration and the two helpers every view uses."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

from flask import Flask, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.admission import admit
from app.auth import require_model
from app.errors import from_validation, invalid_request
from app.images.rules import ImageRules
from app.schemas.chat import ChatCompletionRequestSchema, FastChatChatCompletionRequestSchema
from app.schemas.completions import CompletionRequestSchema
from app.schemas.embeddings import EmbeddingRequestSchema
from app.schemas.responses_api import CreateResponseRequestSchema
from app.schemas.tokens import TokenCheckRequestSchema
from app.observability import current_record
from app.serving.cluster import Cluster
from app.streaming import Framing, sse_response

logger = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Build the request schemas with the configured limits and register every blueprint."""
    from app.api import chat, completions, embeddings, health, models, openapi, responses, tokens

    limits = {"max_n": app.config["MAX_N"], "max_stop": app.config["MAX_STOP_SEQUENCES"],
              "max_tokens": app.config["MAX_TOKENS_CAP"]}
    chat_limits = {**limits, "max_messages": app.config["MAX_MESSAGES"],
                   "image_rules": ImageRules.from_config(app.config)}
    app.extensions["schemas"] = {
        "chat": ChatCompletionRequestSchema(**chat_limits),
        "fastchat_chat": FastChatChatCompletionRequestSchema(**chat_limits),
        "completion": CompletionRequestSchema(**limits),
        "embedding": EmbeddingRequestSchema(),
        "token_check": TokenCheckRequestSchema(),
    }
    app.extensions["schemas"]["responses"] = CreateResponseRequestSchema(chat=app.extensions["schemas"]["chat"],
                                                                         max_tokens=limits["max_tokens"])
    for blueprint in (health.bp, models.bp, chat.bp, completions.bp, embeddings.bp, tokens.bp, responses.bp,
                      openapi.bp):
        app.register_blueprint(blueprint)


def get_cluster() -> Cluster:
    return current_app.extensions["cluster"]


def reply(params: dict, create: Callable[[dict, Cluster], dict],
          stream: Callable[[dict, Cluster], Iterator[dict]] | None, *,
          framing: Callable[[Iterator[dict]], Framing] | None = None,
          usage: Callable[[dict], dict | None] = lambda result: result.get("usage"),
          relay: str | tuple[Callable, Callable]) -> Response:
    """Run a generation use case: JSON for a whole result, server-sent events when params["stream"]. framing:
    the stream's, made from its source (chat's by default); usage: the chat usage of a whole result (what the
    access log counts); relay, for a model of ROUTES_FILE: the OpenAI path (app.routes.relay) the client's own
    body is relayed to instead of create/stream (in chat's framing), or the (create, stream) use cases to run
    instead (in the endpoint's framing)."""
    record = current_record()
    record.model = params["model"]
    require_model(params["model"])  # again: a view may have taken the model from elsewhere (the path)
    if current_app.config["LOG_REQUEST_BODIES"]:
        # Images (app.images.parts) print as placeholders such as <image/png 12345 bytes>, never their data.
        logger.info("request_id=%s body=%s", record.request_id, json.dumps(params, ensure_ascii=False, default=repr))
    cluster = get_cluster()
    routed = cluster.routes(params["model"])
    if routed and isinstance(relay, str):
        create, stream, framing = _relayed(relay, g.request_json), _relayed(relay, g.request_json, True), None
    elif routed:
        create, stream = relay
    # or 503: see app.serving.admission; a routed model's queue is its upstream's, so only the stream cap applies
    admit(cluster, record, params["model"], bool(params.get("stream")), caps_model=not routed)
    if params.get("stream"):
        source = stream(params, cluster)
        return sse_response(source, params["include_usage"], record, framing and framing(source))
    result = create(params, cluster)
    record.usage = usage(result)
    if current_app.config["LOG_REQUEST_BODIES"]:
        logger.info("request_id=%s result=%s", record.request_id, json.dumps(result, ensure_ascii=False))
    return jsonify(result)


def _relayed(path: str, body: dict, stream: bool = False) -> Callable[[dict, Cluster], object]:
    """A use case relaying the client's body (validated, unchanged) to the model's upstream."""
    request_id = current_record().request_id
    if stream:
        return lambda params, cluster: cluster.relay.stream(path, params["model"], body, request_id)
    return lambda params, cluster: cluster.relay.create(path, params["model"], body, request_id)


def load_body(schema_name: str) -> dict:
    """The request's JSON body loaded through the named schema. Raises ApiError (400, 413) on any problem."""
    schema: Schema = current_app.extensions["schemas"][schema_name]
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= current_app.config["MAX_CONTENT_LENGTH"]:
        # A chunked body is cut at the limit by werkzeug rather than refused: refuse it here.
        raise RequestEntityTooLarge()
    # The body is parsed as JSON whatever the Content-Type says: `curl -d` sends form-urlencoded by default.
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        hint = "" if request.mimetype in ("", "application/json") else \
            f" (it was sent as {request.mimetype}; send application/json)"
        raise invalid_request(f"The request body is not valid JSON{hint}.") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    g.request_json = data  # what a routed model's upstream is sent, every field kept (app.routes.relay)
    try:
        params = schema.load(data)
    except ValidationError as exc:
        params = _load_for_upstream(schema, data, exc)
        if params is None:
            raise from_validation(exc) from None
    if isinstance(params, dict) and "messages" in params:
        params["body_bytes"] = len(body)  # image URLs fetched later count toward the same limit
    for model in _models_named(params):
        require_model(model)  # the one check of the key's allow-list for every endpoint that takes a model
    return params


def _load_for_upstream(schema: Schema, data: dict, exc: ValidationError) -> dict | None:
    """For a routed model, the params without what is refused only as unsupported by FastChat workers (fields
    such as logit_bias and suffix, content parts such as input_audio): its upstream may support them, and is sent
    them (the client's body). None when the model is not routed or anything else is wrong."""
    model = data.get("model")
    if not isinstance(model, str) or not get_cluster().routes(model) or not isinstance(exc.messages, dict):
        return None
    if not all(key != "_schema" and all(getattr(message, "error_code", None) == "unsupported_parameter"
                                        for _, message in _leaves(problems))
               for key, problems in exc.messages.items()):
        return None
    try:
        return schema.load(_without(data, exc.messages))
    except ValidationError:
        return None


def _without(value, problems: dict):
    """A copy of `value` without the dict keys and list items that `problems` (marshmallow's nested error
    messages: a dict per level, a list of messages at a leaf) finds fault with."""
    def kept(key) -> bool:
        return not (key in problems and not isinstance(problems[key], dict))

    def inner(key, item):
        return _without(item, problems[key]) if isinstance(problems.get(key), dict) else item

    if isinstance(value, dict):
        return {key: inner(key, item) for key, item in value.items() if kept(key)}
    if isinstance(value, list):
        return [inner(index, item) for index, item in enumerate(value) if kept(index)]
    return value


def _leaves(messages, path: str = ""):
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _leaves(value, f"{path}.{key}")
    elif isinstance(messages, list):
        for item in messages:
            yield from _leaves(item, path)
    else:
        yield path, messages


def _models_named(params) -> list[str]:
    """The models a request names: its `model`, or each of token_check's prompts' `model`."""
    if not isinstance(params, dict):
        return []
    items = [params, *(item for item in params.get("prompts") or () if isinstance(item, dict))]
    return [item["model"] for item in items if isinstance(item.get("model"), str)]
