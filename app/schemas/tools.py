"""The request pieces of tool calling and structured output, for the chat request schema to include.

Every malformed value is a marshmallow ValidationError at the field it is in, so app.errors.from_validation
answers 400 naming it (never a 500 on a hostile tool: vLLM CVE-2025-48944). JSON Schemas are bounded in size and
depth, must be valid for their draft, and may only $ref into themselves (nothing is fetched).
"""
from __future__ import annotations

import json

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from marshmallow import ValidationError, fields, validate
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from app.schemas.fields import RangeMessage, RequestSchema, UnsupportedMessage, strict_boolean

MAX_TOOLS = 128  # OpenAI's limit
MAX_TOOLS_CHARS = 262_144  # all tools, serialised
MAX_SCHEMA_CHARS = 65_536
MAX_SCHEMA_DEPTH = 32
MAX_TOOL_CALLS = 128  # per assistant message
NAME = validate.Regexp(r"^[a-zA-Z0-9_-]{1,64}$", error="Must be 1 to 64 letters, digits, underscores or dashes.")
CHOICES = ("none", "auto", "required")


class JsonSchema(fields.Field):
    """A JSON Schema object: valid for its draft (2020-12 if it names none), bounded, self-contained."""

    default_error_messages = {"invalid": "Must be a JSON Schema object."}

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        refs = _refs_within_depth(value)  # first: the depth bounds what serialising below may recurse into
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValidationError(RangeMessage(f"A JSON Schema may have at most {MAX_SCHEMA_CHARS} characters."))
        cls = validators.validator_for(value, default=Draft202012Validator)
        try:
            cls.check_schema(value)
        except SchemaError as exc:
            raise ValidationError(f"Not a valid JSON Schema: {exc.message}.") from None
        _check_refs(value, refs)
        return value


def _refs_within_depth(schema: dict) -> list[str]:
    """The schema's $ref values; raises if it nests deeper than MAX_SCHEMA_DEPTH (checked without recursion)."""
    refs, stack = [], [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ValidationError(RangeMessage(f"A JSON Schema may nest at most {MAX_SCHEMA_DEPTH} levels deep."))
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            refs.append(node["$ref"])
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return refs


def _check_refs(schema: dict, refs: list[str]) -> None:
    resolver = Registry().with_resource(
        "", Resource.from_contents(schema, default_specification=DRAFT202012)).resolver()
    for ref in refs:
        if not ref.startswith("#"):
            raise ValidationError(f"$ref {ref!r} points outside the schema; only local references (#...) work.")
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ValidationError(f"$ref {ref!r} does not resolve within the schema.") from None


class FunctionSchema(RequestSchema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(allow_none=True)
    parameters = JsonSchema(allow_none=True)
    strict = strict_boolean(allow_none=True)


class ToolSchema(RequestSchema):
    type = fields.String(required=True)
    function = fields.Nested(FunctionSchema, required=True)

    def load(self, data, **kwargs):
        # The type decides the rest, so it is checked first (a custom tool has no `function` to complain about).
        if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] != "function":
            raise ValidationError({"type": [UnsupportedMessage(
                f"Tools of type '{data['type']}' are not supported; only 'function' tools are.")]})
        return super().load(data, **kwargs)


_TOOL = ToolSchema()


class Tools(fields.Field):
    """`tools`: at most MAX_TOOLS function tools with distinct names. An empty list means no tools (None)."""

    default_error_messages = {"invalid": "Must be a list of tools."}

    def _deserialize(self, value, attr, data, **kwargs) -> list[dict] | None:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if len(value) > MAX_TOOLS:
            raise ValidationError(RangeMessage(f"At most {MAX_TOOLS} tools are allowed."))
        if len(json.dumps(value)) > MAX_TOOLS_CHARS:
            raise ValidationError(RangeMessage(f"The tools may have at most {MAX_TOOLS_CHARS} characters."))
        tools, seen = [], set()
        for index, tool in enumerate(value):
            try:
                tool = _TOOL.load(tool)
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
            if tool["function"]["name"] in seen:
                raise ValidationError({index: {"function": {"name": ["Tool names must be unique."]}}})
            seen.add(tool["function"]["name"])
            tools.append(tool)
        return tools or None


class ToolChoice(fields.Field):
    """"none", "auto", "required" or {"type": "function", "function": {"name": ...}}."""

    # make_error formats these with str.format: braces are doubled.
    default_error_messages = {"invalid": 'Must be "none", "auto", "required" or '
                                         '{{"type": "function", "function": {{"name": ...}}}}.'}

    def _deserialize(self, value, attr, data, **kwargs):
        if value in CHOICES:
            return value
        function = value.get("function") if isinstance(value, dict) else None
        if not (isinstance(value, dict) and value.get("type") == "function" and isinstance(function, dict)
                and isinstance(function.get("name"), str)):
            raise self.make_error("invalid")
        return {"type": "function", "function": {"name": function["name"]}}


def check_tool_choice(tools: list[dict] | None, tool_choice) -> None:
    """For the chat schema's validates_schema: a required or named choice needs tools, a name one of them."""
    if tool_choice in (None, "none", "auto"):
        return
    if not tools:
        raise ValidationError("tool_choice is only allowed when tools are specified.", "tool_choice")
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        if name not in {tool["function"]["name"] for tool in tools}:
            raise ValidationError(f"tool_choice names the function '{name}', which is not in tools.",
                                  "tool_choice")


def effective_tool_choice(tools: list[dict] | None, tool_choice):
    """OpenAI's default: "auto" with tools, "none" without."""
    return tool_choice or ("auto" if tools else "none")


class JsonSchemaFormat(RequestSchema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(allow_none=True)
    schema = JsonSchema(allow_none=True)
    strict = strict_boolean(allow_none=True)  # accepted; the reply is validated, not constrained


_JSON_SCHEMA_FORMAT = JsonSchemaFormat()


class ResponseFormat(fields.Field):
    """{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {name, schema, ...}}."""

    default_error_messages = {"invalid": 'Must be {{"type": "text"}}, {{"type": "json_object"}} or '
                                         '{{"type": "json_schema", "json_schema": {{...}}}}.'}

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind in ("text", "json_object"):
            return {"type": kind}
        if kind != "json_schema":
            raise self.make_error("invalid")
        if not isinstance(value.get("json_schema"), dict):
            raise ValidationError({"json_schema": ["Must be an object with name and schema."]})
        try:
            return {"type": kind, "json_schema": _JSON_SCHEMA_FORMAT.load(value["json_schema"])}
        except ValidationError as exc:
            raise ValidationError({"json_schema": exc.messages}) from None


# --- messages -------------------------------------------------------------------------------------------------

class CalledFunctionSchema(RequestSchema):
    name = fields.String(required=True, validate=NAME)
    arguments = fields.String(required=True)  # a JSON string, as the API gave it; rendered back as JSON if it is


class ToolCallSchema(RequestSchema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=256))
    type = fields.String(load_default="function", validate=validate.OneOf(
        ["function"], error="Only tool calls of type 'function' are supported."))
    function = fields.Nested(CalledFunctionSchema, required=True)


def tool_calls_field() -> fields.Field:
    """An assistant message's `tool_calls`."""
    return fields.List(fields.Nested(ToolCallSchema), allow_none=True, validate=validate.Length(
        max=MAX_TOOL_CALLS, error=RangeMessage(f"At most {MAX_TOOL_CALLS} tool calls per message are allowed.")))


def tool_call_id_field() -> fields.Field:
    """A tool message's `tool_call_id`."""
    return fields.String(allow_none=True, validate=validate.Length(min=1, max=256))


def check_message(message: dict) -> None:
    """For the message schema's validates_schema (on loaded fields): which role may carry which tool field."""
    role = message.get("role")
    if role == "tool":
        if not message.get("tool_call_id"):
            raise ValidationError("Messages with role 'tool' need tool_call_id.", "tool_call_id")
        if message.get("content") is None:
            raise ValidationError("Messages with role 'tool' need content.", "content")
    elif message.get("tool_call_id") is not None:
        raise ValidationError("Only messages with role 'tool' may have tool_call_id.", "tool_call_id")
    if message.get("tool_calls") and role != "assistant":
        raise ValidationError("Only assistant messages may have tool_calls.", "tool_calls")
    if message.get("content") is None and not (role == "assistant" and message.get("tool_calls")):
        raise ValidationError("Missing content: only an assistant message with tool_calls may have none.",
                              "content")


def check_conversation(messages: list[dict]) -> None:
    """For the messages field, once its list is loaded: each tool message answers a call of an earlier assistant
    message (raised keyed by the message's index, so the error names messages[i].tool_call_id)."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        called.update(call["id"] for call in message.get("tool_calls") or ())
        if message.get("role") == "tool" and message["tool_call_id"] not in called:
            raise ValidationError({index: {"tool_call_id": [
                f"No earlier assistant message has a tool call with id '{message['tool_call_id']}'."]}})
