"""OpenAI's published schemas (shared/spec/), read for validating real responses: where the file is, 3.0's
`nullable` as JSON Schema, and one assertion. Used by the spec tier (tests/e2e/test_published_schema.py) and the
tool-call unit tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

SPEC_NAME = "openai-openapi-subset.json"


def _spec_folder() -> Path:
    """OPENAI_SPEC, else `shared/spec/` beside the checkout (or above a worktree)."""
    if os.environ.get("OPENAI_SPEC"):
        return Path(os.environ["OPENAI_SPEC"])
    checkout = Path(__file__).resolve().parents[1]
    for folder in checkout.parents:
        if (folder / "shared" / "spec" / SPEC_NAME).exists():
            return folder / "shared" / "spec"
    return checkout.parent / "shared" / "spec"


SPEC = _spec_folder()
SPEC_FILE = SPEC / SPEC_NAME
needs_spec = pytest.mark.skipif(not SPEC_FILE.exists(), reason=f"OpenAI's published schemas are not at {SPEC}")


def nullable(node: dict) -> dict:
    return {"anyOf": [{"type": "null"}, node]}


def read_nullable(node):
    """The document is OpenAPI 3.1 but still says 3.0's `nullable: true`: read it as "null is allowed"."""
    if isinstance(node, list):
        return [read_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: read_nullable(value) for key, value in node.items() if key != "nullable"}
    return nullable(converted) if node.get("nullable") is True else converted


def assert_valid(published: dict, name: str, instance) -> None:
    validator = Draft202012Validator({**published, "$ref": f"#/components/schemas/{name}"})
    errors = sorted(validator.iter_errors(instance), key=lambda error: list(error.absolute_path))
    assert not errors, f"{name}:\n" + "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
