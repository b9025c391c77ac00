"""The common chat request, loaded without marshmallow: text messages and sampling numbers, nothing else.

marshmallow costs ~70 µs to load even a one-message chat request (a tenth of the gateway's CPU per request), most
of it walking nested schemas. Most requests are that plain shape, so ChatCompletionRequestSchema.load tries
`load_common` first: it checks the fields itself and builds the data marshmallow would have built, then hands it to
the schema's own `params`, so the params come from the same code either way. It never reports an error: anything
it does not recognise as plainly valid (another field, another type, a value out of range, a null where none is
allowed, ...) makes it return None, and marshmallow loads the request as before, with its own error messages.
tests/test_schemas_chat_common.py holds the two paths to the same result.
"""
from __future__ import annotations

import math
from typing import Any

from marshmallow import ValidationError

_ROLES = frozenset({"system", "developer", "user", "assistant"})  # "tool" needs the tool-call checks
_MESSAGE_KEYS = frozenset({"role", "content", "name"})
# Their ranges are the schema's own validators (with the operator's caps), run on the loaded value as marshmallow
# runs them.
_FLOATS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
_INTEGERS = ("n", "max_tokens", "max_completion_tokens", "top_k", "seed")
_KEYS = frozenset({"model", "messages", "stop", "stream", "stream_options", "user", *_FLOATS, *_INTEGERS})


class _Decline(Exception):
    """Not the plain shape: marshmallow decides."""


def load_common(schema, body: Any) -> dict | None:
    """The params `schema` (a ChatCompletionRequestSchema) loads from `body`, or None when marshmallow must."""
    if type(body) is not dict or not _KEYS.issuperset(body) or "model" not in body or "messages" not in body:
        return None
    try:
        data = {name: _LOADERS[name](schema, value) for name, value in body.items()}
    except _Decline:
        return None
    both = data.get("max_tokens"), data.get("max_completion_tokens")
    if (None not in both and both[0] != both[1]) or (data.get("stream_options") is not None
                                                     and not data.get("stream")):
        return None
    return schema.params(data)


def _model(schema, value) -> str:
    if type(value) is not str:
        raise _Decline
    return value


def _messages(schema, value) -> list[dict]:
    if type(value) is not list or not value or len(value) > schema.fields["messages"].max_items:
        raise _Decline
    loaded = []
    for message in value:
        if (type(message) is not dict or not _MESSAGE_KEYS.issuperset(message)
                or type(message.get("role")) is not str or message["role"] not in _ROLES
                or type(message.get("content")) is not str
                or type(message.get("name", "")) not in (str, type(None))):
            raise _Decline
        loaded.append({"role": message["role"], "content": message["content"]})
    return loaded


def _number(name: str, kind: type):
    """A float field (JSON integers too) or a strict integer one (no bools, no floats), then its validators."""
    def load(schema, value):
        if value is None:
            return None
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _Decline
        try:
            number = kind(value)
        except OverflowError:
            raise _Decline from None
        if kind is float and not math.isfinite(number):
            raise _Decline
        for validator in schema.fields[name].validators:
            try:
                validator(number)
            except ValidationError:
                raise _Decline from None
        return number
    return load


def _stop(schema, value):
    if value is None:
        return None
    items = [value] if type(value) is str else value
    if type(items) is not list or not all(type(item) is str for item in items) or \
            len(items) > schema.fields["stop"].max_items:
        raise _Decline
    return items


def _boolean(schema, value):
    if value is not None and type(value) is not bool:
        raise _Decline
    return value


def _stream_options(schema, value):
    if value is None:
        return None
    if type(value) is not dict or type(value.get("include_usage", False)) is not bool:
        raise _Decline
    return dict(value)


def _string(schema, value):
    if value is not None and type(value) is not str:
        raise _Decline
    return value


_LOADERS = {
    "model": _model, "messages": _messages, "stop": _stop, "stream": _boolean, "stream_options": _stream_options,
    "user": _string, **{name: _number(name, float) for name in _FLOATS},
    **{name: _number(name, int) for name in _INTEGERS},
}
