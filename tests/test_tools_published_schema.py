"""Tool-call responses and chunks against OpenAI's published schemas (the file the e2e tier uses; skipped without
it): what the SDK's own types are generated from."""
import json

import pytest

from tests.fakes import text_frames
from tests.published_spec import SPEC_FILE, assert_valid, needs_spec, read_nullable
from tests.test_api_chat import sse_events
from tests.test_api_tools import HERMES_TWO, TOOLS, cumulative, post, ready
from tests.test_prompt import QWEN

pytestmark = needs_spec


@pytest.fixture(scope="module")
def published() -> dict:
    return read_nullable(json.loads(SPEC_FILE.read_text()))


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
