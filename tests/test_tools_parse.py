"""Tool calls out of replies, for every format: whole (parse_reply) and streamed (ToolCallStream), which must agree
however the text is split into deltas."""
import json
import re

import pytest

from app.serving.tools import hermes, llama3_json, mistral
from app.serving.tools.calls import CallIds
from app.serving.tools.parse import parse_reply
from app.serving.tools.stream import ToolCallStream

NAMES = ["get_weather", "get_time"]
PARIS = '{"city": "Paris"}'
H_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
H_TIME = '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call>'
M_CALLS = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", ' \
          '"arguments": {"city": "Paris"}}]'
L_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'

# (format, reply, expected content, expected [(name, arguments)])
CASES = {
    "hermes plain text": (hermes, "The weather is fine.", "The weather is fine.", []),
    "hermes text before a call": (hermes, "Let me check.\n" + H_CALL, "Let me check.", [("get_weather", PARIS)]),
    "hermes parallel calls": (hermes, H_CALL + "\n" + H_TIME, None, [("get_weather", PARIS), ("get_time", PARIS)]),
    "hermes arguments as a string": (
        hermes, '<tool_call>{"name": "get_time", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>', None,
        [("get_time", PARIS)]),
    "hermes parameters key, no arguments": (
        hermes, '<tool_call>{"name": "get_time", "parameters": {"city": "Paris"}}</tool_call>'
                '<tool_call>{"name": "get_weather"}</tool_call>', None, [("get_time", PARIS), ("get_weather", "{}")]),
    "hermes a list in one block": (
        hermes, '<tool_call>[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {}}]'
                '</tool_call>', None, [("get_time", "{}"), ("get_weather", "{}")]),
    "hermes broken JSON stays content": (
        hermes, 'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call> ok',
        'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call> ok', []),
    "hermes broken block next to a good one": (
        hermes, H_CALL + "\n<tool_call>{oops}</tool_call>", "<tool_call>{oops}</tool_call>",
        [("get_weather", PARIS)]),
    "hermes arguments not an object": (
        hermes, '<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>',
        '<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>', []),
    "hermes arguments string that is not JSON": (
        hermes, '<tool_call>{"name": "get_time", "arguments": "Paris"}</tool_call>',
        '<tool_call>{"name": "get_time", "arguments": "Paris"}</tool_call>', []),
    "hermes invalid function name": (
        hermes, '<tool_call>{"name": "get time", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "get time", "arguments": {}}</tool_call>', []),
    # As vLLM does: a well-formed call between markers is returned even if the name was not offered.
    "hermes unknown tool between markers is a call": (
        hermes, '<tool_call>{"name": "book_flight", "arguments": {}}</tool_call>', None, [("book_flight", "{}")]),
    "hermes unclosed last block that is complete JSON": (
        hermes, 'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n', "Checking.",
        [("get_weather", PARIS)]),
    "hermes unclosed block cut mid-JSON": (
        hermes, 'Checking. <tool_call>\n{"name": "get_weather", "argu',
        'Checking. <tool_call>\n{"name": "get_weather", "argu', []),
    "hermes text ending in a marker prefix": (hermes, "a < b and <tool", "a < b and <tool", []),
    "hermes text after the calls": (hermes, H_CALL + "\n\nDone.  ", "Done.", [("get_weather", PARIS)]),
    "hermes unicode arguments": (
        hermes, '<tool_call>{"name": "get_time", "arguments": {"city": "Zürich"}}</tool_call>', None,
        [("get_time", '{"city": "Zürich"}')]),
    "llama3 one call": (llama3_json, L_CALL, None, [("get_weather", PARIS)]),
    "llama3 leading whitespace and python tag": (
        llama3_json, "  <|python_tag|>" + L_CALL, None, [("get_weather", PARIS)]),
    "llama3 two calls joined by semicolons": (
        llama3_json, L_CALL + '; {"name": "get_time", "arguments": {"city": "Paris"}}', None,
        [("get_weather", PARIS), ("get_time", PARIS)]),
    "llama3 text before JSON is an answer": (llama3_json, "Here: " + L_CALL, "Here: " + L_CALL, []),
    "llama3 JSON answer that is not a call": (llama3_json, '{"answer": 42}', '{"answer": 42}', []),
    "llama3 unknown name without a marker is an answer": (
        llama3_json, '{"name": "Bob", "parameters": {"age": 3}}', '{"name": "Bob", "parameters": {"age": 3}}', []),
    "llama3 broken JSON": (llama3_json, '{"name": "get_weather", "parameters": {', '{"name": "get_weather", '
                                                                                 '"parameters": {', []),
    "llama3 trailing text after the call": (llama3_json, L_CALL + " hope that helps", L_CALL + " hope that helps",
                                            []),
    "llama3 plain text": (llama3_json, "<b>Hello</b>", "<b>Hello</b>", []),
    "mistral calls": (mistral, M_CALLS, None, [("get_weather", PARIS), ("get_time", PARIS)]),
    "mistral text before the calls": (mistral, "One moment. " + M_CALLS, "One moment.",
                                      [("get_weather", PARIS), ("get_time", PARIS)]),
    "mistral one object after the marker": (
        mistral, '[TOOL_CALLS] {"name": "get_time", "arguments": {"city": "Paris"}}', None, [("get_time", PARIS)]),
    "mistral brackets inside strings": (
        mistral, '[TOOL_CALLS] [{"name": "get_time", "arguments": {"city": "P]a}r\\"is["}}]', None,
        [("get_time", '{"city": "P]a}r\\"is["}')]),
    "mistral bare list (marker dropped by the worker)": (
        mistral, ' [{"name": "get_time", "arguments": {"city": "Paris"}}]', None, [("get_time", PARIS)]),
    "mistral bare list naming an unknown tool is an answer": (
        mistral, '[{"name": "alice", "arguments": {}}]', '[{"name": "alice", "arguments": {}}]', []),
    "mistral bare list of numbers": (mistral, "[1, 2, 3] are odd-ish", "[1, 2, 3] are odd-ish", []),
    "mistral marker without JSON": (mistral, "Use [TOOL_CALLS] wisely.", "Use [TOOL_CALLS] wisely.", []),
    "mistral broken JSON after the marker": (
        mistral, '[TOOL_CALLS] [{"name": "get_time", "arguments": {"city": "Paris"}', 
        '[TOOL_CALLS] [{"name": "get_time", "arguments": {"city": "Paris"}', []),
    "mistral text after the calls": (mistral, M_CALLS + " Anything else?", "Anything else?",
                                     [("get_weather", PARIS), ("get_time", PARIS)]),
}


def streamed(module, deltas, parallel=True, ids=None):
    parser = ToolCallStream(module.FORMAT, NAMES, parallel, ids)
    steps = [parser.feed(delta) for delta in deltas] + [parser.finish()]
    return steps, parser


def splits(text):
    """Every two-piece split, and one character at a time."""
    yield [text]
    for at in range(1, len(text)):
        yield [text[:at], text[at:]]
    yield list(text)


@pytest.mark.parametrize("case", CASES)
def test_whole_reply(case):
    module, text, content, calls = CASES[case]
    reply = parse_reply(module.FORMAT, text, NAMES)
    assert reply.content == content
    assert [(call.name, call.arguments) for call in reply.tool_calls] == calls
    assert reply.finish_reason == ("tool_calls" if calls else "stop")
    assert all(json.loads(call.arguments) is not None for call in reply.tool_calls)


@pytest.mark.parametrize("case", CASES)
def test_streamed_reply_is_the_whole_reply_however_it_is_split(case):
    module, text, content, calls = CASES[case]
    for deltas in splits(text):
        steps, parser = streamed(module, deltas)
        assert "".join(step.content for step in steps) == (content or ""), deltas
        released = [(index, call.name, call.arguments) for step in steps for index, call in step.calls]
        assert released == [(index, *call) for index, call in enumerate(calls)], deltas


def test_content_streams_at_once_holding_back_only_a_possible_marker_and_whitespace():
    parser = ToolCallStream(hermes.FORMAT, NAMES)
    assert parser.feed("Hello").content == "Hello"
    assert parser.feed(" wor").content == " wor"
    assert parser.feed("ld <tool").content == "ld"    # " <tool" may open a call
    assert parser.feed("box>").content == " <toolbox>"  # it did not
    assert parser.feed("\n").content == ""
    assert parser.finish().content == "\n"


def test_a_call_is_released_once_complete_as_one_delta_with_index_id_type_name_and_arguments():
    parser = ToolCallStream(hermes.FORMAT, NAMES)
    held = [parser.feed(piece) for piece in ("<tool_call>\n", '{"name": "get_weather", ', '"arguments": {"city": ',
                                              '"Paris"}}\n')]
    assert all(step.delta() == {} for step in held)
    step = parser.feed("</tool_call>")
    (delta,) = step.delta()["tool_calls"]
    assert delta == {"index": 0, "id": delta["id"], "type": "function",
                     "function": {"name": "get_weather", "arguments": PARIS}}
    assert re.fullmatch(r"call_[0-9a-f]{24}", delta["id"])
    second = parser.feed(H_TIME).delta()["tool_calls"][0]
    assert second["index"] == 1 and second["id"] != delta["id"]
    assert parser.finish().delta() == {}


def test_parallel_tool_calls_false_keeps_the_first_call_only():
    for module, text in ((hermes, H_CALL + H_TIME), (mistral, M_CALLS)):
        reply = parse_reply(module.FORMAT, text, NAMES, parallel=False)
        assert [call.name for call in reply.tool_calls] == ["get_weather"]
        steps, _ = streamed(module, list(text), parallel=False)
        assert [call.name for step in steps for _, call in step.calls] == ["get_weather"]


def test_ids_are_unique_across_the_choices_of_a_response():
    ids = CallIds()
    replies = [parse_reply(hermes.FORMAT, H_CALL * 20, NAMES, ids=ids) for _ in range(5)]
    all_ids = [call.id for reply in replies for call in reply.tool_calls]
    assert len(all_ids) == 100 and len(set(all_ids)) == 100 and len({id[-9:] for id in all_ids}) == 100


def test_a_reply_cut_by_the_length_limit_keeps_finish_reason_length():
    assert parse_reply(hermes.FORMAT, H_CALL, NAMES, worker_finish="length").finish_reason == "length"
    assert parse_reply(hermes.FORMAT, "text", NAMES, worker_finish="length").finish_reason == "length"


def test_message_shape():
    message = parse_reply(hermes.FORMAT, H_CALL, NAMES).message()
    # refusal: null, as every chat message has it (app.schemas.responses).
    assert message == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": message["tool_calls"][0]["id"], "type": "function",
         "function": {"name": "get_weather", "arguments": PARIS}}]}
    assert parse_reply(hermes.FORMAT, "hi", NAMES).message() == {"role": "assistant", "content": "hi",
                                                                 "refusal": None}
