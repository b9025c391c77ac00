"""The chat completion request: every OpenAI field is honoured, forwarded to the worker, or rejected by name.

All range rules live here; serving code receives a plain dict with defaults filled in and never re-checks.
"""
from __future__ import annotations

from collections.abc import Callable

from marshmallow import ValidationError, fields, post_load, validates_schema

from app.schemas.fields import (InRange, RequestSchema, StringOrList, UnsupportedMessage, not_zero_top_k,
                                unsupported)

ROLES = ("system", "developer", "user", "assistant")


def _accept_only(accept: Callable[[object], bool], message: str) -> Callable[[object], None]:
    """A validator rejecting, as unsupported, any value `accept` refuses (null never reaches validators)."""

    def check(value: object) -> None:
        if not accept(value):
            raise unsupported(message)

    return check


def _check_role(role: str) -> None:
    if role in ("tool", "function"):
        raise unsupported(f"Messages with role '{role}' are not supported: FastChat workers have no tool calling.")
    if role not in ROLES:
        raise ValidationError(f"Unknown role '{role}'; expected one of {', '.join(ROLES)}.")


class MessageContent(fields.Field):
    """A message's content: a string, or a list of parts of which only text parts are supported."""

    default_error_messages = {"invalid": "Must be a string or a list of content parts."}

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise self.make_error("invalid")
        texts = []
        for index, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in ("image_url", "input_audio", "file"):
                raise ValidationError({index: [UnsupportedMessage(f"Content parts of type '{kind}' are not supported.")]})
            else:
                raise ValidationError({index: ["Must be a content part such as {\"type\": \"text\", \"text\": ...}."]})
        # FastChat joins the text parts of one message with newlines.
        return "\n".join(texts)


class MessageSchema(RequestSchema):
    role = fields.String(required=True, validate=_check_role)
    content = MessageContent(required=True)
    name = fields.String(allow_none=True)
    tool_calls = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: not v, "Assistant messages with tool_calls are not supported."))
    function_call = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: not v, "Assistant messages with function_call are not supported."))

    @post_load
    def _keep_rendered_fields(self, data, **kwargs):
        return {"role": data["role"], "content": data["content"]}


class Messages(fields.Field):
    """A non-empty list of chat messages, or (FastChat's extension) a string used verbatim as the prompt."""

    default_error_messages = {"invalid": "Must be a non-empty list of messages."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise self.make_error("invalid")
        return MessageSchema(many=True).load(value)


class ChatCompletionRequestSchema(RequestSchema):
    """POST /v1/chat/completions."""

    model = fields.String(required=True)
    messages = Messages(required=True)
    temperature = fields.Float(allow_none=True, validate=InRange(min=0, max=2))
    top_p = fields.Float(allow_none=True, validate=InRange(min=0, max=1))
    top_k = fields.Integer(strict=True, allow_none=True, validate=not_zero_top_k)
    n = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    max_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    max_completion_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    stop = StringOrList(allow_none=True)
    stream = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    stream_options = fields.Dict(allow_none=True)
    presence_penalty = fields.Float(allow_none=True, validate=InRange(min=-2, max=2))
    frequency_penalty = fields.Float(allow_none=True, validate=InRange(min=-2, max=2))
    repetition_penalty = fields.Float(allow_none=True, validate=InRange(min=0, min_inclusive=False))
    seed = fields.Integer(strict=True, allow_none=True)
    user = fields.String(allow_none=True)
    logprobs = fields.Boolean(allow_none=True, truthy={True}, falsy={False}, validate=_accept_only(
        lambda v: v is False, "logprobs on chat completions is not supported yet."))
    top_logprobs = fields.Integer(strict=True, allow_none=True, validate=_accept_only(
        lambda v: False, "top_logprobs on chat completions is not supported yet."))
    logit_bias = fields.Dict(allow_none=True, validate=_accept_only(
        lambda v: not v, "logit_bias is not supported by FastChat workers."))
    tools = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: not v, "tools (function calling) are not supported by FastChat workers."))
    tool_choice = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: v in ("none", "auto"), "tool_choice is not supported: FastChat workers have no tool calling."))
    functions = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: not v, "functions (function calling) are not supported by FastChat workers."))
    function_call = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: v in ("none", "auto"), "function_call is not supported: FastChat workers have no function calling."))
    response_format = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: isinstance(v, dict) and v.get("type") == "text",
        "Only response_format {\"type\": \"text\"} is supported."))
    modalities = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: v == ["text"], "Only the text modality is supported."))
    audio = fields.Raw(allow_none=True, validate=_accept_only(lambda v: False, "Audio output is not supported."))
    prediction = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: False, "Predicted outputs are not supported."))
    web_search_options = fields.Raw(allow_none=True, validate=_accept_only(
        lambda v: False, "Web search is not supported."))

    def __init__(self, *, max_n: int = 128, max_stop: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.fields["n"].validators = [InRange(min=1, max=max_n)]
        self.fields["stop"].max_items = max_stop

    @validates_schema
    def _check_combinations(self, data, **kwargs):
        if data.get("stream_options") is not None:
            if not data.get("stream"):
                raise ValidationError("stream_options is only allowed when stream is true.", "stream_options")
            if not isinstance(data["stream_options"].get("include_usage", False), bool):
                raise ValidationError({"include_usage": ["Not a valid boolean."]}, "stream_options")
        both = data.get("max_tokens"), data.get("max_completion_tokens")
        if None not in both and both[0] != both[1]:
            raise ValidationError("Set max_completion_tokens or max_tokens, not both.", "max_tokens")

    @post_load
    def _fill_defaults(self, data, **kwargs) -> dict:
        """Explicit nulls mean "default" (FastChat forwarded them and the worker crashed on float(None))."""
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        return {
            "model": data["model"],
            "messages": data["messages"],
            "temperature": _default(data.get("temperature"), 1.0),
            "top_p": _default(data.get("top_p"), 1.0),
            "top_k": _default(data.get("top_k"), -1),
            "n": _default(data.get("n"), 1),
            "max_tokens": max_tokens,
            "stop": list(dict.fromkeys(s for s in data.get("stop") or () if s)),
            "stream": bool(data.get("stream")),
            "include_usage": bool((data.get("stream_options") or {}).get("include_usage")),
            "presence_penalty": _default(data.get("presence_penalty"), 0.0),
            "frequency_penalty": _default(data.get("frequency_penalty"), 0.0),
            "repetition_penalty": data.get("repetition_penalty"),
            "seed": data.get("seed"),
        }


def _default(value, default):
    return default if value is None else value
