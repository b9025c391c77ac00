"""The OpenAPI 3.0 schema dialect as JSON Schema, for validating real responses against the published spec."""
from __future__ import annotations


def to_json_schema(node):
    """OpenAPI 3.0 schema objects as JSON Schema draft 4: `nullable: true` adds "null" to the type."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted
