"""The Responses API's input as chat messages, and chat field names back as Responses ones.

A Responses request is served as a chat completion (app/schemas/responses_api.py loads the translated request
through the chat schema), so every rule lives once, in the chat schema and serving code. What they report names
chat fields (`messages[3].content[0]`, `max_tokens`); `responses_param` turns those into the fields the client
sent (`input[2].content[0]`, `max_output_tokens`), using the origin of each chat message this module records.
"""
from __future__ import annotations

import re

from marshmallow import ValidationError

from app.schemas.fields import UnsupportedMessage

MESSAGE_ROLES = ("user", "system", "developer", "assistant")
# Items of the Responses API that only its stateful or hosted features produce or consume.
OTHER_ITEM_TYPES = (
    "reasoning", "file_search_call", "web_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "tool_search_call",
    "tool_search_output", "additional_tools", "compaction", "program", "program_output",
)
PART_TYPES = ("input_text", "input_image", "output_text", "refusal")
_PART_HINT = "Must be a content part: input_text, input_image, or (from an earlier response) output_text."


def origin(path: str, content: str | None = None, calls: list[str] | None = None) -> dict:
    """Where a chat message came from: `path` the Responses field it was made of, `content` the field its content
    came from, `calls` the function_call item of each of its tool_calls. A plain dict, so params stay JSON."""
    return {"path": path, "content": content or path, "calls": calls or []}


def input_messages(value) -> tuple[list[dict], list[dict]]:
    """`input` (a string, or a list of items) as chat messages, with each message's origin. Raises
    ValidationError keyed by item index for what the chat schema cannot judge (item kinds, roles, part kinds)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}], [origin("input")]
    if not isinstance(value, list):
        raise ValidationError("Must be a string or a list of input items.")
    messages: list[dict] = []
    origins: list[dict] = []
    for index, item in enumerate(value):
        try:
            _add_item(messages, origins, item, f"input[{index}]")
        except ValidationError as exc:
            raise ValidationError({index: exc.messages}) from None
    return messages, origins


def _add_item(messages: list[dict], origins: list[dict], item, path: str) -> None:
    if not isinstance(item, dict):
        raise ValidationError("Must be an input item: a message, function_call or function_call_output object.")
    kind = item.get("type", "message")
    if kind == "message":
        messages.append(_message(item))
        origins.append(origin(path, f"{path}.content"))
    elif kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            # Consecutive calls, and the text before them, are one assistant turn (as chat writes it).
            last.setdefault("tool_calls", []).append(call)
            origins[-1]["calls"].append(path)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            origins.append(origin(path, calls=[path]))
    elif kind == "function_call_output":
        output = item.get("output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": _parts(output) if isinstance(output, list) else output})
        origins.append(origin(path, f"{path}.output"))
    elif kind == "item_reference":
        raise ValidationError({"type": [UnsupportedMessage(
            "Item references need stored items, which this server does not keep: send the items themselves.")]})
    elif kind in OTHER_ITEM_TYPES:
        raise ValidationError({"type": [UnsupportedMessage(
            f"Input items of type '{kind}' are not supported: only message, function_call and "
            "function_call_output items are.")]})
    else:
        raise ValidationError({"type": [f"Unknown input item type {kind!r}: expected message, function_call or "
                                        "function_call_output."]})


def _message(item: dict) -> dict:
    role = item.get("role")
    if role is None:
        raise ValidationError({"role": ["Missing data for required field."]})
    if role not in MESSAGE_ROLES:
        raise ValidationError({"role": [f"Unknown role {role!r}; expected one of {', '.join(MESSAGE_ROLES)} "
                                        "(tool results are function_call_output items)."]})
    content = item.get("content")
    try:
        return {"role": role, "content": _parts(content) if isinstance(content, list) else content}
    except ValidationError as exc:
        raise ValidationError({"content": exc.messages}) from None


def _parts(parts: list) -> list:
    """Responses content parts as chat ones: text parts, image_url parts (the chat path's image rules apply)."""
    chat_parts = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            chat_parts.append({"type": "text", "text": part.get("text")})
        elif kind == "refusal":
            chat_parts.append({"type": "text", "text": part.get("refusal")})
        elif kind == "input_image":
            try:
                chat_parts.append(_image(part))
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
        elif kind in ("input_file", "input_audio"):
            raise ValidationError({index: [UnsupportedMessage(f"Content parts of type '{kind}' are not supported.")]})
        else:
            raise ValidationError({index: [_PART_HINT]})
    return chat_parts


def _image(part: dict) -> dict:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            raise ValidationError({"file_id": [UnsupportedMessage(
                "Images by file_id need stored files, which this server does not keep: send image_url (a data "
                "URL).")]})
        raise ValidationError({"image_url": ["Missing data: an input_image needs image_url."]})
    if not isinstance(url, str):
        raise ValidationError({"image_url": ["Must be a URL string."]})
    image = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


# --- chat names back to Responses names ---------------------------------------------------------------------------

_MESSAGE = re.compile(r"messages\[(\d+)\](.*)")
_CALL = re.compile(r"\.tool_calls\[(\d+)\](.*)")
_CALL_FIELDS = {"": "", ".id": ".call_id", ".type": ".type", ".function": "", ".function.name": ".name",
                ".function.arguments": ".arguments"}
_TOOL = re.compile(r"tools\[(\d+)\]\.function(.*)")
_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
            "response_format": "text.format", "response_format.json_schema": "text.format",
            "tool_choice.function": "tool_choice", "tool_choice.function.name": "tool_choice.name",
            "messages": "input"}


def responses_param(param: str | None, origins: list[dict]) -> str | None:
    """The Responses field a chat field name (an error's `param`) stands for; other names are the same in both."""
    if param is None:
        return None
    if param in _RENAMED:
        return _RENAMED[param]
    if param.startswith("response_format.json_schema."):
        return "text.format." + param[len("response_format.json_schema."):]
    tool = _TOOL.fullmatch(param)
    if tool:
        return f"tools[{tool[1]}]{tool[2]}"
    message = _MESSAGE.fullmatch(param)
    if not message or int(message[1]) >= len(origins):
        return param
    source, rest = origins[int(message[1])], message[2]
    if rest == ".content" or rest.startswith(".content["):
        return source["content"] + rest[len(".content"):]
    if rest == ".tool_calls" and source["calls"]:  # the list as a whole (too many calls): its last item
        return source["calls"][-1]
    call = _CALL.fullmatch(rest)
    if call and int(call[1]) < len(source["calls"]):
        return source["calls"][int(call[1])] + _CALL_FIELDS.get(call[2], call[2])
    if source["path"] in ("instructions", "input"):
        return source["path"]
    return source["path"] + (".call_id" if rest == ".tool_call_id" else rest)


def responses_messages(messages, origins: list[dict], path: str = "") -> dict:
    """marshmallow's nested error messages of a chat request as a flat dict keyed by Responses field names (for
    a ValidationError: app.errors.from_validation reads a key with dots and brackets as the path it is)."""
    flat: dict = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            child = path if key == "_schema" else f"{path}[{key}]" if isinstance(key, int) else \
                f"{path}.{key}" if path else str(key)
            for name, problems in responses_messages(value, origins, child).items():
                flat.setdefault(name, []).extend(problems)
        return flat
    name = responses_param(path, origins) if path else "_schema"
    return {name: list(messages) if isinstance(messages, list) else [messages]}
