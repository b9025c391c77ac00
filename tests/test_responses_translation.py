"""The Responses request as a chat request (app/schemas/responses_api.py, app/schemas/responses_chat.py): every
input item kind, instructions, tools, tool_choice and text.format, each refusal with its param, and the chat
field names of errors mapped back to the Responses ones. Pure: the schema alone, no app."""
import pytest
from marshmallow import ValidationError

from app.errors import ApiError, from_validation
from app.schemas.chat import ChatCompletionRequestSchema
from app.schemas.responses_api import CreateResponseRequestSchema
from app.schemas.responses_chat import responses_param

SCHEMA = CreateResponseRequestSchema(chat=ChatCompletionRequestSchema(max_tokens=4096, max_messages=8),
                                     max_tokens=4096)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
CHAT_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def load(**body) -> dict:
    return SCHEMA.load({"model": "m", "input": "Hi", **body})


def refused(**body) -> ApiError:
    with pytest.raises(ValidationError) as caught:
        load(**body)
    return from_validation(caught.value)


class TestInput:
    def test_a_string_is_one_user_message(self):
        assert load(input="Hello")["messages"] == [{"role": "user", "content": "Hello"}]

    def test_instructions_come_first_as_a_system_message(self):
        params = load(instructions="Be brief.", input=[{"role": "developer", "content": "Use SI units."},
                                                       {"role": "user", "content": "Hi"}])
        assert params["messages"] == [{"role": "system", "content": "Be brief."},
                                      {"role": "developer", "content": "Use SI units."},
                                      {"role": "user", "content": "Hi"}]
        assert params["responses"]["instructions"] == "Be brief."

    def test_messages_with_and_without_type_and_their_parts(self):
        params = load(input=[
            {"role": "user", "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Three.", "annotations": []}]},
            {"type": "message", "role": "system", "content": "Sys."},
        ])
        # The chat schema joins text parts with newlines, as FastChat does.
        assert params["messages"] == [{"role": "user", "content": "one\ntwo"},
                                      {"role": "assistant", "content": "Three."},
                                      {"role": "system", "content": "Sys."}]

    def test_a_refusal_part_of_an_earlier_reply_is_its_text(self):
        params = load(input=[{"role": "user", "content": "q"},
                             {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
                             {"role": "user", "content": "ok"}])
        assert params["messages"][1] == {"role": "assistant", "content": "I cannot."}

    def test_function_calls_become_one_assistant_message_with_tool_calls_and_outputs_tool_messages(self):
        second = {**CALL, "call_id": "call_2", "id": "fc_2", "status": "completed"}
        params = load(tools=[WEATHER], input=[
            {"role": "user", "content": "Weather?"}, CALL, second,
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
        ])
        assert params["messages"] == [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CHAT_CALL, {**CHAT_CALL, "id": "call_2"}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "tool", "content": "rain", "tool_call_id": "call_2"},
        ]

    def test_calls_after_an_assistant_message_join_it(self):
        params = load(tools=[WEATHER], input=[
            {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Let me check."}, CALL,
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
        assert params["messages"][1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [CHAT_CALL]}

    def test_an_input_image_is_a_chat_image_url_part(self):
        # What the chat schema does with it is the chat path's (image rules); the translation is checked here.
        from app.schemas.responses_chat import input_messages
        messages, _ = input_messages([{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}])
        assert messages[0]["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]


class TestSettings:
    def test_sampling_fields_and_max_output_tokens(self):
        params = load(temperature=0.2, top_p=0.5, max_output_tokens=64, user="u1", parallel_tool_calls=False)
        assert (params["temperature"], params["top_p"], params["max_tokens"]) == (0.2, 0.5, 64)
        assert params["parallel_tool_calls"] is False and params["n"] == 1 and params["stream"] is False

    def test_flat_function_tools_become_chat_tools(self):
        params = load(tools=[WEATHER])
        assert params["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather.", "parameters": WEATHER["parameters"],
            "strict": True}}]
        assert params["tool_choice"] == "auto"

    @pytest.mark.parametrize("choice, chat", [
        ("none", "none"), ("auto", "auto"), ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ])
    def test_tool_choice(self, choice, chat):
        assert load(tools=[WEATHER], tool_choice=choice)["tool_choice"] == chat

    @pytest.mark.parametrize("text, response_format", [
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        ({"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
         {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}}),
        ({}, None), (None, None),
    ])
    def test_text_format_is_the_response_format(self, text, response_format):
        assert load(text=text)["response_format"] == response_format

    def test_accepted_settings_without_effect(self):
        params = load(store=True, metadata={"k": "v"}, truncation="disabled", background=False, top_logprobs=0,
                      include=["reasoning.encrypted_content"], reasoning={"effort": None}, service_tier="auto",
                      stream_options={"include_obfuscation": False}, prompt_cache_key="p", safety_identifier="s",
                      previous_response_id=None, max_tool_calls=3)
        assert params["responses"]["metadata"] == {"k": "v"} and params["responses"]["max_tool_calls"] == 3

    def test_unknown_fields_are_ignored_as_on_chat(self):
        assert load(some_future_field={"x": 1})["messages"] == [{"role": "user", "content": "Hi"}]


class TestRefusals:
    @pytest.mark.parametrize("body, param", [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 5}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"text": {"verbosity": "high"}}, "text.verbosity"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[1].type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
         "input[0].content[0].file_id"),
    ])
    def test_unsupported_features_are_a_400_naming_the_field(self, body, param):
        error = refused(**body)
        assert (error.status, error.param, error.code) == (400, param, "unsupported_parameter")

    @pytest.mark.parametrize("body, param", [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": ["Hi"]}, "input[0]"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "bogus"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "text", "text": "chat-style"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0].image_url"),
        ({"tools": "get_weather"}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"store": "yes"}, "store"),
    ])
    def test_malformed_responses_fields_are_a_400_naming_them(self, body, param):
        error = refused(**body)
        assert (error.status, error.param) == (400, param)


class TestChatRulesUnderResponsesNames:
    """The chat schema judges the translated request; its errors name the field the client sent."""

    @pytest.mark.parametrize("body, param", [
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 5000}, "max_output_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"text": {"format": {"type": "json_schema", "name": "bad name", "schema": {}}}}, "text.format.name"),
        ({"text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": 3}}}}, "text.format.schema"),
        ({"tools": [{**WEATHER, "name": "no spaces"}]}, "tools[0].name"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": 3}}]}, "tools[0].parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice"),
        ({"instructions": "x", "input": [{"role": "user", "content": [{"type": "input_text", "text": 3}]}]},
         "input[0].content[0]"),
        ({"input": [{"role": "user", "content": "q"}, {**CALL, "name": "bad name"}]}, "input[1].name"),
        ({"input": [{"role": "user", "content": "q"}, CALL, {**CALL, "call_id": ""}]}, "input[2].call_id"),
        ({"input": [{"role": "user", "content": "q"}, {**CALL, "arguments": None}]}, "input[1].arguments"),
        ({"input": [{"role": "user", "content": "q"},
                    {"type": "function_call_output", "call_id": "call_9", "output": "x"}]}, "input[1].call_id"),
        ({"input": [{"role": "user", "content": "q"}, CALL,
                    {"type": "function_call_output", "call_id": "call_1", "output": None}]}, "input[2].output"),
        ({"input": [{"role": "user", "content": None}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": "q"}] * 9}, "input"),
        ({"input": [{"role": "user", "content": "q"}] + [{**CALL, "call_id": f"c{i}"} for i in range(129)]},
         "input[129]"),
    ])
    def test_the_param_is_the_responses_field(self, body, param):
        error = refused(**body)
        assert error.param == param, error.message
        assert error.message.startswith(param), error.message  # the message names it the same way

    def test_a_range_error_keeps_its_fastchat_code(self):
        assert refused(max_output_tokens=0).fastchat_code == 40302


class TestResponsesParam:
    """The one mapping, used for validation errors and for ApiErrors raised while serving."""

    ORIGINS = [{"path": "instructions", "content": "instructions", "calls": []},
               {"path": "input[0]", "content": "input[0].content", "calls": []},
               {"path": "input[1]", "content": "input[1].content", "calls": ["input[1]", "input[2]"]},
               {"path": "input[3]", "content": "input[3].output", "calls": []}]

    @pytest.mark.parametrize("chat, responses", [
        (None, None), ("model", "model"), ("messages", "input"), ("max_tokens", "max_output_tokens"),
        ("response_format", "text.format"), ("response_format.json_schema.schema", "text.format.schema"),
        ("tools", "tools"), ("tools[2].function.parameters", "tools[2].parameters"), ("tools[0].type", "tools[0].type"),
        ("tool_choice.function.name", "tool_choice.name"),
        ("messages[0]", "instructions"), ("messages[0].content", "instructions"),
        ("messages[1].content[2]", "input[0].content[2]"), ("messages[1].role", "input[0].role"),
        ("messages[2].tool_calls[1].function.name", "input[2].name"),
        ("messages[2].tool_calls[0].id", "input[1].call_id"),
        ("messages[3].tool_call_id", "input[3].call_id"), ("messages[3].content", "input[3].output"),
        ("messages[2].tool_calls", "input[2]"), ("messages[9].content", "messages[9].content"),
    ])
    def test_mapping(self, chat, responses):
        assert responses_param(chat, self.ORIGINS) == responses
