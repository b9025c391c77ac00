"""Tools, earlier calls and tool results as messages that FastChat's templates frame; and the format registry."""
import pytest

from app.errors import ApiError
from app.serving.prompt import Template, build_prompt
from app.serving.tools import hermes, llama3_json, mistral, registry
from app.serving.tools.render import instruction, render_messages
from tests.test_prompt import LLAMA_3, MISTRAL, QWEN, VICUNA

TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "Local time.",
                                           "parameters": {"type": "object", "properties": {}}}}]
CALL = {"id": "call_abcdefabcdef123456789", "type": "function",
        "function": {"name": "get_time", "arguments": '{"city": "Paris"}'}}
ROUND_TRIP = [{"role": "user", "content": "Time in Paris?"},
              {"role": "assistant", "content": None, "tool_calls": [CALL]},
              {"role": "tool", "tool_call_id": CALL["id"], "content": "14:05"}]
HERMES_BLOCK = hermes.FORMAT.tool_block(TOOLS)


def hermes_system(messages, **kwargs) -> str:
    rendered = render_messages(hermes.FORMAT, messages, TOOLS, default_system="Default.", **kwargs)
    return next(m["content"] for m in rendered if m["role"] == "system")


def test_tools_join_the_templates_default_system_message():
    assert hermes_system([{"role": "user", "content": "hi"}]) == "Default.\n\n" + HERMES_BLOCK


def test_tools_join_the_system_message_the_template_keeps():
    messages = [{"role": "system", "content": "First."}, {"role": "user", "content": "hi"},
                {"role": "developer", "content": "Last."}]
    rendered = render_messages(hermes.FORMAT, messages, TOOLS, default_system="Default.")
    assert [m["content"] for m in rendered if m["role"] != "user"] == ["First.", "Last.\n\n" + HERMES_BLOCK]


@pytest.mark.parametrize("choice, parallel, sentence", [
    ("auto", True, ""),
    ("required", True, "You must call one or more of the available functions in this reply."),
    ({"type": "function", "function": {"name": "get_time"}}, True,
     'You must call the function "get_time" in this reply.'),
    ("auto", False, "Call at most one function in this reply."),
    ("required", False, "You must call one or more of the available functions in this reply. "
                        "Call at most one function in this reply."),
])
def test_tool_choice_and_parallel_tool_calls_become_an_instruction_after_the_tools(choice, parallel, sentence):
    assert instruction(choice, parallel) == sentence
    expected = "Default.\n\n" + HERMES_BLOCK + ("\n\n" + sentence if sentence else "")
    assert hermes_system([{"role": "user", "content": "hi"}], tool_choice=choice,
                         parallel_tool_calls=parallel) == expected


def test_tool_choice_none_offers_no_tools_but_keeps_the_history():
    rendered = render_messages(hermes.FORMAT, ROUND_TRIP, TOOLS, tool_choice="none", default_system="Default.")
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert "<tool_call>" in rendered[1]["content"] and "<tool_response>" in rendered[2]["content"]
    assert render_messages(hermes.FORMAT, ROUND_TRIP, None) == rendered


def test_user_placed_formats_put_the_instruction_with_the_tools():
    messages = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "two"}]
    llama = render_messages(llama3_json.FORMAT, messages, TOOLS, tool_choice="required")
    assert llama[1]["content"] == (llama3_json.FORMAT.tool_block(TOOLS) + instruction("required")
                                   + "\n\none")
    last = render_messages(mistral.FORMAT, messages, TOOLS)
    assert last[-1]["content"] == mistral.FORMAT.tool_block(TOOLS) + "two"
    assert last[0]["content"] == "one"


def test_user_placed_formats_without_a_user_message_get_one():
    rendered = render_messages(mistral.FORMAT, [{"role": "system", "content": "Be brief."}], TOOLS)
    assert rendered == [{"role": "user", "content": mistral.FORMAT.tool_block(TOOLS)},
                        {"role": "system", "content": "Be brief."}]


def test_llama3_system_message_gets_the_tool_header_and_a_default():
    rendered = render_messages(llama3_json.FORMAT, [{"role": "user", "content": "hi"}], TOOLS)
    assert rendered[0]["role"] == "system"
    assert rendered[0]["content"].startswith("Environment: ipython\nCutting Knowledge Date: December 2023\n")
    assert rendered[0]["content"].endswith(llama3_json.DEFAULT_SYSTEM)
    own = render_messages(llama3_json.FORMAT, [{"role": "system", "content": " Be brief. "},
                                               {"role": "user", "content": "hi"}], TOOLS)
    assert own[0]["content"].endswith("\n\nBe brief.")


def test_consecutive_results_are_one_turn_and_a_following_user_message_joins_it():
    second = {**CALL, "id": "call_second0000000000000"}
    messages = [{"role": "user", "content": "Both?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [CALL, second]},
                {"role": "tool", "tool_call_id": CALL["id"], "content": "14:05"},
                {"role": "tool", "tool_call_id": second["id"], "content": "15:05"},
                {"role": "user", "content": "Thanks, and?"}]
    rendered = render_messages(hermes.FORMAT, messages, None)
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert rendered[1]["content"].startswith("Checking.\n<tool_call>\n")
    assert rendered[2]["content"] == ("<tool_response>\n14:05\n</tool_response>\n"
                                      "<tool_response>\n15:05\n</tool_response>\n\nThanks, and?")


def test_echoed_arguments_that_are_not_json_stay_a_string():
    broken = {**CALL, "function": {"name": "get_time", "arguments": "Paris"}}
    echo = hermes.FORMAT.call_echo(None, [broken])
    assert echo == '<tool_call>\n{"name": "get_time", "arguments": "Paris"}\n</tool_call>'


def test_mistral_ids_are_the_last_nine_alphanumerics_and_match_between_call_and_result():
    rendered = render_messages(mistral.FORMAT, ROUND_TRIP, None)
    assert '"id": "123456789"' in rendered[1]["content"]
    assert '"call_id": "123456789"' in rendered[2]["content"]
    assert mistral.short_id("ab-1") == "000000ab1"


@pytest.mark.parametrize("wire", [QWEN, LLAMA_3, MISTRAL, VICUNA])
def test_every_rendering_is_framed_by_build_prompt(wire):
    template = Template.from_wire(wire)
    for fmt in registry.FORMATS.values():
        prompt = build_prompt(template, render_messages(fmt, ROUND_TRIP, TOOLS,
                                                        default_system=template.system_message))
        assert "Time in Paris?" in prompt and "14:05" in prompt and "get_time" in prompt


# --- registry -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wire, name", [(QWEN, "hermes"), (LLAMA_3, "llama3_json"), (MISTRAL, "mistral"),
                                        (VICUNA, None)])
def test_format_from_the_template(wire, name):
    fmt = registry.format_for("m", Template.from_wire(wire))
    assert (fmt.name if fmt else None) == name


def test_any_chatml_template_is_hermes():
    chatml = QWEN | {"name": "OpenHermes-2.5-Mistral-7B"}
    assert registry.format_for("m", Template.from_wire(chatml)) is hermes.FORMAT


def test_overrides_force_add_or_remove_a_format():
    overrides = registry.parse_overrides(" vicuna-7b = hermes, qwen* =none,qwen-tools=mistral ,")
    assert overrides == {"vicuna-7b": "hermes", "qwen*": "none", "qwen-tools": "mistral"}
    vicuna, qwen = Template.from_wire(VICUNA), Template.from_wire(QWEN)
    assert registry.format_for("vicuna-7b", vicuna, overrides) is hermes.FORMAT
    assert registry.format_for("qwen-7b", qwen, overrides) is None
    assert registry.format_for("qwen-tools", qwen, overrides) is mistral.FORMAT  # exact beats the pattern
    assert registry.format_for("other", qwen, overrides) is hermes.FORMAT


@pytest.mark.parametrize("value", ["vicuna", "m=json", "=hermes", "m=hermes,x"])
def test_bad_overrides_are_refused_at_startup(value):
    with pytest.raises(ValueError, match="model=format"):
        registry.parse_overrides(value)


def test_tools_for_a_model_without_a_format_are_a_400_naming_tools():
    with pytest.raises(ApiError) as raised:
        registry.require_format("vicuna-7b", Template.from_wire(VICUNA))
    error = raised.value
    assert (error.status, error.param, error.code) == (400, "tools", "unsupported_parameter")
    assert "vicuna_v1.1" in error.message
