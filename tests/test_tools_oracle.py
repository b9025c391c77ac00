"""The tool pieces against vLLM's tool chat templates (tests/tools_oracle/README.md says where they come from and
why the pieces differ where they do; each difference is asserted here, so a change on either side shows)."""
import datetime
import json
import re
from pathlib import Path

import pytest

from app.serving.prompt import Template, build_prompt
from app.serving.tools import hermes, mistral
from app.serving.tools.llama3_json import Llama3Json
from app.serving.tools.render import render_messages
from tests.test_prompt import LLAMA_3, MISTRAL, QWEN

ORACLE = Path(__file__).parent / "tools_oracle"
CASES = json.loads((ORACLE / "cases.json").read_text())
TOOLS = CASES["tools"]
LLAMA = Llama3Json(today=lambda: datetime.date(2024, 7, 26))


def oracle(name: str) -> str:
    return (ORACLE / f"{name}.txt").read_text()


def between(text: str, start: str, end: str, after: int = 0) -> str:
    begin = text.index(start, after) + len(start)
    return text[begin:text.index(end, begin)]


def conversation(name: str) -> list[dict]:
    return CASES["conversations"][name]


def calls(name: str) -> list[dict]:
    return next(m["tool_calls"] for m in conversation(name) if m.get("tool_calls"))


def results(name: str) -> list[dict]:
    return [{"content": m["content"], "tool_call_id": m["tool_call_id"], "name": None}
            for m in conversation(name) if m["role"] == "tool"]


# --- Hermes ---------------------------------------------------------------------------------------------------

def test_hermes_tool_block_has_the_templates_framing_around_tools_as_json():
    theirs = between(oracle("hermes"), "<|im_start|>system\n", "<|im_end|>")
    ours = hermes.FORMAT.tool_block(TOOLS)
    assert theirs.startswith(hermes.INTRO) and theirs.endswith(hermes.OUTRO)
    assert ours.startswith(hermes.INTRO) and ours.endswith(hermes.OUTRO)
    # The difference: the signatures. Ours are the tools, one JSON object a line; the template's are not JSON.
    our_lines = ours[len(hermes.INTRO):-len(hermes.OUTRO)].split("\n")
    assert [json.loads(line) for line in our_lines] == TOOLS
    their_signatures = theirs[len(hermes.INTRO):-len(hermes.OUTRO)]
    assert "get_weather(city: str, unit: str) - Get the current weather" in their_signatures
    with pytest.raises(ValueError):
        json.loads(their_signatures.split("\n")[0])


def test_hermes_call_echo_is_the_templates_with_the_object_closed_after_the_arguments():
    theirs = between(oracle("hermes"), "<|im_start|>assistant\n", "<|im_end|>")
    repaired = re.sub(r'\{"name": "([^"]+)"\}, "arguments": (.*)', r'{"name": "\1", "arguments": \2}', theirs)
    assert repaired != theirs
    assert hermes.FORMAT.call_echo(None, calls("hermes")) == repaired


def test_hermes_result_turn_is_the_templates_tool_turn_body():
    theirs = between(oracle("hermes"), "<|im_start|>tool\n", "<|im_end|>")
    assert hermes.FORMAT.result_turn(results("hermes")) == theirs


def test_hermes_pieces_framed_by_the_fastchat_template():
    template = Template.from_wire(QWEN)
    prompt = build_prompt(template, render_messages(hermes.FORMAT, conversation("hermes"), TOOLS,
                                                    default_system=template.system_message))
    block, echo = hermes.FORMAT.tool_block(TOOLS), hermes.FORMAT.call_echo(None, calls("hermes"))
    assert prompt == (f"<|im_start|>system\nYou are a helpful assistant.\n\n{block}<|im_end|>\n"
                      "<|im_start|>user\nWeather and time in Paris?<|im_end|>\n"
                      f"<|im_start|>assistant\n{echo}<|im_end|>\n"
                      f"<|im_start|>user\n{hermes.FORMAT.result_turn(results('hermes'))}<|im_end|>\n"
                      "<|im_start|>assistant\n")


# --- Llama 3.1 JSON -------------------------------------------------------------------------------------------

def test_llama3_whole_prompt_matches_but_for_the_result_turns_role():
    template = Template.from_wire(LLAMA_3)
    prompt = build_prompt(template, render_messages(LLAMA, conversation("llama3_json"), TOOLS,
                                                    default_system=template.system_message))
    # FastChat's llama-3 template has no ipython role: the result is a user turn with the same text.
    assert prompt == oracle("llama3_json").replace("<|start_header_id|>ipython<|", "<|start_header_id|>user<|")


def test_llama3_pieces():
    theirs = oracle("llama3_json")
    assert LLAMA.system_message("") == between(theirs, "<|start_header_id|>system<|end_header_id|>\n\n",
                                               "<|eot_id|>")
    first_user = between(theirs, "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>")
    assert first_user == LLAMA.tool_block(TOOLS) + "Weather in Paris?"
    assistant = theirs.index("<|start_header_id|>assistant")
    assert LLAMA.call_echo(None, calls("llama3_json")) == between(theirs, "<|end_header_id|>\n\n", "<|eot_id|>",
                                                                  after=assistant)
    assert LLAMA.result_turn(results("llama3_json")) == between(
        theirs, "<|start_header_id|>ipython<|end_header_id|>\n\n", "<|eot_id|>")


# --- Mistral --------------------------------------------------------------------------------------------------

def test_mistral_pieces_match():
    theirs = oracle("mistral")
    assert mistral.FORMAT.tool_block(TOOLS) == re.search(r"\[AVAILABLE_TOOLS\].*?\[/AVAILABLE_TOOLS\]",
                                                         theirs).group()
    assert mistral.FORMAT.call_echo(None, calls("mistral")) == between(theirs, "[/INST]", "</s>")
    assert mistral.FORMAT.result_turn(results("mistral")) == re.search(r"\[TOOL_RESULTS\].*?\[/TOOL_RESULTS\]",
                                                                       theirs).group()


def test_mistral_pieces_framed_by_the_fastchat_template():
    prompt = build_prompt(Template.from_wire(MISTRAL), render_messages(mistral.FORMAT, conversation("mistral"),
                                                                       TOOLS))
    block, echo = mistral.FORMAT.tool_block(TOOLS), mistral.FORMAT.call_echo(None, calls("mistral"))
    result = mistral.FORMAT.result_turn(results("mistral"))
    # The same pieces in the same order; FastChat writes the [INST] tags, so tools and results sit inside them.
    assert prompt == (f"[INST] Weather in Paris? [/INST] {echo}</s>[INST] {result} [/INST] It is 21 degrees.</s>"
                      f"[INST] {block}And the time? [/INST]")


def test_mistral_result_that_is_not_json_is_quoted_where_the_template_pastes_it_raw():
    turn = mistral.FORMAT.result_turn([{"content": "sunny", "tool_call_id": "call_0123456789", "name": None}])
    assert turn == '[TOOL_RESULTS] {"content": "sunny", "call_id": "123456789"}[/TOOL_RESULTS]'
    assert json.loads(turn[len("[TOOL_RESULTS] "):-len("[/TOOL_RESULTS]")]) == {"content": "sunny",
                                                                               "call_id": "123456789"}
