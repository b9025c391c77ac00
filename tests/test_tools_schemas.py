"""The request pieces of tool calling and structured output: every malformed value is a 400 naming its field.

They are assembled here the way the chat request schema will include them, and errors go through the app's own
from_validation, so the `param` asserted is the one a client would get.
"""
import pytest
from marshmallow import ValidationError, fields, validates_schema

from app.errors import from_validation
from app.schemas import tools as t
from app.schemas.fields import RequestSchema, strict_boolean


class Message(RequestSchema):
    role = fields.String(required=True)
    content = fields.String(allow_none=True)
    tool_calls = t.tool_calls_field()
    tool_call_id = t.tool_call_id_field()

    @validates_schema
    def _tools(self, data, **kwargs):
        t.check_message(data)


_MESSAGES = Message(many=True)


class Messages(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        messages = _MESSAGES.load(value)
        t.check_conversation(messages)
        return messages


class Request(RequestSchema):
    messages = Messages(load_default=list)
    tools = t.Tools(allow_none=True)
    tool_choice = t.ToolChoice(allow_none=True)
    parallel_tool_calls = strict_boolean(allow_none=True)
    response_format = t.ResponseFormat(allow_none=True)

    @validates_schema
    def _choice(self, data, **kwargs):
        t.check_tool_choice(data.get("tools"), data.get("tool_choice"))


REQUEST = Request()
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": True}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "P"}'}}


def load(**body):
    return REQUEST.load(body)


def error(**body):
    with pytest.raises(ValidationError) as raised:
        REQUEST.load(body)
    api_error = from_validation(raised.value)
    assert api_error.status == 400
    return api_error


def nested(depth: int) -> dict:
    schema = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_valid_tools_load_as_given():
    loaded = load(tools=[WEATHER, {"type": "function", "function": {"name": "no-params_1"}}], tool_choice="auto",
                  parallel_tool_calls=False)
    assert loaded["tools"][0] == WEATHER
    assert loaded["tools"][1] == {"type": "function", "function": {"name": "no-params_1"}}
    assert load(tools=[])["tools"] is None


@pytest.mark.parametrize("tools, param", [
    ("get_weather", "tools"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"function": {"name": "x"}}], "tools[0].type"),
    ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": ""}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": 7}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "x", "parameters": "object"}}], "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "x", "parameters": {"type": "objekt"}}}],
     "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "x", "parameters": {"$ref": "https://evil.example/s"}}}],
     "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "x", "parameters": {"$ref": "#/$defs/missing"}}}],
     "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "x", "parameters": nested(40)}}], "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "x", "strict": "yes"}}], "tools[0].function.strict"),
    ([{"type": "function", "function": {"name": "x", "description": ["d"]}}], "tools[0].function.description"),
    ([WEATHER, WEATHER], "tools[1].function.name"),
    ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)], "tools"),
])
def test_malformed_tools_are_a_400_naming_the_field(tools, param):
    assert error(tools=tools).param == param


def test_custom_tools_are_unsupported():
    api_error = error(tools=[{"type": "custom", "custom": {"name": "x"}}])
    assert (api_error.param, api_error.code) == ("tools[0].type", "unsupported_parameter")


def test_oversized_schemas_and_tool_lists_are_out_of_range():
    huge = {"type": "object", "description": "x" * (t.MAX_SCHEMA_CHARS + 1)}
    api_error = error(tools=[{"type": "function", "function": {"name": "x", "parameters": huge}}])
    assert api_error.param == "tools[0].function.parameters" and api_error.fastchat_code == 40302
    many = [{"type": "function", "function": {"name": f"f{i}", "description": "d" * 4000}} for i in range(70)]
    assert error(tools=many).param == "tools"


def test_local_refs_that_resolve_are_fine():
    schema = {"type": "object", "$defs": {"city": {"type": "string"}},
              "properties": {"city": {"$ref": "#/$defs/city"}}}
    assert load(tools=[{"type": "function", "function": {"name": "x", "parameters": schema}}])


@pytest.mark.parametrize("choice", ["none", "auto", "required", {"type": "function", "function": {"name":
                                                                                                  "get_weather"}}])
def test_tool_choice_forms(choice):
    assert load(tools=[WEATHER], tool_choice=choice)["tool_choice"] == choice


@pytest.mark.parametrize("choice", ["always", {"type": "function"}, {"type": "function", "function": {}},
                                    {"type": "tool", "function": {"name": "get_weather"}}, 3])
def test_malformed_tool_choice(choice):
    api_error = error(tools=[WEATHER], tool_choice=choice)
    assert api_error.param == "tool_choice"
    assert api_error.message == 'tool_choice: Must be "none", "auto", "required" or {"type": "function", ' \
                                '"function": {"name": ...}}.'


def test_a_named_tool_choice_not_offered_is_a_400_naming_tool_choice():
    api_error = error(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert api_error.param == "tool_choice" and "get_time" in api_error.message


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forcing_tool_choice_needs_tools(choice):
    assert error(tool_choice=choice).param == "tool_choice"
    assert load(tool_choice="none")["tool_choice"] == "none"


def test_default_tool_choice():
    assert t.effective_tool_choice([WEATHER], None) == "auto"
    assert t.effective_tool_choice(None, None) == "none"
    assert t.effective_tool_choice([WEATHER], "required") == "required"


def test_response_formats():
    assert load(response_format={"type": "text"})["response_format"] == {"type": "text"}
    assert load(response_format={"type": "json_object"})["response_format"] == {"type": "json_object"}
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER["function"]["parameters"],
                                                 "strict": True}}
    assert load(response_format=rf)["response_format"] == rf


@pytest.mark.parametrize("rf, param", [
    ({"type": "yaml"}, "response_format"),
    ("json", "response_format"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": 5}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": nested(40)}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "a", "strict": 1}}, "response_format.json_schema.strict"),
])
def test_malformed_response_format(rf, param):
    assert error(response_format=rf).param == param


def test_a_tool_round_trip_conversation_loads():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    loaded = load(messages=messages)["messages"]
    assert loaded[1]["tool_calls"] == [CALL] and loaded[2]["tool_call_id"] == "call_1"
    # LangChain omits the call's type; it defaults to "function".
    untyped = {key: value for key, value in CALL.items() if key != "type"}
    assert load(messages=[messages[0], {**messages[1], "tool_calls": [untyped]}, messages[2]])["messages"][1][
        "tool_calls"][0]["type"] == "function"


@pytest.mark.parametrize("messages, param", [
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_1"}],
     "messages[1].content"),
    ([{"role": "tool", "tool_call_id": "call_9", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "user", "content": "x", "tool_call_id": "call_1"}], "messages[0].tool_call_id"),
    ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "messages[0].tool_calls"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "assistant", "content": None}], "messages[0].content"),
    ([{"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "custom"}]}],
     "messages[0].tool_calls[0].type"),
    ([{"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "x",
                                                                                  "arguments": {"a": 1}}}]}],
     "messages[0].tool_calls[0].function.arguments"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": CALL["function"]}]}],
     "messages[0].tool_calls[0].id"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL] * 129}], "messages[0].tool_calls"),
])
def test_malformed_tool_messages_name_the_field(messages, param):
    assert error(messages=messages).param == param
