"""Tool calling and structured output through /v1/chat/completions, in-process, the worker faked with `responses`:
what reaches the worker's prompt, and what the client gets back from the worker's text, whole and streamed."""
import json

import pytest

from tests.fakes import MODEL, VICUNA, text_frames
from tests.test_api_chat import CHAT, sse_events
from tests.test_prompt import LLAMA_3, MISTRAL, QWEN

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
PARIS = {"city": "Paris"}

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
HERMES_TWO = HERMES_CALL + '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
LLAMA3_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
MISTRAL_TWO = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]'


def ready(cluster, conv=QWEN, generating=True):
    """The cluster up to generation; generating=False for requests refused once the template is known."""
    cluster.serves(MODEL)
    cluster.routes(MODEL)
    cluster.template(conv)
    if generating:
        cluster.context(4096)
        cluster.counts(50)


def post(client, messages=ASK, **body):
    return client.post(CHAT, json={"model": MODEL, "messages": messages, **body})


def prompt_sent(cluster, path="/worker_generate") -> str:
    return cluster.sent(path)[0]["prompt"]


def calls_of(message) -> list[tuple[str, dict]]:
    return [(call["function"]["name"], json.loads(call["function"]["arguments"])) for call in message["tool_calls"]]


def assert_well_formed(calls: list[dict]) -> None:
    ids = [call["id"] for call in calls]
    assert len(set(ids)) == len(ids) and all(id.startswith("call_") for id in ids)
    assert all(call["type"] == "function" and isinstance(call["function"]["arguments"], str) for call in calls)


# --- whole replies --------------------------------------------------------------------------------------------------

class TestWholeToolCalls:
    @pytest.mark.parametrize("conv, text, content, expected", [
        (QWEN, "Let me check.\n" + HERMES_CALL, "Let me check.", [("get_weather", PARIS)]),
        (QWEN, HERMES_TWO, None, [("get_weather", PARIS), ("get_time", {})]),
        (LLAMA_3, LLAMA3_CALL, None, [("get_weather", PARIS)]),
        (MISTRAL, MISTRAL_TWO, None, [("get_weather", PARIS), ("get_time", {})]),
    ], ids=["hermes-text-before", "hermes-parallel", "llama3_json", "mistral-parallel"])
    def test_worker_text_becomes_tool_calls(self, client, cluster, conv, text, content, expected):
        ready(cluster, conv)
        cluster.generates(text)
        body = post(client, tools=TOOLS).get_json()
        choice = body["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == content
        assert choice["message"]["refusal"] is None
        assert calls_of(choice["message"]) == expected
        assert_well_formed(choice["message"]["tool_calls"])

    @pytest.mark.parametrize("conv, offered", [
        (QWEN, ['<tools>', '"name": "get_weather"', "<tool_call></tool_call> XML tags"]),
        (LLAMA_3, ["Environment: ipython", 'Respond in the format {"name": function name, "parameters"']),
        (MISTRAL, ['[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather"']),
    ], ids=["hermes", "llama3_json", "mistral"])
    def test_tools_are_offered_in_the_formats_syntax(self, client, cluster, conv, offered):
        ready(cluster, conv)
        cluster.generates("Sunny.")
        body = post(client, tools=TOOLS).get_json()
        assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "Sunny.",
                                                              "refusal": None},
                                      "logprobs": None, "finish_reason": "stop"}
        prompt = prompt_sent(cluster)
        assert all(piece in prompt for piece in offered), prompt
        assert "Weather in Paris?" in prompt

    def test_parallel_tool_calls_false_asks_for_one_and_keeps_the_first(self, client, cluster):
        ready(cluster)
        cluster.generates(HERMES_TWO)
        message = post(client, tools=TOOLS, parallel_tool_calls=False).get_json()["choices"][0]["message"]
        assert calls_of(message) == [("get_weather", PARIS)]
        assert "Call at most one function in this reply." in prompt_sent(cluster)

    @pytest.mark.parametrize("text", [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
        '<tool_call>\n{"name": "get weather", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>',
    ], ids=["broken-json", "bad-name", "arguments-not-an-object"])
    def test_a_call_that_does_not_parse_is_content_with_stop(self, client, cluster, text):
        ready(cluster)
        cluster.generates(text)
        choice = post(client, tools=TOOLS).get_json()["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": text, "refusal": None}
        assert choice["finish_reason"] == "stop"

    def test_an_unknown_name_is_a_call_only_between_explicit_markers(self, client, cluster):
        # Between markers the model plainly asked for a call, and the client sees it; a marker-less Llama 3 reply
        # is a call only when it names an offered tool (else it is a JSON answer).
        ready(cluster, QWEN)
        cluster.generates(HERMES_CALL.replace("get_weather", "get_news"))
        assert calls_of(post(client, tools=TOOLS).get_json()["choices"][0]["message"]) == [("get_news", PARIS)]

    def test_an_unknown_name_in_a_llama3_reply_is_content(self, client, cluster):
        ready(cluster, LLAMA_3)
        text = LLAMA3_CALL.replace("get_weather", "get_news")
        cluster.generates(text)
        choice = post(client, tools=TOOLS).get_json()["choices"][0]
        assert choice["message"]["content"] == text and choice["finish_reason"] == "stop"

    def test_a_reply_cut_by_the_length_limit_keeps_length(self, client, cluster):
        ready(cluster)
        cluster.generates(HERMES_CALL, finish_reason="length")
        assert post(client, tools=TOOLS).get_json()["choices"][0]["finish_reason"] == "length"

    def test_n_choices_each_parse_and_ids_are_unique_across_the_response(self, client, cluster):
        ready(cluster)
        cluster.generates(HERMES_TWO)
        body = post(client, tools=TOOLS, n=3).get_json()
        calls = [call for choice in body["choices"] for call in choice["message"]["tool_calls"]]
        assert len(calls) == 6 and all(c["finish_reason"] == "tool_calls" for c in body["choices"])
        assert_well_formed(calls)


class TestToolChoice:
    def test_none_does_not_offer_the_tools_and_parses_nothing(self, client, cluster):
        ready(cluster)
        cluster.generates(HERMES_CALL)
        choice = post(client, tools=TOOLS, tool_choice="none").get_json()["choices"][0]
        assert choice["message"]["content"] == HERMES_CALL and "tool_calls" not in choice["message"]
        assert choice["finish_reason"] == "stop"
        assert "<tools>" not in prompt_sent(cluster)

    def test_none_works_for_a_model_without_a_format(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates("Hi")
        assert post(client, tools=TOOLS, tool_choice="none").status_code == 200

    @pytest.mark.parametrize("choice, instruction", [
        ("auto", None), (None, None),
        ("required", "You must call one or more of the available functions in this reply."),
        ({"type": "function", "function": {"name": "get_time"}}, 'You must call the function "get_time" in this reply.'),
    ])
    def test_the_choice_is_an_instruction_in_the_prompt(self, client, cluster, choice, instruction):
        ready(cluster)
        cluster.generates(HERMES_CALL)
        body = post(client, tools=TOOLS, **({} if choice is None else {"tool_choice": choice})).get_json()
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        prompt = prompt_sent(cluster)
        assert "<tools>" in prompt
        if instruction:
            assert instruction in prompt
        else:
            assert "You must call" not in prompt


class TestRoundTrip:
    CALL = {"id": "call_abc123def456", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    HISTORY = [*ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]},
               {"role": "tool", "tool_call_id": "call_abc123def456", "content": "18C and sunny"}]

    @pytest.mark.parametrize("conv, echoed, result", [
        (QWEN, "<|im_start|>assistant\n" + HERMES_CALL + "<|im_end|>",
         "<|im_start|>user\n<tool_response>\n18C and sunny\n</tool_response><|im_end|>"),
        (LLAMA_3, LLAMA3_CALL, '{"output": "18C and sunny"}'),
        (MISTRAL, None, None),
    ], ids=["hermes", "llama3_json", "mistral"])
    def test_earlier_calls_and_results_are_rendered_in_the_formats_syntax(self, client, cluster, conv, echoed,
                                                                           result):
        ready(cluster, conv)
        cluster.generates("It is 18C and sunny in Paris.")
        body = post(client, self.HISTORY, tools=TOOLS).get_json()
        assert body["choices"][0]["message"]["content"] == "It is 18C and sunny in Paris."
        assert body["choices"][0]["finish_reason"] == "stop"
        prompt = prompt_sent(cluster)
        if conv is MISTRAL:  # the call id goes in as its last 9 alphanumerics, Mistral's id
            assert '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "123def456"}]' in prompt
            assert '[TOOL_RESULTS] {"content": "18C and sunny", "call_id": "123def456"}[/TOOL_RESULTS]' in prompt
        else:
            assert echoed in prompt and result in prompt, prompt

    def test_history_without_tools_still_renders_for_a_model_with_a_format(self, client, cluster):
        ready(cluster)
        cluster.generates("Done.")
        assert post(client, self.HISTORY).status_code == 200
        assert "<tool_response>" in prompt_sent(cluster) and "<tools>" not in prompt_sent(cluster)

    def test_history_for_a_model_without_a_format_is_400_naming_messages(self, client, cluster):
        ready(cluster, VICUNA, generating=False)
        response = post(client, self.HISTORY)
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == "messages"
        assert response.get_json()["error"]["code"] == "unsupported_parameter"

    def test_a_tool_message_must_answer_an_earlier_call(self, client):
        messages = [*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]
        assert post(client, messages).get_json()["error"]["param"] == "messages[1].tool_call_id"


class TestFormatChoice:
    def test_a_template_without_a_format_is_400_naming_tools(self, client, cluster):
        ready(cluster, VICUNA, generating=False)
        response = post(client, tools=TOOLS)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["param"], error["code"], error["type"]) == ("tools", "unsupported_parameter",
                                                                 "invalid_request_error")
        assert "vicuna_v1.1" in error["message"]

    @pytest.mark.parametrize("overrides, conv, status", [
        ({MODEL: "hermes"}, VICUNA, 200), ({"vicuna-*": "mistral"}, VICUNA, 200), ({MODEL: "none"}, QWEN, 400)])
    def test_tool_formats_forces_or_adds_a_format(self, config, cluster, overrides, conv, status):
        from app import create_app
        client = create_app({**config, "TOOL_FORMATS": overrides}, environ={}).test_client()
        ready(cluster, conv, generating=status == 200)
        if status == 200:
            cluster.generates("Hi")
        assert post(client, tools=TOOLS).status_code == status

    def test_a_bad_tool_formats_value_stops_the_app_naming_the_setting(self):
        from app import create_app
        from app.config import ConfigError
        with pytest.raises(ConfigError, match="TOOL_FORMATS"):
            create_app(environ={"TOOL_FORMATS": "qwen=xml"})


def nested(depth: int) -> dict:
    schema: dict = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


class TestValidation:
    @pytest.mark.parametrize("tools, param, fastchat_code", [
        ([{"type": "function", "function": {"name": "get weather"}}], "tools[0].function.name", 40001),
        ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name", 40001),
        ([WEATHER, {"type": "function", "function": {"name": "f", "parameters": ["not", "an", "object"]}}],
         "tools[1].function.parameters", 40001),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
         "tools[0].function.parameters", 40001),
        ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)], "tools", 40302),
        ([{"type": "function", "function": {"name": "f", "parameters": nested(40)}}],
         "tools[0].function.parameters", 40302),
        ([WEATHER, WEATHER], "tools[1].function.name", 40001),
        ([{"type": "code_interpreter"}], "tools[0].type", 40001),
        ("get_weather", "tools", 40001),
    ], ids=["name-space", "name-too-long", "parameters-not-object", "parameters-not-a-schema", "too-many",
            "too-deep", "duplicate", "not-a-function", "not-a-list"])
    def test_bad_tools_are_400_naming_the_field(self, client, tools, param, fastchat_code):
        response = post(client, tools=tools)
        assert response.status_code == 400
        body = response.get_json()
        assert body["error"]["param"] == param
        assert body["code"] == fastchat_code

    @pytest.mark.parametrize("body, param", [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_news"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"tools": TOOLS, "logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}, "logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "r"}}, "messages": "raw",
          "tools": TOOLS}, "tools"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ], ids=["named-not-offered", "required-without-tools", "unknown-choice", "parallel-not-boolean",
            "logprobs-with-tools", "logprobs-with-json", "tools-with-raw-prompt", "json-schema-without-name",
            "legacy-functions"])
    def test_bad_combinations_are_400_naming_the_field(self, client, body, param):
        response = client.post(CHAT, json={"model": MODEL, "messages": ASK, **body})
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == param

    def test_logprobs_with_tool_choice_none_are_fine(self, client, cluster):
        ready(cluster)
        cluster.generates("Hi")
        assert post(client, tools=TOOLS, tool_choice="none", logprobs=True).status_code == 200


# --- structured output, whole -------------------------------------------------------------------------------------

SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class TestStructuredWhole:
    @pytest.mark.parametrize("response_format, instruction", [
        ({"type": "json_object"}, "Respond with a single JSON object and nothing else."),
        (SCHEMA, 'The object must be valid against this JSON Schema:\n{"type": "object", "properties": {"city"'),
    ], ids=["json_object", "json_schema"])
    def test_a_compliant_reply_is_its_json_object(self, client, cluster, response_format, instruction):
        ready(cluster, VICUNA)
        cluster.generates('Sure, here it is:\n```json\n{"city": "Paris"}\n```')
        body = post(client, response_format=response_format).get_json()
        assert body["choices"][0]["message"]["content"] == '{"city": "Paris"}'
        assert body["choices"][0]["finish_reason"] == "stop"
        assert instruction in prompt_sent(cluster)
        assert len(cluster.sent("/worker_generate")) == 1

    def test_a_non_compliant_reply_is_generated_again(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates('{"town": "Paris"}')
        cluster.generates('{"city": "Paris"}')
        body = post(client, response_format=SCHEMA).get_json()
        assert body["choices"][0]["message"]["content"] == '{"city": "Paris"}'
        assert len(cluster.sent("/worker_generate")) == 2
        assert body["usage"]["completion_tokens"] == 4  # both generations count

    def test_non_compliant_twice_is_the_documented_502(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates("I cannot answer in JSON.")
        response = post(client, response_format={"type": "json_object"})
        assert response.status_code == 502
        assert response.headers["x-should-retry"] == "false"
        error = response.get_json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "response_format_not_followed")
        assert "no JSON object" in error["message"]
        assert len(cluster.sent("/worker_generate")) == 2

    @pytest.mark.parametrize("retries, calls", [(0, 1), (2, 3)])
    def test_structured_output_retries_bounds_the_generations(self, config, cluster, retries, calls):
        from app import create_app
        client = create_app({**config, "STRUCTURED_OUTPUT_RETRIES": retries}, environ={}).test_client()
        ready(cluster, VICUNA)
        cluster.generates('{"city": 1}')
        assert post(client, response_format=SCHEMA).status_code == 502
        assert len(cluster.sent("/worker_generate")) == calls

    def test_only_the_failing_choice_is_generated_again(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates('{"city": "Paris"}')
        cluster.generates("nope")
        cluster.generates('{"city": "Rome"}')
        body = post(client, response_format=SCHEMA, n=2).get_json()
        assert sorted(c["message"]["content"] for c in body["choices"]) == ['{"city": "Paris"}', '{"city": "Rome"}']
        assert len(cluster.sent("/worker_generate")) == 3

    def test_a_reply_cut_by_max_tokens_is_returned_as_it_is(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates('{"city": "Pa', finish_reason="length")
        body = post(client, response_format=SCHEMA).get_json()
        assert body["choices"][0]["message"]["content"] == '{"city": "Pa'
        assert body["choices"][0]["finish_reason"] == "length"

    def test_text_response_format_changes_nothing(self, client, cluster):
        ready(cluster, VICUNA)
        cluster.generates("plain")
        assert post(client, response_format={"type": "text"}).get_json()["choices"][0]["message"]["content"] == "plain"
        assert "JSON" not in prompt_sent(cluster)


# --- streams --------------------------------------------------------------------------------------------------------

def cumulative(text: str, size: int = 3) -> list[str]:
    """The worker's cumulative texts, `size` characters more each frame (markers split across frames)."""
    return [text[:end] for end in range(size, len(text) + size, size)]


def stream(client, cluster, conv, text, **body):
    ready(cluster, conv)
    for _ in range(body.get("n", 1)):  # a body is read once: one per choice
        cluster.streams(text_frames(cumulative(text)))
    response = post(client, stream=True, **body)
    assert response.status_code == 200
    return sse_events(response)


def deltas(events) -> list[dict]:
    return [event["choices"][0]["delta"] for event in events if isinstance(event, dict) and event.get("choices")]


class TestStreamedToolCalls:
    @pytest.mark.parametrize("conv, text, content, expected", [
        (QWEN, "Let me check.\n" + HERMES_TWO, "Let me check.", [("get_weather", PARIS), ("get_time", {})]),
        (LLAMA_3, LLAMA3_CALL, "", [("get_weather", PARIS)]),
        (MISTRAL, MISTRAL_TWO, "", [("get_weather", PARIS), ("get_time", {})]),
    ], ids=["hermes", "llama3_json", "mistral"])
    def test_calls_stream_as_whole_tool_call_deltas(self, client, cluster, conv, text, content, expected):
        events = stream(client, cluster, conv, text, tools=TOOLS)
        assert events[-1] == "[DONE]"
        chunks = deltas(events)
        assert "".join(d.get("content") or "" for d in chunks) == content
        calls = [call for d in chunks for call in d.get("tool_calls", ())]
        assert [c["index"] for c in calls] == list(range(len(expected)))
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == expected
        assert_well_formed(calls)
        finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e.get("choices")]
        assert finishes[-1] == "tool_calls" and finishes.count(None) == len(finishes) - 1
        assert not any("<tool_call>" in (d.get("content") or "") or "[TOOL_CALLS]" in (d.get("content") or "")
                       for d in chunks)

    def test_text_streams_as_it_comes(self, client, cluster):
        events = stream(client, cluster, QWEN, "The weather is fine today.", tools=TOOLS)
        contents = [d["content"] for d in deltas(events) if d.get("content")]
        assert len(contents) > 3 and "".join(contents) == "The weather is fine today."
        assert events[-2]["choices"][0]["finish_reason"] == "stop"

    def test_broken_call_streams_as_content_with_stop(self, client, cluster):
        text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>'
        events = stream(client, cluster, QWEN, text, tools=TOOLS)
        assert "".join(d.get("content") or "" for d in deltas(events)) == text
        assert events[-2]["choices"][0]["finish_reason"] == "stop"

    def test_tool_choice_none_streams_the_text_unparsed(self, client, cluster):
        events = stream(client, cluster, QWEN, HERMES_CALL, tools=TOOLS, tool_choice="none")
        assert "".join(d.get("content") or "" for d in deltas(events)) == HERMES_CALL
        assert all("tool_calls" not in d for d in deltas(events))

    def test_parallel_tool_calls_false_streams_one_call(self, client, cluster):
        events = stream(client, cluster, MISTRAL, MISTRAL_TWO, tools=TOOLS, parallel_tool_calls=False)
        calls = [call for d in deltas(events) for call in d.get("tool_calls", ())]
        assert [c["function"]["name"] for c in calls] == ["get_weather"]

    def test_n_streamed_choices_have_unique_ids(self, client, cluster):
        events = stream(client, cluster, QWEN, HERMES_TWO, tools=TOOLS, n=2)
        calls = [(e["choices"][0]["index"], call) for e in events[:-1] if e.get("choices")
                 for call in e["choices"][0]["delta"].get("tool_calls", ())]
        assert sorted(index for index, _ in calls) == [0, 0, 1, 1]
        assert_well_formed([call for _, call in calls])


class TestStreamedStructured:
    def test_the_object_streams_and_text_around_it_is_dropped(self, client, cluster):
        events = stream(client, cluster, VICUNA, 'Here: {"city": "Paris"} done', response_format=SCHEMA)
        assert "".join(d.get("content") or "" for d in deltas(events)) == '{"city": "Paris"}'
        assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"

    @pytest.mark.parametrize("text, problem", [('{"town": "Paris"}', "'city' is a required property"),
                                               ("no JSON here", "no JSON object")])
    def test_a_non_compliant_stream_ends_with_the_error_event(self, client, cluster, text, problem):
        events = stream(client, cluster, VICUNA, text, response_format=SCHEMA)
        assert events[-1] == "[DONE]"
        error = events[-2]["error"]
        assert error["code"] == "response_format_not_followed" and problem in error["message"]
        assert len(cluster.sent("/worker_generate_stream")) == 1  # streams are never generated again
