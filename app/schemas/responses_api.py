"""The Responses API request (POST /v1/responses), served statelessly as a chat completion.

This schema checks what is the Responses API's own (the shapes of input items, tools, tool_choice and text.format,
the stateful and hosted features it refuses by name), then loads the request translated into a chat completion
request (app/schemas/responses_chat.py) through the app's chat schema: every other rule (ranges, limits, tool and
JSON Schema checks, roles and tool-call pairing, image parts) is the chat API's, and its errors are reported under
the Responses field names. Loaded, the request is the chat params plus `responses`: what the response echoes and
the origins of the chat messages (for errors raised while serving).
"""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate

from app.schemas.chat import ChatCompletionRequestSchema
from app.schemas.fields import InRange, RangeMessage, RequestSchema, UnsupportedMessage, accept_only, strict_boolean
from app.schemas.responses_chat import input_messages, origin, responses_messages
from app.schemas.sampling import SamplingRequestSchema
from app.schemas.tools import CHOICES

_STATELESS = "this server does not store responses or conversations (it is stateless)"
# include values that ask for data of items this server never produces (hosted tools, reasoning) or of stored
# input: accepted, they have nothing to add.
INCLUDE_WITHOUT_EFFECT = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
)
REASONING_EFFORTS_WITHOUT_EFFECT = ("none",)
MAX_METADATA = 16


def _never(message: str) -> fields.Raw:
    """A field accepted only when absent or null."""
    return fields.Raw(allow_none=True, validate=accept_only(lambda value: False, message))


def _at_most_pairs(metadata: dict) -> None:
    if len(metadata) > MAX_METADATA:
        raise ValidationError(RangeMessage(f"At most {MAX_METADATA} metadata pairs are allowed."))


class ResponseInput(fields.Field):
    """`input`: a string (one user message) or a list of items; loaded as (chat messages, their origins)."""

    default_error_messages = {"invalid": "Must be a string or a non-empty list of input items."}

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[list[dict], list[dict]]:
        if not isinstance(value, (str, list)) or value == []:
            raise self.make_error("invalid")
        return input_messages(value)


class ResponseTools(fields.Field):
    """`tools` in the Responses API's flat shape, loaded in the chat shape. Other tool types go to the chat
    schema as they are: it refuses them by type (hosted tools run on OpenAI's servers)."""

    default_error_messages = {"invalid": "Must be a list of tools."}

    def _deserialize(self, value, attr, data, **kwargs) -> list:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return [{"type": "function", "function": {key: item for key, item in tool.items() if key != "type"}}
                if isinstance(tool, dict) and tool.get("type") == "function" else tool for tool in value]


class ResponseToolChoice(fields.Field):
    """"none", "auto", "required" or {"type": "function", "name": ...}, loaded in the chat shape."""

    default_error_messages = {"invalid": 'Must be "none", "auto", "required" or {{"type": "function", "name": ...}}.'}

    def _deserialize(self, value, attr, data, **kwargs):
        if value in CHOICES:
            return value
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "function" and isinstance(value.get("name"), str):
            return {"type": "function", "function": {"name": value["name"]}}
        if isinstance(kind, str) and kind != "function":
            raise ValidationError(UnsupportedMessage(
                f"tool_choice of type '{kind}' is not supported: only none, auto, required or a function."))
        raise self.make_error("invalid")


class ResponseTextFormat(fields.Field):
    """`text.format`: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", name, schema, ...},
    loaded as the chat response_format."""

    default_error_messages = {"invalid": 'Must be {{"type": "text"}}, {{"type": "json_object"}} or '
                                         '{{"type": "json_schema", "name": ..., "schema": {{...}}}}.'}

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind in ("text", "json_object"):
            return {"type": kind}
        if kind != "json_schema":
            raise self.make_error("invalid")
        if value.get("schema") is None:  # optional in chat's json_schema, required here
            raise ValidationError({"schema": ["Missing data for required field."]})
        return {"type": kind, "json_schema": {key: item for key, item in value.items() if key != "type"}}


class ResponseTextOptionsSchema(RequestSchema):
    format = ResponseTextFormat(allow_none=True)
    verbosity = fields.String(allow_none=True, validate=accept_only(
        lambda value: value == "medium", "Only the default verbosity (medium) is supported."))


class ResponseReasoningOptionsSchema(RequestSchema):
    effort = fields.String(allow_none=True, validate=accept_only(
        lambda value: value in REASONING_EFFORTS_WITHOUT_EFFECT,
        "Reasoning effort is not supported: FastChat workers do not reason on request (null or none only)."))
    summary = _never("Reasoning summaries are not supported.")
    generate_summary = _never("Reasoning summaries are not supported.")


class ResponseStreamOptionsSchema(RequestSchema):
    include_obfuscation = strict_boolean(allow_none=True)  # accepted; the events carry no obfuscation field


class CreateResponseRequestSchema(RequestSchema):
    """POST /v1/responses."""

    model = fields.String(required=True)
    input = ResponseInput(required=True)
    instructions = fields.String(allow_none=True)
    tools = ResponseTools(allow_none=True)
    tool_choice = ResponseToolChoice(allow_none=True)
    parallel_tool_calls = strict_boolean(allow_none=True)
    # The chat fields themselves, so both APIs document and check them alike.
    temperature = SamplingRequestSchema._declared_fields["temperature"]
    top_p = SamplingRequestSchema._declared_fields["top_p"]
    max_output_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    text = fields.Nested(ResponseTextOptionsSchema, allow_none=True)
    stream = strict_boolean(allow_none=True)
    stream_options = fields.Nested(ResponseStreamOptionsSchema, allow_none=True)
    user = fields.String(allow_none=True)
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(max=64)),
                           values=fields.String(validate=validate.Length(max=512)), allow_none=True,
                           validate=_at_most_pairs)
    store = strict_boolean(allow_none=True)  # accepted and treated as false
    max_tool_calls = fields.Integer(strict=True, allow_none=True, validate=InRange(min=0))
    truncation = fields.String(allow_none=True, validate=accept_only(
        lambda value: value == "disabled", "truncation 'auto' is not supported: a prompt over the context is a "
                                           "400 (context_length_exceeded)."))
    top_logprobs = fields.Integer(strict=True, allow_none=True, validate=accept_only(
        lambda value: value == 0, "top_logprobs is not supported on /v1/responses (chat completions has "
                                  "logprobs)."))
    include = fields.List(fields.String(validate=accept_only(
        lambda value: value in INCLUDE_WITHOUT_EFFECT, "This include value is not supported.")), allow_none=True)
    reasoning = fields.Nested(ResponseReasoningOptionsSchema, allow_none=True)
    # Ignored: hints for OpenAI's caching, abuse detection and billing.
    service_tier = fields.String(allow_none=True)
    safety_identifier = fields.String(allow_none=True)
    prompt_cache_key = fields.String(allow_none=True)
    prompt_cache_retention = fields.String(allow_none=True)
    previous_response_id = _never(f"previous_response_id is not supported: {_STATELESS}. Send the whole "
                                  "conversation as input items.")
    conversation = _never(f"conversation is not supported: {_STATELESS}. Send the whole conversation as input "
                          "items.")
    background = fields.Raw(allow_none=True, validate=accept_only(
        lambda value: value is False, f"Background responses are not supported: {_STATELESS}."))
    prompt = _never(f"Stored prompts are not supported: {_STATELESS}. Send instructions and input instead.")
    context_management = fields.Raw(allow_none=True, validate=accept_only(
        lambda value: not value, "context_management (compaction) is not supported."))

    def __init__(self, *, chat: Schema | None = None, max_tokens: int = 131072, **kwargs):
        """chat: the app's chat schema (with its limits); max_tokens: MAX_TOKENS_CAP, for the document."""
        super().__init__(**kwargs)
        self.chat = chat or ChatCompletionRequestSchema(max_tokens=max_tokens)
        self.fields["max_output_tokens"].validators = [InRange(min=1, max=max_tokens)]

    @post_load
    def _as_chat(self, data: dict, **kwargs) -> dict:
        messages, origins = data["input"]
        if data.get("instructions"):
            messages, origins = [{"role": "system", "content": data["instructions"]}, *messages], \
                [origin("instructions"), *origins]
        chat = {"model": data["model"], "messages": messages, "max_tokens": data.get("max_output_tokens"),
                "response_format": (data.get("text") or {}).get("format"),
                **{name: data.get(name) for name in ("temperature", "top_p", "tools", "tool_choice",
                                                     "parallel_tool_calls", "stream", "user")}}
        chat = {name: value for name, value in chat.items() if value is not None}
        try:
            params = self.chat.load(chat)
        except ValidationError as exc:
            raise ValidationError(responses_messages(exc.messages, origins)) from None
        params["responses"] = {"instructions": data.get("instructions"), "metadata": data.get("metadata") or {},
                               "max_tool_calls": data.get("max_tool_calls"), "user": data.get("user"),
                               "origins": origins,
                               "chat": chat}  # what a routed model's upstream is sent (app.api.responses)
        return params
