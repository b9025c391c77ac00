"""Tier 4: LangChain's ChatOpenAI pointed at the gateway (no controller: WORKER_ADDRESSES mode)."""
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


@pytest.fixture(scope="module")
def gateway(run_dir):
    worker = SimulatedWorker(run_dir, "--tokens", "6", name="sim-langchain")
    try:
        gateway = Gateway(run_dir, name="gateway-langchain", WORKER_ADDRESSES=worker.address, API_KEYS="sk-lc")
        try:
            yield gateway
        finally:
            gateway.stop()
    finally:
        worker.stop()


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
