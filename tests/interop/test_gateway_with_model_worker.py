"""Tier 3: a real fastchat.serve.model_worker (tiny local Llama, vicuna_v1.1 template, fschat 0.2.36) behind a
real FastChat controller, reached through the gateway under gunicorn with the official openai SDK."""
from __future__ import annotations

import openai
import pytest
import requests

from app.serving.prompt import Template, build_prompt
from harness.gateway import Gateway
from tests.e2e.oracle import CONVERSATIONS, fastchat_renderings

TOOL_FORMAT = "hermes"
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "Time.",
                                           "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def gateway(tiny_model_worker, interop_controller, run_dir):
    # vicuna_v1.1 has no tool format: the operator's setting gives the tiny model one, so tools reach it.
    gateway = Gateway(run_dir, name="gateway-interop", CONTROLLER_ADDRESS=interop_controller.address,
                      TOOL_FORMATS=f"{tiny_model_worker.model_name}={TOOL_FORMAT}")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def sdk(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def fastchat_prompts(fastchat_model_worker_venv) -> dict:
    """What FastChat's own code renders for CONVERSATIONS with the vicuna_v1.1 template."""
    return fastchat_renderings(fastchat_model_worker_venv)["vicuna_v1.1"]["prompts"]


def test_the_gateway_renders_the_real_workers_template_as_fastchat_does(tiny_model_worker, fastchat_prompts):
    conv = requests.post(f"{tiny_model_worker.address}/worker_get_conv_template", json={}, timeout=30).json()["conv"]
    template = Template.from_wire(conv)
    for case, messages in CONVERSATIONS.items():
        assert build_prompt(template, messages) == fastchat_prompts[case], case


@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_chat_through_the_gateway_is_the_workers_greedy_answer_to_fastchats_prompt(
        sdk, tiny_model_worker, fastchat_prompts, case):
    direct = requests.post(f"{tiny_model_worker.address}/worker_generate", timeout=60, json={
        "model": tiny_model_worker.model_name, "prompt": fastchat_prompts[case], "temperature": 0,
        "max_new_tokens": 12, "echo": False, "stop": [], "stop_token_ids": None}).json()
    whole = sdk.chat.completions.create(model=tiny_model_worker.model_name, messages=CONVERSATIONS[case],
                                        temperature=0, max_tokens=12)
    assert whole.choices[0].message.content == direct["text"]
    assert whole.usage.prompt_tokens == direct["usage"]["prompt_tokens"]


def test_whole_and_streamed_chat_give_the_same_text(sdk, tiny_model_worker):
    messages = CONVERSATIONS["system"]
    whole = sdk.chat.completions.create(model=tiny_model_worker.model_name, messages=messages, temperature=0,
                                        max_tokens=24)
    streamed = sdk.chat.completions.create(model=tiny_model_worker.model_name, messages=messages, temperature=0,
                                           max_tokens=24, stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completion_with_logprobs(sdk, tiny_model_worker):
    completion = sdk.completions.create(model=tiny_model_worker.model_name, prompt="Once upon a time",
                                        temperature=0, max_tokens=5, logprobs=1)
    choice = completion.choices[0]
    assert choice.text
    assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) > 0
    assert all(isinstance(lp, float) and lp <= 0 for lp in choice.logprobs.token_logprobs)


def test_embeddings_with_the_sdks_default_base64(sdk, tiny_model_worker):
    result = sdk.embeddings.create(model=tiny_model_worker.model_name, input=["hello world", "goodbye", "x"])
    assert [item.index for item in result.data] == [0, 1, 2]
    vectors = [item.embedding for item in result.data]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 64
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)  # FastChat L2-normalises
    floats = sdk.embeddings.create(model=tiny_model_worker.model_name, input="goodbye", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[1], abs=0.05)


def test_context_overflow_is_rejected_before_the_worker(sdk, tiny_model_worker):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=tiny_model_worker.model_name,
                                    messages=[{"role": "user", "content": "word " * 50}], max_tokens=100000)
    assert raised.value.code == "context_length_exceeded"


def test_a_request_with_tools_reaches_the_worker_and_comes_back_as_content_or_a_call(sdk, tiny_model_worker):
    # A random tiny model writes no call; whatever it writes must come back, whole or streamed, never a 500.
    request = {"model": tiny_model_worker.model_name, "messages": [{"role": "user", "content": "Time?"}],
               "temperature": 0, "max_tokens": 12}
    plain = sdk.chat.completions.create(**request)
    whole = sdk.chat.completions.create(**request, tools=TOOLS)
    choice = whole.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
    if choice.finish_reason != "tool_calls":
        assert choice.message.content and not choice.message.tool_calls
    # The tool block went into the worker's prompt.
    assert whole.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    chunks = list(sdk.chat.completions.create(**request, tools=TOOLS, stream=True))
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert deltas[-1].finish_reason == choice.finish_reason
    assert "".join(d.delta.content or "" for d in deltas) == (choice.message.content or "")
    assert sum(len(d.delta.tool_calls or ()) for d in deltas) == len(choice.message.tool_calls or ())
