"""Scripted replies: what the simulated model says when the prompt offers tools or asks for a JSON object.

It reads the prompt as a model trained on the format would, by the format's own text, not by asking the gateway:
- a tool block (Hermes ``<tools>...</tools>``, the Llama 3 JSON instruction "Given the following functions...",
  Mistral ``[AVAILABLE_TOOLS] [...][/AVAILABLE_TOOLS]``) and no tool result after the last call: a call to the
  first offered function (to the named one when the prompt says 'You must call the function "NAME"'; to the first
  two when several are offered, unless it says "Call at most one function"), in that format's syntax, with the
  required properties of its parameters filled in (``instance``);
- a tool result after the last call: a text answer quoting the results, so call -> result -> answer completes
  (a JSON object instead when the prompt also asks for one); a question after that answer gets a call again;
- the JSON instruction ("Respond with a single JSON object", with or without "...valid against this JSON
  Schema:" and the schema): an object valid against the schema (``{"answer": ...}`` without one).
Everything is a pure function of the prompt. ``reply`` returns None for any other prompt (the filler text).
"""
from __future__ import annotations

import hashlib
import json
import re

_DECODER = json.JSONDecoder()
HERMES_TOOLS = re.compile(r"<tools>(.*?)</tools>", re.S)
LLAMA3_TOOLS = "Given the following functions, please respond with a JSON for a function call"
MISTRAL_TOOLS = re.compile(r"\[AVAILABLE_TOOLS\] (\[.*?\])\[/AVAILABLE_TOOLS\]", re.S)
NAMED = re.compile(r'You must call the function "([a-zA-Z0-9_-]{1,64})"')
ONE_CALL = "Call at most one function"
JSON_OBJECT = "Respond with a single JSON object"
JSON_SCHEMA = "The object must be valid against this JSON Schema:\n"
ANSWER = "The tools answered"
PIECE = re.compile(r"\s*\S+|\s+")
PIECE_CHARS = 6  # a scripted token is at most this long, so the format's markers arrive split across tokens
WORDS = ("alpha", "beta", "gamma", "delta", "river", "cloud", "ember", "orbit", "maple", "lotus")
_MAX_DEPTH = 8


def reply(prompt: str) -> str | None:
    """The scripted reply to `prompt`, or None when it neither offers tools nor asks for JSON."""
    offer = _offered_tools(prompt)
    if offer is not None and not _answered(prompt, offer[0]):
        fmt, functions = offer
        return _calls(fmt, _chosen(prompt, functions))
    schema = _json_request(prompt)
    if schema is not None:
        return json.dumps(instance(schema[0] if schema else {"type": "object", "required": ["answer"],
                                                             "properties": {"answer": {"type": "string"}}}))
    if offer is not None:
        results = _results(prompt, offer[0])
        return f"{ANSWER}: " + " | ".join(results) + "." if results else f"{ANSWER}."
    return None


def tokens(text: str) -> list[str]:
    """The reply cut into the pieces the worker streams as tokens (whitespace stays with the next word)."""
    return [word[at:at + PIECE_CHARS] for word in PIECE.findall(text) for at in range(0, len(word), PIECE_CHARS)]


# -- the tool offer ------------------------------------------------------------------------------------------------
def _offered_tools(prompt: str) -> tuple[str, list[dict]] | None:
    """(format name, offered functions {name, parameters}) of the tool block in the prompt, if there is one."""
    if "<tools>" in prompt:
        for block in HERMES_TOOLS.findall(prompt):
            functions = _functions(_json_values(block))
            if functions:
                return "hermes", functions
    at = prompt.find(LLAMA3_TOOLS)
    if at >= 0:
        functions = _functions(_json_values(prompt[prompt.find("\n\n", prompt.find("variables.", at)):]))
        if functions:
            return "llama3_json", functions
    if "[AVAILABLE_TOOLS]" in prompt:
        for block in MISTRAL_TOOLS.findall(prompt):
            values = _json_values(block)
            functions = _functions(values[0]) if values and isinstance(values[0], list) else []
            if functions:
                return "mistral", functions
    return None


def _json_values(text: str) -> list:
    """The JSON values at the start of `text`, one after the other (whitespace between them)."""
    values, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text) or text[at] not in "{[":
            return values
        try:
            value, at = _DECODER.raw_decode(text, at)
        except ValueError:
            return values
        values.append(value)


def _functions(tools: list) -> list[dict]:
    functions = []
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions.append({"name": function["name"], "parameters": function.get("parameters") or {}})
    return functions


def _chosen(prompt: str, functions: list[dict]) -> list[dict]:
    named = NAMED.search(prompt)
    if named:
        return [f for f in functions if f["name"] == named.group(1)][:1] or functions[:1]
    return functions[:1] if ONE_CALL in prompt else functions[:2]


# -- calls and results, per format ---------------------------------------------------------------------------------
_CALL_MARK = {"hermes": "<tool_call>", "llama3_json": '{"name": ', "mistral": "[TOOL_CALLS]"}
_RESULT_MARK = {"hermes": "<tool_response>", "llama3_json": '{"output": ', "mistral": "[TOOL_RESULTS]"}


def _calls(fmt: str, functions: list[dict]) -> str:
    args = [(f["name"], _arguments(f["parameters"])) for f in functions]
    if fmt == "hermes":
        return "\n".join("<tool_call>\n" + json.dumps({"name": name, "arguments": value}) + "\n</tool_call>"
                         for name, value in args)
    if fmt == "llama3_json":
        return "; ".join(json.dumps({"name": name, "parameters": value}) for name, value in args)
    return "[TOOL_CALLS] " + json.dumps([{"name": name, "arguments": value} for name, value in args])


def _arguments(parameters: dict) -> dict:
    value = instance({"type": "object", **parameters}) if isinstance(parameters, dict) else None
    return value if isinstance(value, dict) else {}


def _answered(prompt: str, fmt: str) -> bool:
    """Is there a tool result after the last call in the prompt, not yet answered by the sim's own answer (after
    which a new question gets a new call)?"""
    result = prompt.rfind(_RESULT_MARK[fmt])
    return result > prompt.rfind(_CALL_MARK[fmt]) and result > prompt.rfind(ANSWER)


def _results(prompt: str, fmt: str) -> list[str]:
    """The texts of the tool results after the last call."""
    tail = prompt[prompt.rfind(_CALL_MARK[fmt]):]
    if fmt == "hermes":
        return re.findall(r"<tool_response>\n(.*?)\n</tool_response>", tail, re.S)
    results = []
    mark = _RESULT_MARK[fmt]
    for piece in tail.split(mark)[1:]:
        text = piece.lstrip() if fmt == "mistral" else '{"output": ' + piece
        values = _json_values(text)
        if values and isinstance(values[0], dict):
            value = values[0].get("output" if fmt == "llama3_json" else "content")
            results.append(value if isinstance(value, str) else json.dumps(value))
    return results


# -- JSON replies --------------------------------------------------------------------------------------------------
def _json_request(prompt: str) -> list | None:
    """None when the prompt asks for no JSON object; [] for any object; [schema] for a schema's."""
    if JSON_OBJECT not in prompt:
        return None
    at = prompt.find(JSON_SCHEMA)
    if at < 0:
        return []
    values = _json_values(prompt[at + len(JSON_SCHEMA):])
    return values[:1] if values and isinstance(values[0], dict) else []


def instance(schema: dict, root: dict | None = None, path: str = "", depth: int = 0):
    """A deterministic value valid against `schema` (the common JSON Schema keywords): required properties only,
    the first enum value or anyOf branch, numbers inside their bounds, a word per string picked by its path."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        return instance(_pointer(root, schema["$ref"]), root, path, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")]
            return instance((options or schema[key])[0], root, path, depth + 1)
    if schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _pointer(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            merged.setdefault("properties", {}).update(part.get("properties", {}))
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.setdefault("type", part.get("type"))
        return instance(merged, root, path, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema or "required" in schema else \
            "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance(properties.get(name, {}), root, f"{path}/{name}", depth + 1)
                for name in schema.get("required", [])}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        count = min(count, schema.get("maxItems", count))
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [instance(items, root, f"{path}/{i}", depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, path)


def _pointer(root: dict, ref: str):
    value = root
    for part in ref.lstrip("#").split("/")[1:]:
        value = value.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(value, dict) else {}
    return value


def _number(schema: dict, kind: str):
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value = 1 if kind == "integer" else 1.5
    if isinstance(low, (int, float)) and value <= low:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, (int, float)) and value >= high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return int(value) if kind == "integer" else value


def _string(schema: dict, path: str) -> str:
    fixed = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00", "email": "sim@example.com",
             "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}
    if schema.get("format") in fixed:
        return fixed[schema["format"]]
    word = WORDS[hashlib.blake2b(path.encode(), digest_size=2).digest()[0] % len(WORDS)]
    word = word.ljust(schema.get("minLength", 0), "x")
    return word[:schema["maxLength"]] if isinstance(schema.get("maxLength"), int) else word
