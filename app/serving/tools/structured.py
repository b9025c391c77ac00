"""response_format json_object / json_schema: an instruction in the prompt, and the reply checked after.

Decoding cannot be constrained, so this is validated, not guaranteed. The reply's content is its first JSON
object: text around it (a code fence, "Here is the JSON:") is dropped, whole or streamed alike. Non-compliance:
- whole replies: the caller generates again, at most STRUCTURED_OUTPUT_RETRIES more times; if no attempt
  complies, the request fails with `non_compliant` (502, server_error, code "response_format_not_followed", x-should-retry: false,
  since the gateway already retried);
- streams: the object streams as it comes; at the end a non-compliant one ends the stream with that error event;
- a reply cut by max_tokens (finish_reason "length") is returned as it is, as OpenAI does, without the check;
- a reply that made tool calls is not checked: the calls are the answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from app.errors import ApiError, ErrorCode
from app.serving.tools.jsonspan import JsonSpan

JSON_OBJECT = "Respond with a single JSON object and nothing else."
JSON_SCHEMA = ("Respond with a single JSON object and nothing else. The object must be valid against this JSON "
               "Schema:\n")


def instruction(response_format: dict | None) -> str | None:
    """The sentence telling the model what to reply; None for text replies."""
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        schema = response_format["json_schema"].get("schema")
        return JSON_SCHEMA + json.dumps(schema, ensure_ascii=False) if schema is not None else JSON_OBJECT
    return None


def with_instruction(messages: list[dict], response_format: dict | None, default_system: str = "") -> list[dict]:
    """The messages with the instruction appended to the system message build_prompt keeps (or a new one)."""
    text = instruction(response_format)
    if text is None:
        return messages
    messages = [dict(m) for m in messages]
    systems = [i for i, m in enumerate(messages) if m["role"] in ("system", "developer")]
    system = messages[systems[-1]]["content"] if systems else default_system
    joined = f"{system}\n\n{text}" if system else text
    if systems:
        messages[systems[-1]]["content"] = joined
    else:
        messages.insert(0, {"role": "system", "content": joined})
    return messages


@dataclass(frozen=True)
class Checked:
    content: str
    problem: str | None  # None when the reply complies


def check(text: str, response_format: dict, worker_finish: str = "stop") -> Checked:
    """The reply's content (its first JSON object) and what is wrong with it, if anything."""
    span = JsonSpan(skip_to="{")
    span.feed(text)
    if span.start is None:
        return Checked(text, None if worker_finish == "length" else "the reply has no JSON object")
    content = text[span.start:span.end]
    if worker_finish == "length":
        return Checked(content, None)
    return Checked(content, _problem(content, span.end is not None, response_format))


class CheckedStream:
    """A streamed reply: feed() gives the part of each delta that belongs to the object; finish() raises the
    non-compliance error (the stream's error event) or returns quietly."""

    def __init__(self, response_format: dict):
        self._format = response_format
        self._span = JsonSpan(skip_to="{")
        self._text = ""
        self._sent = 0

    def feed(self, delta: str) -> str:
        self._text += delta
        self._span.feed(delta)
        if self._span.start is None:
            return ""
        end = self._span.end if self._span.end is not None else len(self._text)
        start, self._sent = max(self._span.start, self._sent), max(end, self._sent)
        return self._text[start:end]

    def finish(self, worker_finish: str = "stop") -> None:
        if worker_finish == "length":
            return
        if self._span.start is None:
            raise non_compliant("the reply has no JSON object")
        problem = _problem(self._text[self._span.start:self._span.end], self._span.end is not None, self._format)
        if problem:
            raise non_compliant(problem)


def non_compliant(problem: str) -> ApiError:
    return ApiError(502, f"The model's reply does not follow response_format: {problem}.", type="server_error",
                    code="response_format_not_followed", fastchat_code=ErrorCode.INTERNAL_ERROR,
                    headers={"x-should-retry": "false"})


def _problem(content: str, complete: bool, response_format: dict) -> str | None:
    if not complete:
        return "the JSON object is not complete"
    try:
        value = json.loads(content)
    except ValueError as exc:
        return f"the JSON object does not parse ({exc.msg} at character {exc.pos})"
    schema = (response_format.get("json_schema") or {}).get("schema") \
        if response_format.get("type") == "json_schema" else None
    if schema is None:
        return None
    try:
        error = best_match(validator_for(schema).iter_errors(value))
    except Unresolvable as exc:  # the request schema checks $refs, but an $id can still move their base
        return f"the schema cannot be applied ({exc})"
    return None if error is None else f"{error.message} (at {error.json_path})"


def validator_for(schema: dict):
    """A validator of the schema's own draft ($schema), Draft 2020-12 when it names none."""
    return validators.validator_for(schema, default=Draft202012Validator)(schema)
