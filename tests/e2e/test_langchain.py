"""Tier 4: LangChain's ChatOpenAI pointed at the gateway (no controller: WORKER_ADDRESSES mode)."""
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from harness.gateway import over_simulated_worker


@pytest.fixture(scope="module")
def gateway(run_dir):
    with over_simulated_worker(run_dir, "langchain", "--tokens", "6", API_KEYS="sk-lc") as (gateway, _):
        yield gateway


@pytest.fixture
def llm(gateway):
    return ChatOpenAI(model="sim-model", base_url=f"{gateway.url}/v1", api_key="sk-lc", max_retries=0, timeout=20)


MESSAGES = [SystemMessage("You are terse."), HumanMessage("Say something")]


def test_invoke(llm):
    reply = llm.invoke(MESSAGES)
    assert len(reply.content.split()) == 6
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata["output_tokens"] == 6


def test_stream_gives_the_same_text(llm):
    whole = llm.invoke(MESSAGES).content
    pieces = [chunk.content for chunk in llm.stream(MESSAGES)]
    assert len(pieces) > 2
    assert "".join(pieces) == whole
