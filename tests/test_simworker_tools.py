"""The simulated worker's scripted replies (bench/simworker/scripted.py): prompts rendered exactly as the gateway
renders them (app.serving.tools.render + app.serving.prompt, with the templates the worker serves) get calls the
gateway's own parser reads back, an answer once the results are in, and JSON objects valid against the schema."""
from __future__ import annotations

import json

import jsonschema
import pytest

from app.serving.prompt import Template, build_prompt
from app.serving.tools import registry, structured
from app.serving.tools.parse import parse_reply
from app.serving.tools.render import render_messages
from app.serving.tools.stream import ToolCallStream
from bench.simworker import scripted
from bench.simworker.generation import Generation
from bench.simworker.templates import TEMPLATES

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "days", "unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Forecast.", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
         {"type": "function", "function": {"name": "never_first_two", "parameters": {}}}]
NAMES = [tool["function"]["name"] for tool in TOOLS]
QUESTION = [{"role": "user", "content": "Weather and time in Paris?"}]
# Template served by the worker -> the format the gateway picks for it.
FAMILIES = {"qwen-7b-chat": "hermes", "llama-3": "llama3_json", "mistral": "mistral"}


def prompt_for(template_name: str, messages, tools=TOOLS, **kwargs) -> str:
    template = Template.from_wire(TEMPLATES[template_name])
    fmt = registry.format_for("sim-model", template)
    rendered = render_messages(fmt, messages, tools, default_system=template.system_message, **kwargs)
    return build_prompt(template, rendered)


def parsed(template_name: str, text: str):
    fmt = registry.format_for("sim-model", Template.from_wire(TEMPLATES[template_name]))
    return parse_reply(fmt, text, NAMES)


@pytest.fixture(params=sorted(FAMILIES))
def template(request):
    return request.param


def test_each_worker_template_has_the_format_the_tests_expect(template):
    assert registry.format_for("sim-model", Template.from_wire(TEMPLATES[template])).name == FAMILIES[template]


def test_tools_in_the_prompt_get_calls_to_the_first_two_with_valid_arguments(template):
    reply = parsed(template, scripted.reply(prompt_for(template, QUESTION)))
    assert reply.finish_reason == "tool_calls" and reply.content is None
    assert [call.name for call in reply.tool_calls] == ["get_weather", "get_time"]
    arguments = json.loads(reply.tool_calls[0].arguments)
    jsonschema.validate(arguments, WEATHER)
    assert arguments["unit"] == "celsius" and arguments["days"] == 3 and isinstance(arguments["city"], str)
    assert json.loads(reply.tool_calls[1].arguments) == {}


def test_the_reply_is_deterministic_and_streams_with_split_markers_to_the_same_calls(template):
    prompt = prompt_for(template, QUESTION)
    text = scripted.reply(prompt)
    assert scripted.reply(prompt) == text
    pieces = scripted.tokens(text)
    assert "".join(pieces) == text and max(map(len, pieces)) <= scripted.PIECE_CHARS
    fmt = registry.format_for("sim-model", Template.from_wire(TEMPLATES[template]))
    stream = ToolCallStream(fmt, NAMES)
    steps = [stream.feed(piece) for piece in pieces] + [stream.finish()]
    assert "".join(step.content for step in steps) == ""
    assert [call.name for call in stream.calls] == ["get_weather", "get_time"]
    assert [call.arguments for call in stream.calls] == [call.arguments for call in parsed(template, text).tool_calls]


def test_parallel_tool_calls_false_gets_one_call(template):
    reply = parsed(template, scripted.reply(prompt_for(template, QUESTION, parallel_tool_calls=False)))
    assert [call.name for call in reply.tool_calls] == ["get_weather"]


def test_a_named_tool_choice_is_the_one_called(template):
    choice = {"type": "function", "function": {"name": "never_first_two"}}
    reply = parsed(template, scripted.reply(prompt_for(template, QUESTION, tool_choice=choice)))
    assert [(call.name, call.arguments) for call in reply.tool_calls] == [("never_first_two", "{}")]


def test_one_offered_tool_gets_one_call(template):
    reply = parsed(template, scripted.reply(prompt_for(template, QUESTION, tools=TOOLS[1:2])))
    assert [call.name for call in reply.tool_calls] == ["get_time"]


def test_tool_choice_none_or_no_tools_gets_filler(template):
    assert scripted.reply(prompt_for(template, QUESTION, tool_choice="none")) is None
    assert scripted.reply(prompt_for(template, QUESTION, tools=None)) is None


def test_after_the_results_it_answers_with_text_quoting_them(template):
    calls = parsed(template, scripted.reply(prompt_for(template, QUESTION))).tool_calls
    history = QUESTION + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21 C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": '{"time": "14:05"}'}]
    reply = parsed(template, scripted.reply(prompt_for(template, history)))
    assert reply.tool_calls == [] and reply.finish_reason == "stop"
    assert reply.content == 'The tools answered: Sunny, 21 C | {"time": "14:05"}.'
    # A new question after the answer gets a call again.
    again = history + [{"role": "assistant", "content": reply.content}, {"role": "user", "content": "And Rome?"}]
    assert parsed(template, scripted.reply(prompt_for(template, again))).tool_calls


SCHEMAS = [
    WEATHER,
    {"type": "object", "required": ["items", "owner", "score", "when", "tag"],
     "properties": {"items": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/item"}},
                    "owner": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 12}]},
                    "score": {"type": "number", "exclusiveMinimum": 5, "maximum": 6},
                    "when": {"type": "string", "format": "date-time"},
                    "tag": {"type": ["string", "null"], "maxLength": 2}},
     "$defs": {"item": {"type": "object", "required": ["id", "ok"],
                        "properties": {"id": {"type": "integer", "maximum": 0}, "ok": {"const": False}}}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_schema_mode_gets_a_valid_object(template, schema):
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    messages = structured.with_instruction(QUESTION, response_format)
    reply = scripted.reply(prompt_for(template, messages, tools=None))
    assert structured.check(reply, response_format).problem is None
    jsonschema.validate(json.loads(reply), schema, format_checker=jsonschema.FormatChecker())


def test_json_object_mode_gets_an_object(template):
    messages = structured.with_instruction(QUESTION, {"type": "json_object"})
    reply = json.loads(scripted.reply(prompt_for(template, messages, tools=None)))
    assert list(reply) == ["answer"] and isinstance(reply["answer"], str)


def test_tool_calls_come_before_json_and_json_answers_the_results(template):
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": WEATHER}}
    messages = structured.with_instruction(QUESTION, response_format)
    first = parsed(template, scripted.reply(prompt_for(template, messages)))
    assert first.tool_calls
    call = first.tool_calls[0]
    history = messages + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"}]
    jsonschema.validate(json.loads(scripted.reply(prompt_for(template, history))), WEATHER)


def payload(prompt: str, **kwargs) -> dict:
    return {"prompt": prompt, "temperature": 0.7, "max_new_tokens": 256, "echo": False, **kwargs}


def run(gen: Generation) -> list[str]:
    texts = []
    while not gen.done:
        if gen.step():
            texts.append(gen.frame()["text"])
    return texts


def test_the_generation_streams_the_script_whatever_tokens_says():
    prompt = prompt_for("qwen-7b-chat", QUESTION)
    script = scripted.reply(prompt)
    gen = Generation(payload(prompt), tokens=4)
    texts = run(gen)
    assert texts[-1] == script and len(texts) == len(scripted.tokens(script)) > 4
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    final = gen.frame(final=True)
    assert final["finish_reason"] == "stop" and final["usage"]["completion_tokens"] == len(texts)


def test_max_new_tokens_still_cuts_a_script():
    prompt = prompt_for("mistral", QUESTION)
    gen = Generation(payload(prompt, max_new_tokens=3), tokens=16)
    gen.run_to_end()
    assert gen.frame(final=True)["finish_reason"] == "length"
    assert gen.text == "".join(scripted.tokens(scripted.reply(prompt))[:3])


def test_a_plain_prompt_still_gets_filler():
    assert scripted.reply("USER: Hello ASSISTANT:") is None
    gen = Generation(payload("USER: Hello ASSISTANT:"), tokens=5)
    gen.run_to_end()
    assert len(gen.text.split()) == 5
