"""Every response body: the one spelling of its fields, for the OpenAPI document and for app/serving/payloads.py.

payloads.py derives a builder of plain dicts from each schema once, at import time (bodies are never dumped through
marshmallow: that is too slow per streamed chunk): the builder's parameters are the fields in declaration order
(which is the order of the JSON keys), the FIXED ones filled in. Every field a body always has is `required`;
`allow_none` marks the ones that may be null (the OpenAPI document says `nullable`). Unknown fields are not allowed
(marshmallow's default), so the document lists `additionalProperties: false`. ApiError.body() builds ErrorSchema's
body and app/serving/tokens.py TokenCheckResponseSchema's; their tests validate them against these schemas.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

FINISH_REASONS = ("stop", "length", "tool_calls")

# Metadata key of a field whose value is the same in every body: payloads' builders fill it in. apispec leaves
# unknown metadata keys out of the document.
FIXED = "fixed"


def _fixed(value: object, field: fields.Field) -> fields.Field:
    field.metadata[FIXED] = value
    return field


def _const(value: str, description: str | None = None) -> fields.String:
    """A string field with one value, documented as a one-value enum."""
    metadata = {"description": description} if description else {}
    return _fixed(value, fields.String(required=True, validate=validate.OneOf([value]), metadata=metadata))


def _int(description: str | None = None, **kwargs) -> fields.Integer:
    return fields.Integer(required=True, metadata={"description": description} if description else {}, **kwargs)


def _str(description: str | None = None, **kwargs) -> fields.String:
    return fields.String(required=True, metadata={"description": description} if description else {}, **kwargs)


# --- models ---------------------------------------------------------------------------------------------------

class ModelPermissionSchema(Schema):
    """FastChat's model permission card (fixed values; kept for FastChat clients)."""

    id = _str("`modelperm-` followed by 32 hex digits.")
    object = _const("model_permission")
    created = _int("Unix time, seconds.")
    allow_create_engine = _fixed(False, fields.Boolean(required=True))
    allow_sampling = _fixed(True, fields.Boolean(required=True))
    allow_logprobs = _fixed(True, fields.Boolean(required=True))
    allow_search_indices = _fixed(True, fields.Boolean(required=True))
    allow_view = _fixed(True, fields.Boolean(required=True))
    allow_fine_tuning = _fixed(False, fields.Boolean(required=True))
    organization = _fixed("*", _str())
    group = _fixed(None, _str(allow_none=True))
    is_blocking = _fixed(False, fields.Boolean(required=True))


class ModelCardSchema(Schema):
    """An OpenAI model object, with FastChat's `root`, `parent` and `permission`."""

    id = _str("The model name, as its workers registered it (may contain slashes).")
    object = _const("model")
    created = _int("Unix time, seconds.")
    owned_by = _fixed("fastchat", _str("Always `fastchat`."))
    root = _str("The model name again (FastChat's card).")
    parent = _fixed(None, _str("Always null.", allow_none=True))
    permission = fields.List(fields.Nested(ModelPermissionSchema), required=True)


class ModelListSchema(Schema):
    """Every model some worker serves, sorted by name."""

    object = _const("list")
    data = fields.List(fields.Nested(ModelCardSchema), required=True)


# --- usage ----------------------------------------------------------------------------------------------------

class UsageSchema(Schema):
    """Token counts of a whole request: each prompt counted once, the completion tokens of every choice."""

    prompt_tokens = _int(validate=validate.Range(min=0))
    completion_tokens = _int(validate=validate.Range(min=0))
    total_tokens = _int(validate=validate.Range(min=0))


# --- logprobs ---------------------------------------------------------------------------------------------------

class ChatTopLogprobSchema(Schema):
    """One alternative token at a position."""

    token = _str()
    logprob = fields.Float(required=True)
    bytes = fields.List(fields.Integer(), required=True, metadata={"description": "The token's UTF-8 bytes."})


class ChatTokenLogprobSchema(Schema):
    """One generated token with its logprob and (up to `top_logprobs`) alternatives."""

    token = _str()
    logprob = fields.Float(required=True)
    bytes = fields.List(fields.Integer(), required=True, metadata={"description": "The token's UTF-8 bytes."})
    top_logprobs = fields.List(fields.Nested(ChatTopLogprobSchema), required=True)


class ChatLogprobsSchema(Schema):
    """Chat logprobs: one entry per token (per chunk when streaming, only the chunk's new tokens)."""

    content = fields.List(fields.Nested(ChatTokenLogprobSchema), required=True)
    refusal = fields.String(required=True, allow_none=True, metadata={"description": "Always null."})


class CompletionLogprobsSchema(Schema):
    """The worker's logprobs in OpenAI's completion shape: four lists of one entry per token (per chunk when
    streaming, only the chunk's new tokens)."""

    text_offset = fields.List(fields.Integer(), required=True)
    token_logprobs = fields.List(fields.Float(allow_none=True), required=True, metadata={
        "description": "null for tokens without a logprob (the first token of an echoed prompt)."})
    tokens = fields.List(fields.String(), required=True)
    top_logprobs = fields.List(
        fields.Dict(keys=fields.String(), values=fields.Float(), allow_none=True), required=True,
        metadata={"description": "Per token, the alternatives the worker computed ({token: logprob}; FastChat's "
                                 "HF worker gives the top 1; empty for echoed prompt tokens)."})


def _finish_reason(*, allow_none: bool) -> fields.String:
    description = ("Why the choice ended: `length` when max_tokens was reached, `tool_calls` when the reply made "
                   "tool calls, else `stop`."
                   + (" null on every chunk but the choice's last." if allow_none else ""))
    return fields.String(required=True, allow_none=allow_none, validate=validate.OneOf(FINISH_REASONS),
                         metadata={"description": description})


# --- chat -------------------------------------------------------------------------------------------------------

class ChatToolCallFunctionSchema(Schema):
    name = _str("One of the request's tools.")
    arguments = _str("A JSON object, as a string (always parses).")


class ChatToolCallSchema(Schema):
    """A call the model made."""

    id = _str("`call_` followed by 24 hex digits; unique within the response.")
    type = _const("function")
    function = fields.Nested(ChatToolCallFunctionSchema, required=True)


class ChatDeltaToolCallSchema(Schema):
    """A complete call, streamed as one delta (the arguments are never split)."""

    index = _int("The call's position in the choice's tool_calls.", validate=validate.Range(min=0))
    id = _str("`call_` followed by 24 hex digits; unique within the response.")
    type = _const("function")
    function = fields.Nested(ChatToolCallFunctionSchema, required=True)


class ChatCompletionMessageSchema(Schema):
    """The generated message."""

    role = _const("assistant")
    content = _str("The text; null when the reply was only tool calls (else the text around them).",
                   allow_none=True)
    refusal = _fixed(None, _str("Always null (OpenAI's schema requires the field).", allow_none=True))
    tool_calls = fields.List(fields.Nested(ChatToolCallSchema), validate=validate.Length(min=1), metadata={
        "description": "Present only when the reply made tool calls."})


class ChatCompletionChoiceSchema(Schema):
    index = _int(validate=validate.Range(min=0))
    message = fields.Nested(ChatCompletionMessageSchema, required=True)
    logprobs = fields.Nested(ChatLogprobsSchema, required=True, allow_none=True, metadata={
        "description": "null unless the request set logprobs: true and the worker computed logprobs."})
    finish_reason = _finish_reason(allow_none=False)


class ChatCompletionSchema(Schema):
    """A whole chat completion (`stream` false or absent)."""

    id = _str("`chatcmpl-` followed by 32 hex digits.")
    object = _const("chat.completion")
    created = _int("Unix time, seconds.")
    model = _str()
    choices = fields.List(fields.Nested(ChatCompletionChoiceSchema), required=True)
    usage = fields.Nested(UsageSchema, required=True)


class ChatCompletionDeltaSchema(Schema):
    """What a chunk adds to its choice: the first chunk of each choice is {"role": "assistant", "content": ""},
    then {"content": <new text>} and, for each complete tool call, {"tool_calls": [<the call>]}, and {} on a
    closing chunk without new text."""

    role = fields.String(validate=validate.OneOf(["assistant"]))
    content = fields.String()
    tool_calls = fields.List(fields.Nested(ChatDeltaToolCallSchema), validate=validate.Length(min=1))


class ChatCompletionChunkChoiceSchema(Schema):
    index = _int(validate=validate.Range(min=0))
    delta = fields.Nested(ChatCompletionDeltaSchema, required=True)
    logprobs = fields.Nested(ChatLogprobsSchema, required=True, allow_none=True, metadata={
        "description": "The logprobs of this chunk's new tokens; null unless logprobs were asked for."})
    finish_reason = _finish_reason(allow_none=True)


_CHUNK_USAGE = ("Present only with stream_options.include_usage: null on every chunk but the last, an extra "
                "chunk with no choices and the usage of the whole request.")


class ChatCompletionChunkSchema(Schema):
    """One `data:` event of a streamed chat completion (`stream: true`, response `text/event-stream`).

    The stream is these chunks, each as `data: <json>` followed by a blank line, choices side by side (one choice
    per chunk, told apart by `index`), then `data: [DONE]`. A failure after the first event is sent as one `data:`
    event holding the Error body, then `data: [DONE]`.
    """

    id = _str("`chatcmpl-` followed by 32 hex digits; the same on every chunk of a stream.")
    object = _const("chat.completion.chunk")
    created = _int("Unix time, seconds; the same on every chunk of a stream.")
    model = _str()
    choices = fields.List(fields.Nested(ChatCompletionChunkChoiceSchema), required=True,
                          validate=validate.Length(max=1),
                          metadata={"description": "One choice, or none on the include_usage usage chunk."})
    usage = fields.Nested(UsageSchema, allow_none=True, metadata={"description": _CHUNK_USAGE})


# --- text completions -----------------------------------------------------------------------------------------------

class CompletionChoiceSchema(Schema):
    index = _int("prompt index * n + choice number.", validate=validate.Range(min=0))
    text = _str()
    logprobs = fields.Nested(CompletionLogprobsSchema, required=True, allow_none=True, metadata={
        "description": "null unless the request set logprobs (0-5) and the worker computed logprobs."})
    finish_reason = _finish_reason(allow_none=False)


class CompletionSchema(Schema):
    """A whole text completion: `prompts x n` choices."""

    id = _str("`cmpl-` followed by 32 hex digits.")
    object = _const("text_completion")
    created = _int("Unix time, seconds.")
    model = _str()
    choices = fields.List(fields.Nested(CompletionChoiceSchema), required=True)
    usage = fields.Nested(UsageSchema, required=True)


class CompletionChunkChoiceSchema(Schema):
    index = _int("prompt index * n + choice number.", validate=validate.Range(min=0))
    text = _str("The new text.")
    logprobs = fields.Nested(CompletionLogprobsSchema, required=True, allow_none=True, metadata={
        "description": "The logprobs of this chunk's new tokens; null unless logprobs were asked for."})
    finish_reason = _finish_reason(allow_none=True)


class CompletionChunkSchema(Schema):
    """One `data:` event of a streamed text completion (`stream: true`, response `text/event-stream`).

    The stream is these chunks, each as `data: <json>` followed by a blank line, one choice per chunk, then
    `data: [DONE]`. A failure after the first event is sent as one `data:` event holding the Error body, then
    `data: [DONE]`.
    """

    id = _str("`cmpl-` followed by 32 hex digits; the same on every chunk of a stream.")
    object = _const("text_completion")
    created = _int("Unix time, seconds; the same on every chunk of a stream.")
    model = _str()
    choices = fields.List(fields.Nested(CompletionChunkChoiceSchema), required=True,
                          validate=validate.Length(max=1),
                          metadata={"description": "One choice, or none on the include_usage usage chunk."})
    usage = fields.Nested(UsageSchema, allow_none=True, metadata={"description": _CHUNK_USAGE})


# --- embeddings -------------------------------------------------------------------------------------------------------

class EmbeddingSchema(Schema):
    object = _const("embedding")
    embedding = fields.Raw(required=True, metadata={
        "description": "The vector: numbers with encoding_format float (the default), or with base64 the "
                       "base64 of its little-endian float32 values.",
        "oneOf": [{"type": "array", "items": {"type": "number"}, "minItems": 1},
                  {"type": "string", "format": "byte"}]})
    index = _int("The input's position.", validate=validate.Range(min=0))


class EmbeddingUsageSchema(Schema):
    prompt_tokens = _int(validate=validate.Range(min=0))
    total_tokens = _int("Equal to prompt_tokens.", validate=validate.Range(min=0))


class EmbeddingListSchema(Schema):
    """One embedding per input, in input order."""

    object = _const("list")
    data = fields.List(fields.Nested(EmbeddingSchema), required=True)
    model = _str()
    usage = fields.Nested(EmbeddingUsageSchema, required=True)


# --- FastChat's token check ---------------------------------------------------------------------------------

class TokenCheckResultSchema(Schema):
    fits = fields.Boolean(required=True, metadata={
        "description": "Whether the prompt's tokens plus max_tokens fit the context (true when it is unknown)."})
    tokenCount = _int("The prompt's tokens, counted by the worker.", validate=validate.Range(min=0))
    contextLength = _int("The model's context length; null when the worker does not know it.", allow_none=True)


class TokenCheckResponseSchema(Schema):
    """One result per item of the request's `prompts`, in order."""

    prompts = fields.List(fields.Nested(TokenCheckResultSchema), required=True)


# --- probes -----------------------------------------------------------------------------------------------------------

class HealthSchema(Schema):
    """Liveness: the process answers (no upstream calls)."""

    status = _const("ok")


class ReadySchema(Schema):
    """Readiness: the gateway can reach its FastChat cluster."""

    status = _const("ready")


# --- errors -----------------------------------------------------------------------------------------------------------

class ErrorDetailSchema(Schema):
    """The part the openai SDK reads."""

    message = _str()
    type = _str("`invalid_request_error`, `server_error` or `service_unavailable_error`.")
    param = _str("The failing request field (a path such as `messages[1].role`), or null.", allow_none=True)
    code = _str("`model_not_found`, `context_length_exceeded`, `unsupported_parameter`, `invalid_api_key`, "
                "`upstream_unavailable`, `upstream_timeout`, `upstream_error`, `worker_error`, or null.",
                allow_none=True)


class ErrorSchema(Schema):
    """Every error, as a JSON response and as an SSE event: FastChat clients read the top-level fields, the openai
    SDK reads `error`."""

    object = _const("error")
    message = _str()
    code = _int("FastChat's error code (e.g. 40001 invalid request, 40101 bad API key, 40301 unknown model, 40302 "
                "parameter out of range, 40303 context overflow, 50001 internal, 50002 CUDA out of memory, 50005 "
                "no worker, 50006 timeout), or the worker's own.")
    error = fields.Nested(ErrorDetailSchema, required=True)


# The response bodies of the OpenAPI document, each a component named after its class without "Schema" (the
# schemas they nest are components too).
COMPONENTS: tuple[type[Schema], ...] = (
    ModelListSchema, ModelCardSchema, ChatCompletionSchema, ChatCompletionChunkSchema, CompletionSchema,
    CompletionChunkSchema, EmbeddingListSchema, TokenCheckResponseSchema, HealthSchema, ReadySchema, UsageSchema,
    ErrorSchema,
)
