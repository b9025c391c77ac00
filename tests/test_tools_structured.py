"""response_format: the instruction in the prompt and the check of whole and streamed replies."""
import json

import pytest

from app.errors import ApiError
from app.serving.tools import structured

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
          "required": ["city", "temp"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
JSON_OBJECT = {"type": "json_object"}


def test_instructions():
    assert structured.instruction(None) is None
    assert structured.instruction({"type": "text"}) is None
    assert structured.instruction(JSON_OBJECT) == "Respond with a single JSON object and nothing else."
    text = structured.instruction(JSON_SCHEMA)
    assert text.startswith(structured.JSON_SCHEMA) and json.loads(text[len(structured.JSON_SCHEMA):]) == SCHEMA
    no_schema = {"type": "json_schema", "json_schema": {"name": "any"}}
    assert structured.instruction(no_schema) == structured.JSON_OBJECT


def test_the_instruction_joins_the_system_message_the_template_keeps():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = structured.with_instruction(messages, JSON_OBJECT)
    assert out[0]["content"] == "Be brief.\n\n" + structured.JSON_OBJECT and messages[0]["content"] == "Be brief."
    assert structured.with_instruction(messages[1:], JSON_OBJECT, "Default.")[0] == {
        "role": "system", "content": "Default.\n\n" + structured.JSON_OBJECT}
    assert structured.with_instruction(messages[1:], JSON_OBJECT)[0]["content"] == structured.JSON_OBJECT
    assert structured.with_instruction(messages, {"type": "text"}) is messages


@pytest.mark.parametrize("reply, content", [
    ('{"city": "Paris", "temp": 21}', '{"city": "Paris", "temp": 21}'),
    ('Here it is:\n```json\n{"city": "Paris", "temp": 21}\n```\n', '{"city": "Paris", "temp": 21}'),
    ('{"city": "Pa}ris{\\"", "temp": 21} and more {"x": 1}', '{"city": "Pa}ris{\\"", "temp": 21}'),
])
def test_compliant_replies_are_their_first_json_object(reply, content):
    assert structured.check(reply, JSON_SCHEMA) == structured.Checked(content, None)
    assert structured.check(reply, JSON_OBJECT) == structured.Checked(content, None)


@pytest.mark.parametrize("reply, problem", [
    ("I cannot do that.", "the reply has no JSON object"),
    ('{"city": "Paris", ', "the JSON object is not complete"),
    ("{'city': 'Paris'}", "the JSON object does not parse"),
    ('{"city": "Paris", "temp": "warm"}', "'warm' is not of type 'integer' (at $.temp)"),
    ('{"city": "Paris"}', "'temp' is a required property (at $)"),
])
def test_non_compliant_replies_say_why(reply, problem):
    checked = structured.check(reply, JSON_SCHEMA)
    assert checked.problem.startswith(problem)


def test_json_object_mode_checks_only_that_it_is_an_object():
    assert structured.check('{"anything": [1, 2]}', JSON_OBJECT).problem is None
    assert structured.check("[1, 2]", JSON_OBJECT).problem is not None


def test_a_reply_cut_by_the_length_limit_is_not_checked():
    assert structured.check('Sure: {"city": "Pa', JSON_SCHEMA, "length") == structured.Checked('{"city": "Pa',
                                                                                               None)
    assert structured.check("No JSON", JSON_SCHEMA, "length") == structured.Checked("No JSON", None)


def test_the_schemas_own_draft_is_used():
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"n": {"type": "integer", "exclusiveMinimum": 3}}}
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": draft7}}
    assert structured.check('{"n": 4}', rf).problem is None
    assert "less than or equal to the minimum of 3" in structured.check('{"n": 3}', rf).problem


def test_non_compliance_error_is_a_502_the_sdk_does_not_retry():
    error = structured.non_compliant("the reply has no JSON object")
    assert (error.status, error.type, error.code) == (502, "server_error", "response_format_not_followed")
    assert error.headers == {"x-should-retry": "false"}
    assert error.message == "The model's reply does not follow response_format: the reply has no JSON object."


def stream(deltas, response_format=JSON_SCHEMA, finish="stop"):
    checked = structured.CheckedStream(response_format)
    sent = "".join(checked.feed(delta) for delta in deltas)
    return sent, lambda: checked.finish(finish)


@pytest.mark.parametrize("reply", ['{"city": "Paris", "temp": 21}',
                                   'Sure!\n```json\n{"city": "Paris", "temp": 21}\n```'])
def test_a_stream_sends_the_object_as_it_comes_and_ends_quietly(reply):
    for at in range(len(reply) + 1):
        sent, finish = stream([reply[:at], reply[at:]])
        assert sent == '{"city": "Paris", "temp": 21}'
        finish()
    checked = structured.CheckedStream(JSON_SCHEMA)
    assert [checked.feed(d) for d in ("Ok ", '{"ci', 'ty": "Paris"', ', "temp": 21}', "\n```")] == [
        "", '{"ci', 'ty": "Paris"', ', "temp": 21}', ""]


@pytest.mark.parametrize("reply", ["No.", '{"city": "Paris"}', '{"city": ', "{'a': 1}"])
def test_a_non_compliant_stream_ends_with_the_error(reply):
    sent, finish = stream(list(reply))
    with pytest.raises(ApiError) as raised:
        finish()
    assert raised.value.code == "response_format_not_followed"
    assert sent == reply[reply.find("{"):] if "{" in reply else sent == ""


def test_a_stream_cut_by_the_length_limit_ends_quietly():
    sent, finish = stream(['{"city": '], finish="length")
    finish()
    assert sent == '{"city": '


def test_a_schema_whose_refs_cannot_be_followed_is_a_problem_not_a_crash():
    schema = {"$id": "https://schemas.example/a", "properties": {"a": {"$ref": "other.json"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    assert structured.check('{"a": 1}', rf).problem.startswith("the schema cannot be applied")
