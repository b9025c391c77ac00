"""The plain chat request's loader (app.schemas.chat_common) against marshmallow's: the same params whenever it
answers, and it never answers for a request marshmallow refuses (so every error stays marshmallow's)."""
import itertools
import math
import random

import pytest
from marshmallow import Schema, ValidationError

from app.schemas.chat import ChatCompletionRequestSchema, FastChatChatCompletionRequestSchema
from app.schemas.chat_common import load_common

LIMITS = {"max_n": 4, "max_stop": 3, "max_tokens": 100, "max_messages": 3}
SCHEMAS = [ChatCompletionRequestSchema(**LIMITS), FastChatChatCompletionRequestSchema(**LIMITS)]
USER = {"role": "user", "content": "Hi"}

# Values worth trying per field: valid ones, boundaries, wrong types, nulls, non-finite and huge numbers.
NUMBERS = [None, 0, 1, 2, 0.5, -1, -2, -2.5, 2.0001, 3, 100, 101, 1.5, True, False, "1", 1e400, -1e400,
           math.nan, 10**400, [], {}]
VALUES = {
    "model": ["m", "", None, 1, ["m"], True],
    "messages": [[USER], [], "raw prompt", [USER] * 4, [USER, {"role": "assistant", "content": "Hello"}],
                 [{"role": "system", "content": "Be brief.", "name": "rules"}, USER],
                 [{"role": "developer", "content": "x"}], [{"role": "user", "content": "x", "name": None}],
                 [{"role": "user", "content": None}], [{"role": "assistant", "content": None}],
                 [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                 [{"role": "tool", "content": "x", "tool_call_id": "c"}], [{"role": "function", "content": "x"}],
                 [{"role": "robot", "content": "x"}], [{"role": ["user"], "content": "x"}], [{"content": "x"}],
                 [{"role": "user", "content": "x", "extra": 1}], [{"role": "user", "content": "x", "name": 3}],
                 [{"role": "user", "content": 5}], ["user"], [None], {"role": "user"}, None],
    "temperature": NUMBERS, "top_p": NUMBERS, "presence_penalty": NUMBERS, "frequency_penalty": NUMBERS,
    "repetition_penalty": NUMBERS, "n": NUMBERS, "max_tokens": NUMBERS, "max_completion_tokens": NUMBERS,
    "top_k": NUMBERS, "seed": NUMBERS,
    "stop": [None, "x", ["a", "b"], [], ["a", ""], ["a", "a"], ["a", "b", "c", "d"], [1], "", 3, {"a": 1}],
    "stream": [None, True, False, 1, 0, "true"],
    "stream_options": [None, {}, {"include_usage": True}, {"include_usage": False}, {"include_usage": 1},
                       {"include_usage": None}, {"other": 1}, [], "x"],
    "user": [None, "u", 1, ["u"]],
    "tools": [None, []], "response_format": [None, {"type": "text"}], "logprobs": [None, False],
    "unknown_field": [1],
}


def marshmallow_load(schema, body):
    try:
        return Schema.load(schema, body)  # marshmallow's own load, not the schema's shortcut
    except ValidationError:
        return ValidationError


def check(schema, body) -> bool:
    """Whether the plain loader answered; fails the test if it answered differently from marshmallow."""
    expected, got = marshmallow_load(schema, body), load_common(schema, body)
    if got is None:
        return False
    assert expected is not ValidationError, f"answered a request marshmallow refuses: {body!r}"
    assert repr(got) == repr(expected), body  # repr: 1 and 1.0 (or True) compare equal, their reprs do not
    return True


@pytest.mark.parametrize("schema", SCHEMAS, ids=["chat", "fastchat"])
def test_every_single_field_value_loads_as_marshmallow_loads_it(schema):
    answered = 0
    for name, values in VALUES.items():
        for value in values:
            answered += check(schema, {"model": "m", "messages": [USER], name: value})
    assert answered > 60  # the plain loader takes the plain values, not none


@pytest.mark.parametrize("schema", SCHEMAS, ids=["chat", "fastchat"])
def test_random_combinations_load_as_marshmallow_loads_them(schema):
    rng = random.Random(15)
    names = list(VALUES)
    answered = 0
    for _ in range(3000):
        body = {name: rng.choice(VALUES[name]) for name in rng.sample(names, rng.randint(1, 8))}
        if rng.random() < 0.8:
            body.setdefault("model", "m")
            body.setdefault("messages", [USER])
        answered += check(schema, body)
    assert answered > 50


def test_the_common_requests_take_the_plain_path():
    schema = SCHEMAS[0]
    for body in [{"model": "m", "messages": [USER]},
                 {"model": "m", "messages": [USER], "max_tokens": 16, "temperature": 0.7},
                 {"model": "m", "messages": [USER], "stream": True, "stream_options": {"include_usage": True}},
                 {"model": "m", "messages": [USER], "max_tokens": 5, "max_completion_tokens": 5, "stop": "x"}]:
        assert check(schema, body), body


@pytest.mark.parametrize("pair", list(itertools.product([None, 5, 6], repeat=2)))
def test_max_tokens_and_max_completion_tokens_together(pair):
    body = {"model": "m", "messages": [USER], "max_tokens": pair[0], "max_completion_tokens": pair[1]}
    check(SCHEMAS[0], body)


def test_the_schema_load_uses_the_plain_path_and_still_raises_marshmallows_errors():
    schema = SCHEMAS[0]
    assert schema.load({"model": "m", "messages": [USER], "n": 2})["n"] == 2
    with pytest.raises(ValidationError) as raised:
        schema.load({"model": "m", "messages": [USER], "n": 5})
    assert "n" in raised.value.messages
