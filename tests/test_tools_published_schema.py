"""Tool-call responses and chunks against OpenAI's published schemas (the file the e2e tier uses; skipped without
it): what the SDK's own types are generated from."""
import json
import os
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.fakes import text_frames
from tests.test_api_chat import sse_events
from tests.test_api_tools import HERMES_TWO, TOOLS, cumulative, post, ready
from tests.test_prompt import QWEN

SPEC_NAME = "openai-openapi-subset.json"
# Where tests/e2e/test_published_schema.py finds it: OPENAI_SPEC, else shared/spec beside some parent folder.
SPEC_FILE = next((folder / "shared" / "spec" / SPEC_NAME for folder in Path(__file__).resolve().parents
                  if (folder / "shared" / "spec" / SPEC_NAME).exists()), Path("shared", "spec", SPEC_NAME))
if os.environ.get("OPENAI_SPEC"):
    SPEC_FILE = Path(os.environ["OPENAI_SPEC"]) / SPEC_NAME

pytestmark = pytest.mark.skipif(not SPEC_FILE.exists(), reason=f"OpenAI's published schemas are not at {SPEC_FILE}")


def read_nullable(node):
    """The document says OpenAPI 3.0's `nullable: true`: read it as "null is allowed"."""
    if isinstance(node, list):
        return [read_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: read_nullable(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [{"type": "null"}, converted]} if node.get("nullable") is True else converted


@pytest.fixture(scope="module")
def published() -> dict:
    return read_nullable(json.loads(SPEC_FILE.read_text()))


def assert_valid(published: dict, name: str, instance) -> None:
    errors = list(Draft202012Validator({**published, "$ref": f"#/components/schemas/{name}"}).iter_errors(instance))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_a_whole_tool_call_reply(published, client, cluster):
    ready(cluster, QWEN)
    cluster.generates("Checking.\n" + HERMES_TWO)
    body = post(client, tools=TOOLS).get_json()
    assert len(body["choices"][0]["message"]["tool_calls"]) == 2
    assert_valid(published, "CreateChatCompletionResponse", body)


def test_streamed_tool_call_chunks(published, client, cluster):
    ready(cluster, QWEN)
    cluster.streams(text_frames(cumulative("Checking.\n" + HERMES_TWO)))
    chunks = sse_events(post(client, tools=TOOLS, stream=True))[:-1]
    assert sum(len(c["choices"][0]["delta"].get("tool_calls", ())) for c in chunks) == 2
    for chunk in chunks:
        assert_valid(published, "CreateChatCompletionStreamResponse", chunk)
