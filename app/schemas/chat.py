"""The chat completion request: every OpenAI field is honoured, forwarded to the worker, or rejected by name.

All range rules live here; serving code receives a plain dict with defaults filled in and never re-checks.
"""
from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validates_schema

from app.schemas.fields import (InRange, RangeMessage, RequestSchema, UnsupportedMessage, accept_only,
                                strict_boolean, unsupported)
from app.schemas.sampling import SamplingRequestSchema

ROLES = ("system", "developer", "user", "assistant")


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
                message = UnsupportedMessage(f"Content parts of type '{kind}' are not supported.")
                raise ValidationError({index: [message]})
            else:
                raise ValidationError({index: ["Must be a content part such as {\"type\": \"text\", \"text\": ...}."]})
        # FastChat joins the text parts of one message with newlines.
        return "\n".join(texts)


class MessageSchema(RequestSchema):
    role = fields.String(required=True, validate=_check_role)
    content = MessageContent(required=True)
    name = fields.String(allow_none=True)
    tool_calls = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "Assistant messages with tool_calls are not supported."))
    function_call = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "Assistant messages with function_call are not supported."))

    @post_load
    def _keep_rendered_fields(self, data, **kwargs):
        return {"role": data["role"], "content": data["content"]}


# Built once: a schema instance deep-copies its fields, which would cost more than loading a short chat.
_MESSAGE_LIST = MessageSchema(many=True)


class Messages(fields.Field):
    """A non-empty list of chat messages, or (FastChat's extension) a string used verbatim as the prompt."""

    default_error_messages = {"invalid": "Must be a non-empty list of messages."}

    def __init__(self, *, max_items: int = 2048, **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise self.make_error("invalid")
        if len(value) > self.max_items:
            raise ValidationError(RangeMessage(f"At most {self.max_items} messages are allowed."))
        return _MESSAGE_LIST.load(value)


class ChatCompletionRequestSchema(SamplingRequestSchema):
    """POST /v1/chat/completions."""

    messages = Messages(required=True)
    max_completion_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    logprobs = strict_boolean(allow_none=True)
    top_logprobs = fields.Integer(strict=True, allow_none=True, validate=InRange(min=0, max=20))
    tools = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "tools (function calling) are not supported by FastChat workers."))
    tool_choice = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: v in ("none", "auto"), "tool_choice is not supported: FastChat workers have no tool calling."))
    functions = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "functions (function calling) are not supported by FastChat workers."))
    function_call = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: v in ("none", "auto"), "function_call is not supported: FastChat workers have no function calling."))
    response_format = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: isinstance(v, dict) and v.get("type") == "text",
        "Only response_format {\"type\": \"text\"} is supported."))
    modalities = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: v == ["text"], "Only the text modality is supported."))
    audio = fields.Raw(allow_none=True, validate=accept_only(lambda v: False, "Audio output is not supported."))
    prediction = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: False, "Predicted outputs are not supported."))
    web_search_options = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: False, "Web search is not supported."))

    def __init__(self, *, max_messages: int = 2048, **kwargs):
        super().__init__(**kwargs)
        self.fields["messages"].max_items = max_messages

    @validates_schema
    def _check_chat_combinations(self, data, **kwargs):
        both = data.get("max_tokens"), data.get("max_completion_tokens")
        if None not in both and both[0] != both[1]:
            raise ValidationError("Set max_completion_tokens or max_tokens, not both.", "max_tokens")
        if data.get("top_logprobs") is not None and not data.get("logprobs"):
            raise ValidationError("top_logprobs requires logprobs to be true.", "top_logprobs")

    def params(self, data: dict) -> dict:
        params = super().params(data)
        params["messages"] = data["messages"]
        params["max_tokens"] = data.get("max_completion_tokens") or data.get("max_tokens")
        # The number of alternatives per token, or None when no logprobs were asked for.
        params["top_logprobs"] = (data.get("top_logprobs") or 0) if data.get("logprobs") else None
        return params


class FastChatChatCompletionRequestSchema(ChatCompletionRequestSchema):
    """POST /api/v1/chat/completions: FastChat's extension always sends repetition_penalty (default 1.0)."""

    def params(self, data: dict) -> dict:
        params = super().params(data)
        if params["repetition_penalty"] is None:
            params["repetition_penalty"] = 1.0
        return params
