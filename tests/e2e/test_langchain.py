"""Tier 4: LangChain's ChatOpenAI pointed at the gateway (no controller: WORKER_ADDRESSES mode)."""
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


@pytest.fixture(scope="module")
def gateway(run_dir):
    worker = SimulatedWorker(run_dir, "--tokens", "6", name="sim-langchain")
    try:
        # A ChatML template (the Hermes tool format), whose worker answers tools with a call (bench/README.md).
        tools_worker = SimulatedWorker(run_dir, "--conv-template", "qwen-7b-chat", model="sim-tools",
                                       name="sim-langchain-tools")
        try:
            gateway = Gateway(run_dir, name="gateway-langchain", API_KEYS="sk-lc",
                              WORKER_ADDRESSES=f"{worker.address},{tools_worker.address}")
            try:
                yield gateway
            finally:
                gateway.stop()
        finally:
            tools_worker.stop()
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


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_an_agent_with_one_tool_completes(gateway, stream):
    llm = ChatOpenAI(model="sim-tools", base_url=f"{gateway.url}/v1", api_key="sk-lc", max_retries=0, timeout=20,
                     streaming=stream).bind_tools([get_weather])
    messages = [HumanMessage("What is the weather in Paris?")]
    for _ in range(3):  # the agent loop: call the model, run the tools it asks for, until it answers
        reply = llm.invoke(messages)
        assert isinstance(reply, AIMessage)
        messages.append(reply)
        if not reply.tool_calls:
            break
        messages.extend(get_weather.invoke(call) for call in reply.tool_calls)
    call_message, result, answer = messages[1:]
    assert [call["name"] for call in call_message.tool_calls] == ["get_weather"]
    city = call_message.tool_calls[0]["args"]["city"]
    assert isinstance(result, ToolMessage) and result.tool_call_id == call_message.tool_calls[0]["id"]
    assert answer.content == f"The tools answered: Sunny in {city}."
    assert answer.response_metadata["finish_reason"] == "stop"
