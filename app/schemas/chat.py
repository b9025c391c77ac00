"""The chat completion request: every OpenAI field is honoured, forwarded to the worker, or rejected by name.

All range rules live here; serving code receives a plain dict with defaults filled in and never re-checks.
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import ValidationError, fields, post_load, validates_schema

from app.images.check import load_part
from app.images.parts import IMAGE_TOO_MANY, ImageError
from app.images.rules import ImageRules
from app.schemas.chat_common import load_common
from app.schemas.fields import (CodedMessage, InRange, RangeMessage, RequestSchema, UnsupportedMessage, accept_only,
                                strict_boolean, unsupported)
from app.schemas.sampling import SamplingRequestSchema
from app.schemas.tools import (ResponseFormat, ToolChoice, Tools, check_conversation, check_message,
                               check_tool_choice, effective_tool_choice, tool_call_id_field, tool_calls_field)

ROLES = ("system", "developer", "user", "assistant", "tool")


def _check_role(role: str) -> None:
    if role == "function":
        raise unsupported("Messages with role 'function' (the legacy function calling) are not supported: send "
                          "tool results as role 'tool' messages with tool_call_id.")
    if role not in ROLES:
        raise ValidationError(f"Unknown role '{role}'; expected one of {', '.join(ROLES)}.")


@dataclass(frozen=True)
class ContentParts:
    """A content list that holds image parts: its text parts joined, and each image part's (index, URL)."""

    text: str
    images: tuple[tuple[int, str], ...]


class MessageContent(fields.Field):
    """A message's content: a string, or a list of text and image_url parts (other kinds are refused by name).

    Text-only content loads as the texts joined with newlines (as FastChat joins them); content with images as
    ContentParts, which Messages checks against the image rules once it knows the message's position.
    """

    default_error_messages = {"invalid": "Must be a string or a list of content parts."}

    def _deserialize(self, value, attr, data, **kwargs) -> str | ContentParts:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise self.make_error("invalid")
        texts, images, errors = [], [], {}
        for index, part in enumerate(value):  # every part's problem, so that each can be told (or spared)
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                try:
                    images.append((index, _image_url(part.get("image_url"), index)))
                except ValidationError as exc:
                    errors.update(exc.messages)
            elif kind in ("input_audio", "file"):
                errors[index] = [UnsupportedMessage(f"Content parts of type '{kind}' are not supported.")]
            else:
                errors[index] = ["Must be a content part such as {\"type\": \"text\", \"text\": ...}."]
        if errors:
            raise ValidationError(errors)
        # FastChat joins the text parts of one message with newlines.
        return ContentParts("\n".join(texts), tuple(images)) if images else "\n".join(texts)


def _image_url(value, index: int) -> str:
    """An image_url part's URL: {"url": ..., "detail": "auto"|"low"|"high"} or the URL alone. The detail is
    accepted and not used: FastChat's vision workers have no such setting."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        if value.get("detail") not in (None, "auto", "low", "high"):
            raise ValidationError({index: ["image_url.detail must be auto, low or high."]})
        return value["url"]
    raise ValidationError({index: ["Must be an image part such as {\"type\": \"image_url\", \"image_url\": "
                                   "{\"url\": \"data:image/png;base64,...\"}}."]})


class MessageSchema(RequestSchema):
    role = fields.String(required=True, validate=_check_role)
    # Null (or absent) only on an assistant message with tool_calls: check_message says so by name.
    content = MessageContent(load_default=None, allow_none=True)
    name = fields.String(allow_none=True)
    tool_calls = tool_calls_field()
    tool_call_id = tool_call_id_field()
    function_call = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "Assistant messages with function_call (the legacy function calling) are not supported: "
                         "use tool_calls."))

    @validates_schema
    def _check_role_fields(self, data, **kwargs):
        content = data.get("content")
        if isinstance(content, ContentParts) and data.get("role") != "user":
            index = content.images[0][0]
            raise ValidationError({index: [UnsupportedMessage(
                f"Images are accepted only in user messages, not in {data['role']} messages.")]}, "content")
        check_message(data)

    @post_load
    def _keep_rendered_fields(self, data, **kwargs):
        content = data["content"]
        message = {"role": data["role"], "content": content}
        if isinstance(content, ContentParts):  # Messages turns the URLs into checked images
            message["content"], message["images"] = content.text, content.images
        if data.get("tool_calls"):
            message["tool_calls"] = data["tool_calls"]
        if data["role"] == "tool":
            message["tool_call_id"] = data["tool_call_id"]
        return message


# Built once: a schema instance deep-copies its fields, which would cost more than loading a short chat.
_MESSAGE_LIST = MessageSchema(many=True)


class Messages(fields.Field):
    """A non-empty list of chat messages, or (FastChat's extension) a string used verbatim as the prompt."""

    default_error_messages = {"invalid": "Must be a non-empty list of messages."}

    def __init__(self, *, max_items: int = 2048, image_rules: ImageRules = ImageRules(), **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items
        self.image_rules = image_rules

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise self.make_error("invalid")
        if len(value) > self.max_items:
            raise ValidationError(RangeMessage(f"At most {self.max_items} messages are allowed."))
        messages = _MESSAGE_LIST.load(value)
        check_conversation(messages)
        _load_images(messages, self.image_rules)
        return messages


def _load_images(messages: list[dict], rules: ImageRules) -> None:
    """Replace each user message's image URLs by checked images (app.images.parts), in place. Raises
    ValidationError naming the part (messages[i].content[j]) of the first refused one."""
    count = 0
    for position, message in enumerate(messages):
        if "images" not in message:
            continue
        loaded = []
        for index, url in message["images"]:
            count += 1
            try:
                if count > rules.max_count:
                    raise ImageError(f"At most {rules.max_count} images are accepted in one request "
                                     "(IMAGE_MAX_COUNT).", IMAGE_TOO_MANY)
                loaded.append(load_part(url, rules, f"messages[{position}].content[{index}]"))
            except ImageError as exc:
                raise ValidationError({position: {"content": {index: [CodedMessage(exc.message, exc.code)]}}}) \
                    from None
        message["images"] = loaded


class ChatCompletionRequestSchema(SamplingRequestSchema):
    """POST /v1/chat/completions."""

    messages = Messages(required=True)
    max_completion_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    logprobs = strict_boolean(allow_none=True)
    top_logprobs = fields.Integer(strict=True, allow_none=True, validate=InRange(min=0, max=20))
    tools = Tools(allow_none=True)
    tool_choice = ToolChoice(allow_none=True)
    parallel_tool_calls = strict_boolean(allow_none=True)
    # The legacy function calling stays refused, pointing at its replacement.
    functions = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: not v, "functions (the legacy function calling) are not supported: use tools."))
    function_call = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: v in ("none", "auto"), "function_call (the legacy function calling) is not supported: use "
                                         "tool_choice."))
    response_format = ResponseFormat(allow_none=True)
    modalities = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: v == ["text"], "Only the text modality is supported."))
    audio = fields.Raw(allow_none=True, validate=accept_only(lambda v: False, "Audio output is not supported."))
    prediction = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: False, "Predicted outputs are not supported."))
    web_search_options = fields.Raw(allow_none=True, validate=accept_only(
        lambda v: False, "Web search is not supported."))

    def __init__(self, *, max_messages: int = 2048, image_rules: ImageRules = ImageRules(), **kwargs):
        super().__init__(**kwargs)
        self.fields["messages"].max_items = max_messages
        self.fields["messages"].image_rules = image_rules

    def load(self, data, **kwargs):
        """The plain text chat loaded without marshmallow's walk (app.schemas.chat_common), anything else by it."""
        if not kwargs:
            params = load_common(self, data)
            if params is not None:
                return params
        return super().load(data, **kwargs)

    @validates_schema
    def _check_chat_combinations(self, data, **kwargs):
        both = data.get("max_tokens"), data.get("max_completion_tokens")
        if None not in both and both[0] != both[1]:
            raise ValidationError("Set max_completion_tokens or max_tokens, not both.", "max_tokens")
        if data.get("top_logprobs") is not None and not data.get("logprobs"):
            raise ValidationError("top_logprobs requires logprobs to be true.", "top_logprobs")
        check_tool_choice(data.get("tools"), data.get("tool_choice"))
        offered = data.get("tools") and data.get("tool_choice") != "none"
        if offered and isinstance(data.get("messages"), str):
            raise ValidationError(UnsupportedMessage(
                "tools need messages as a list: a raw prompt (a string) is sent verbatim, so tools cannot be "
                "written into it."), "tools")
        if data.get("logprobs") and (offered or _json_reply(data.get("response_format"))):
            # The content returned is cut out of the generated text (calls and text around a JSON object
            # removed), so per-token logprobs would not line up with it.
            raise ValidationError(UnsupportedMessage(
                "logprobs cannot be combined with tools or a JSON response_format: the returned content is cut "
                "out of the generated text, so the tokens' logprobs would not match it."), "logprobs")

    def params(self, data: dict) -> dict:
        params = super().params(data)
        params["messages"] = data["messages"]
        params["max_tokens"] = data.get("max_completion_tokens") or data.get("max_tokens")
        # The number of alternatives per token, or None when no logprobs were asked for.
        params["top_logprobs"] = (data.get("top_logprobs") or 0) if data.get("logprobs") else None
        params["tools"] = data.get("tools")
        params["tool_choice"] = effective_tool_choice(data.get("tools"), data.get("tool_choice"))
        params["parallel_tool_calls"] = data.get("parallel_tool_calls") is not False
        # None for plain text replies.
        params["response_format"] = data["response_format"] if _json_reply(data.get("response_format")) else None
        return params


def _json_reply(response_format: dict | None) -> bool:
    return (response_format or {}).get("type") in ("json_object", "json_schema")


class FastChatChatCompletionRequestSchema(ChatCompletionRequestSchema):
    """POST /api/v1/chat/completions: FastChat's extension always sends repetition_penalty (default 1.0)."""

    def params(self, data: dict) -> dict:
        params = super().params(data)
        if params["repetition_penalty"] is None:
            params["repetition_penalty"] = 1.0
        return params
