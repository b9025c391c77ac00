"""A parsed tool call, the check that turns a model's JSON into one, and the OpenAI shapes it is sent in."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # always a JSON object serialised as a string, as OpenAI sends it


class CallIds:
    """Hands out `call_` ids unique within one response, also in their last 9 characters (Mistral's id)."""

    def __init__(self) -> None:
        self._tails: set[str] = set()

    def new(self) -> str:
        while True:
            id = "call_" + uuid.uuid4().hex[:24]
            if id[-9:] not in self._tails:
                self._tails.add(id[-9:])
                return id


def decode_call(obj) -> tuple[str, str] | None:
    """(name, arguments JSON string) for a model's {"name": ..., "arguments"|"parameters": {...}}, else None.

    Arguments given as a JSON string are decoded once; anything that is not an object in the end is refused, so a
    client never receives a call whose arguments it cannot parse.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not NAME.match(obj["name"]):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return obj["name"], json.dumps(arguments, ensure_ascii=False)


def decode_calls(value, known: frozenset[str] | None = None) -> list[tuple[str, str]] | None:
    """One call object or a list of them; None if any of them is not a call (or, with `known`, names an
    unknown function)."""
    items = value if isinstance(value, list) else [value]
    decoded = [decode_call(item) for item in items]
    if not items or None in decoded:
        return None
    if known is not None and any(name not in known for name, _ in decoded):
        return None
    return decoded


def arguments_object(arguments) -> dict | str:
    """An assistant message's arguments as the object the model once wrote (a string that is not JSON stays a
    string, so the echo is still valid JSON)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return arguments
    return value if isinstance(value, dict) else arguments
