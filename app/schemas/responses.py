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


# --- responses (the Responses API, POST /v1/responses) ----------------------------------------------------------

ITEM_STATUSES = ("in_progress", "completed", "incomplete")


class BodyUnion(fields.Field):
    """One of several bodies, told apart by their `type` field, or one of `strings` (the OpenAPI document says
    oneOf)."""

    def __init__(self, *schemas: type[Schema], strings: tuple[str, ...] = (), **kwargs):
        super().__init__(**kwargs)
        self.schemas = schemas
        self.strings = strings


def _empty_list(description: str) -> fields.List:
    return _fixed([], fields.List(fields.Raw(), required=True, validate=validate.Length(max=0),
                                  metadata={"description": description}))


def _item_status() -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(ITEM_STATUSES), metadata={
        "description": "`in_progress` while streamed, then `completed`, or `incomplete` when max_output_tokens "
                       "was reached."})


class ResponseOutputTextSchema(Schema):
    """The text of an output message."""

    type = _const("output_text")
    text = _str()
    annotations = _empty_list("Always empty.")
    logprobs = _empty_list("Always empty.")


class ResponseOutputMessageSchema(Schema):
    """An output item: the assistant's text."""

    id = _str("`msg_` followed by 32 hex digits.")
    type = _const("message")
    status = _item_status()
    role = _const("assistant")
    content = fields.List(fields.Nested(ResponseOutputTextSchema), required=True, validate=validate.Length(max=1))


class ResponseFunctionCallSchema(Schema):
    """An output item: a call of one of the request's function tools. Send it back as an input item, followed
    by a function_call_output item with the same call_id."""

    id = _str("`fc_` followed by 32 hex digits.")
    type = _const("function_call")
    status = _item_status()
    call_id = _str("`call_` followed by 24 hex digits; unique within the response.")
    name = _str("One of the request's tools.")
    arguments = _str("A JSON object, as a string (always parses once complete).")


OUTPUT_ITEMS = (ResponseOutputMessageSchema, ResponseFunctionCallSchema)


class ResponseFunctionToolSchema(Schema):
    """A function tool of the request, echoed."""

    type = _const("function")
    name = _str()
    description = _str(allow_none=True)
    parameters = fields.Dict(required=True, allow_none=True)
    strict = fields.Boolean(required=True, allow_none=True, metadata={
        "description": "As sent (null when absent): the arguments are checked to parse, not constrained."})


class ResponseToolChoiceFunctionSchema(Schema):
    """tool_choice naming a function."""

    type = _const("function")
    name = _str()


class ResponseTextFormatSchema(Schema):
    """text.format of a text or JSON object reply."""

    type = fields.String(required=True, validate=validate.OneOf(["text", "json_object"]))


class ResponseJsonSchemaFormatSchema(Schema):
    """text.format of a reply checked against a JSON Schema."""

    type = _const("json_schema")
    name = _str()
    schema = fields.Dict(required=True, allow_none=True)
    strict = fields.Boolean(required=True, allow_none=True)


class ResponseTextSchema(Schema):
    """The request's text settings, echoed."""

    format = BodyUnion(ResponseTextFormatSchema, ResponseJsonSchemaFormatSchema, required=True, metadata={
        "description": "The reply's format (JSON mode)."})


class ResponseReasoningSchema(Schema):
    """Always null settings: FastChat workers do not reason on request."""

    effort = _fixed(None, _str(allow_none=True))
    summary = _fixed(None, _str(allow_none=True))


class ResponseInputTokensDetailsSchema(Schema):
    cached_tokens = _fixed(0, _int("Always 0."))
    cache_write_tokens = _fixed(0, _int("Always 0."))


class ResponseOutputTokensDetailsSchema(Schema):
    reasoning_tokens = _fixed(0, _int("Always 0."))


class ResponseUsageSchema(Schema):
    """Token counts: the prompt (instructions and input as the worker's template wrote them) and the output."""

    input_tokens = _int(validate=validate.Range(min=0))
    input_tokens_details = fields.Nested(ResponseInputTokensDetailsSchema, required=True)
    output_tokens = _int(validate=validate.Range(min=0))
    output_tokens_details = fields.Nested(ResponseOutputTokensDetailsSchema, required=True)
    total_tokens = _int(validate=validate.Range(min=0))


class ResponseIncompleteDetailsSchema(Schema):
    reason = _const("max_output_tokens")


class ResponseErrorSchema(Schema):
    """Why a streamed response failed (its `error` event has the gateway's error fields)."""

    code = _const("server_error")
    message = _str()


class ResponseSchema(Schema):
    """A response (POST /v1/responses). Never stored: `store` is always false, `previous_response_id` null."""

    id = _str("`resp_` followed by 32 hex digits.")
    object = _const("response")
    created_at = _int("Unix time, seconds.")
    status = fields.String(required=True, validate=validate.OneOf(["in_progress", "completed", "incomplete",
                                                                   "failed"]), metadata={
        "description": "`completed`, or `incomplete` when max_output_tokens was reached; `in_progress` and "
                       "`failed` only in stream events."})
    background = _fixed(False, fields.Boolean(required=True))
    completed_at = _int("Unix time, seconds; null unless completed.", allow_none=True)
    error = fields.Nested(ResponseErrorSchema, required=True, allow_none=True, metadata={
        "description": "null unless the response failed (only in a stream's response.failed event)."})
    incomplete_details = fields.Nested(ResponseIncompleteDetailsSchema, required=True, allow_none=True)
    instructions = _str(allow_none=True)
    max_output_tokens = _int(allow_none=True)
    max_tool_calls = _int(allow_none=True)
    model = _str()
    output = fields.List(BodyUnion(*OUTPUT_ITEMS), required=True, metadata={
        "description": "A message with the reply's text (if any), then a function_call per call."})
    parallel_tool_calls = fields.Boolean(required=True)
    previous_response_id = _fixed(None, _str("Always null.", allow_none=True))
    reasoning = fields.Nested(ResponseReasoningSchema, required=True)
    store = _fixed(False, fields.Boolean(required=True, metadata={"description": "Always false."}))
    temperature = fields.Float(required=True)
    text = fields.Nested(ResponseTextSchema, required=True)
    tool_choice = BodyUnion(ResponseToolChoiceFunctionSchema, strings=("none", "auto", "required"), required=True)
    tools = fields.List(fields.Nested(ResponseFunctionToolSchema), required=True)
    top_logprobs = _fixed(0, _int("Always 0."))
    top_p = fields.Float(required=True)
    truncation = _const("disabled")
    usage = fields.Nested(ResponseUsageSchema, required=True, allow_none=True, metadata={
        "description": "null until the response is complete (in stream events)."})
    user = _str(allow_none=True)
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


def _sequence_number() -> fields.Integer:
    return _int("The event's position in the stream, from 0.", validate=validate.Range(min=0))


class ResponseCreatedEventSchema(Schema):
    """The first event: the response, `in_progress`, no output yet."""

    type = _const("response.created")
    response = fields.Nested(ResponseSchema, required=True)
    sequence_number = _sequence_number()


class ResponseInProgressEventSchema(Schema):
    type = _const("response.in_progress")
    response = fields.Nested(ResponseSchema, required=True)
    sequence_number = _sequence_number()


class ResponseCompletedEventSchema(Schema):
    """The last event of a response that completed: the whole response, usage included."""

    type = _const("response.completed")
    response = fields.Nested(ResponseSchema, required=True)
    sequence_number = _sequence_number()


class ResponseIncompleteEventSchema(Schema):
    """The last event of a response that reached max_output_tokens."""

    type = _const("response.incomplete")
    response = fields.Nested(ResponseSchema, required=True)
    sequence_number = _sequence_number()


class ResponseFailedEventSchema(Schema):
    """A failure after the first event: the response so far, `failed`; an `error` event follows."""

    type = _const("response.failed")
    response = fields.Nested(ResponseSchema, required=True)
    sequence_number = _sequence_number()


class ResponseOutputItemAddedEventSchema(Schema):
    type = _const("response.output_item.added")
    output_index = _int(validate=validate.Range(min=0))
    item = BodyUnion(*OUTPUT_ITEMS, required=True)
    sequence_number = _sequence_number()


class ResponseOutputItemDoneEventSchema(Schema):
    type = _const("response.output_item.done")
    output_index = _int(validate=validate.Range(min=0))
    item = BodyUnion(*OUTPUT_ITEMS, required=True)
    sequence_number = _sequence_number()


class ResponseContentPartAddedEventSchema(Schema):
    type = _const("response.content_part.added")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    content_index = _int(validate=validate.Range(min=0))
    part = fields.Nested(ResponseOutputTextSchema, required=True)
    sequence_number = _sequence_number()


class ResponseContentPartDoneEventSchema(Schema):
    type = _const("response.content_part.done")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    content_index = _int(validate=validate.Range(min=0))
    part = fields.Nested(ResponseOutputTextSchema, required=True)
    sequence_number = _sequence_number()


class ResponseOutputTextDeltaEventSchema(Schema):
    type = _const("response.output_text.delta")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    content_index = _int(validate=validate.Range(min=0))
    delta = _str("The new text.")
    logprobs = _empty_list("Always empty.")
    sequence_number = _sequence_number()


class ResponseOutputTextDoneEventSchema(Schema):
    type = _const("response.output_text.done")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    content_index = _int(validate=validate.Range(min=0))
    text = _str("The whole text.")
    logprobs = _empty_list("Always empty.")
    sequence_number = _sequence_number()


class ResponseFunctionCallArgumentsDeltaEventSchema(Schema):
    """A call's arguments, sent whole in one delta (never diffed from partial JSON)."""

    type = _const("response.function_call_arguments.delta")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    delta = _str()
    sequence_number = _sequence_number()


class ResponseFunctionCallArgumentsDoneEventSchema(Schema):
    type = _const("response.function_call_arguments.done")
    item_id = _str()
    output_index = _int(validate=validate.Range(min=0))
    name = _str()
    arguments = _str()
    sequence_number = _sequence_number()


class ResponseErrorEventSchema(Schema):
    """The last event of a failed stream (after response.failed): the gateway's error fields, also under `error`
    so the openai SDK raises APIError with them."""

    type = _const("error")
    code = _str("As in the Error body's `error.code`.", allow_none=True)
    message = _str()
    param = _str(allow_none=True)
    error = fields.Nested(ErrorDetailSchema, required=True)
    sequence_number = _sequence_number()


# Every event of a streamed response, in the order a stream may send them.
RESPONSE_EVENTS: tuple[type[Schema], ...] = (
    ResponseCreatedEventSchema, ResponseInProgressEventSchema, ResponseOutputItemAddedEventSchema,
    ResponseContentPartAddedEventSchema, ResponseOutputTextDeltaEventSchema, ResponseOutputTextDoneEventSchema,
    ResponseContentPartDoneEventSchema, ResponseFunctionCallArgumentsDeltaEventSchema,
    ResponseFunctionCallArgumentsDoneEventSchema, ResponseOutputItemDoneEventSchema, ResponseCompletedEventSchema,
    ResponseIncompleteEventSchema, ResponseFailedEventSchema, ResponseErrorEventSchema,
)
# Their component names in the OpenAPI document.
RESPONSE_EVENT_COMPONENTS = tuple(schema.__name__.removesuffix("Schema") for schema in RESPONSE_EVENTS)


# The response bodies of the OpenAPI document, each a component named after its class without "Schema" (the
# schemas they nest are components too).
COMPONENTS: tuple[type[Schema], ...] = (
    ModelListSchema, ModelCardSchema, ChatCompletionSchema, ChatCompletionChunkSchema, CompletionSchema,
    CompletionChunkSchema, EmbeddingListSchema, TokenCheckResponseSchema, HealthSchema, ReadySchema, UsageSchema,
    ErrorSchema, *OUTPUT_ITEMS, ResponseSchema, *RESPONSE_EVENTS,
)
