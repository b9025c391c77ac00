"""Tier 1 and 2: the gateway under gunicorn, FastChat's real controller (fschat 0.2.36) and simulated workers,
driven by the official openai SDK over real sockets."""
from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker

KEY = "sk-e2e"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")


@pytest.fixture(scope="module")
def stack(fastchat_controller, run_dir):
    ctl = fastchat_controller.address
    started = []
    try:
        fast = SimulatedWorker(run_dir, "--tokens", "8", "--context-length", "256", controller=ctl,
                               model="sim-model", name="sim-fast")
        started.append(fast)
        slow = SimulatedWorker(run_dir, "--tokens", "200", "--token-delay", "0.05", controller=ctl,
                               model="slow-model", name="sim-slow")
        started.append(slow)
        doomed = SimulatedWorker(run_dir, controller=ctl, model="doomed-model", name="sim-doomed")
        started.append(doomed)
        for worker in started:
            wait_registered(ctl, worker.model)
        gateway = Gateway(run_dir, CONTROLLER_ADDRESS=ctl, API_KEYS=KEY, WORKER_READ_TIMEOUT="2",
                          MODEL_LIST_TTL="1")
        started.append(gateway)
        yield {"gateway": gateway, "fast": fast, "slow": slow, "doomed": doomed}
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def sdk(stack):
    with openai.OpenAI(base_url=f"{stack['gateway'].url}/v1", api_key=KEY, max_retries=0, timeout=20) as client:
        yield client


def ask(sdk, content="Tell me something", **kwargs):
    return sdk.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": content}], **kwargs)


def test_list_and_retrieve_models(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert {"sim-model", "slow-model"} <= set(ids)
    assert ids == sorted(ids)
    assert sdk.models.retrieve("sim-model").owned_by == "fastchat"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_whole_and_streamed_chat_give_the_same_text(sdk):
    whole = ask(sdk)
    text = whole.choices[0].message.content
    assert text and len(text.split()) == 8
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == 8 and whole.usage.prompt_tokens > 0
    chunks = list(ask(sdk, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_n_2_whole_and_streamed(sdk):
    whole = ask(sdk, n=2)
    assert [c.index for c in whole.choices] == [0, 1]
    texts = {0: "", 1: ""}
    for chunk in ask(sdk, n=2, stream=True):
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    assert texts == {0: whole.choices[0].message.content, 1: whole.choices[1].message.content}


def test_stop_strings_cut_the_text(sdk):
    words = ask(sdk, "stop test").choices[0].message.content.split()
    stopped = ask(sdk, "stop test", stop=[words[3]])
    assert stopped.choices[0].message.content.split() == words[:3]
    assert stopped.choices[0].finish_reason == "stop"


def test_multi_turn_with_system_message_reaches_the_worker_rendered(sdk, stack):
    stack["fast"].reset()
    sdk.chat.completions.create(model="sim-model", messages=[
        {"role": "system", "content": "You are X."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}])
    payload = stack["fast"].stats()["generate_payloads"][-1]
    assert payload["prompt"] == "You are X. USER: Hi ASSISTANT: Hello!</s>USER: How are you? ASSISTANT:"
    assert payload["echo"] is False


def test_bad_parameter_is_400(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(sdk, temperature=3)
    assert raised.value.param == "temperature"


def test_context_overflow_is_400(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(sdk, "word " * 200, max_tokens=100)
    assert raised.value.code == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in raised.value.message


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_missing_or_wrong_key_is_401(stack, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = requests.get(f"{stack['gateway'].url}/v1/models", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_wrong_key_raises_authentication_error_in_the_sdk(stack):
    with openai.OpenAI(base_url=f"{stack['gateway'].url}/v1", api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.models.list()
    assert raised.value.code == "invalid_api_key"


def test_worker_error_mid_stream_raises_in_the_sdk(sdk):
    stream = ask(sdk, "[[fault:error]] please", stream=True)
    with pytest.raises(openai.APIError, match="simulated fault"):
        for _ in stream:
            pass


def test_worker_down_is_503(sdk, stack):
    stack["doomed"].stop()  # still registered with the controller, but gone
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="doomed-model", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503
    assert raised.value.code == "upstream_unavailable"


def test_worker_hang_is_504_after_the_configured_timeout(sdk):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as raised:
        ask(sdk, "[[fault:hang]] please")
    assert raised.value.status_code == 504
    assert raised.value.code == "upstream_timeout"
    assert 1.5 < time.monotonic() - started < 10


def test_client_disconnect_frees_the_worker_stream_within_a_second(stack):
    slow = stack["slow"]
    url = f"{stack['gateway'].url}/v1/chat/completions"
    body = {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "long story"}]}
    with requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, stream=True, timeout=10) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert json.loads(first[len(b"data: "):])["choices"][0]["delta"]["role"] == "assistant"
        assert slow.stats()["open_streams"] == 1
    closed_at = time.monotonic()
    while slow.stats()["open_streams"] and time.monotonic() - closed_at < 3:
        time.sleep(0.05)
    assert slow.stats()["open_streams"] == 0
    assert time.monotonic() - closed_at < 1.0


def test_stream_usage_with_include_usage(sdk):
    chunks = list(ask(sdk, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_completions_whole_and_streamed(sdk):
    whole = sdk.completions.create(model="sim-model", prompt=["first prompt", "second"], n=2, max_tokens=4,
                                   logprobs=1)
    assert [choice.index for choice in whole.choices] == [0, 1, 2, 3]
    assert all(len(choice.logprobs.tokens) == 4 for choice in whole.choices)
    texts: dict[int, str] = {}
    chunks = list(sdk.completions.create(model="sim-model", prompt=["first prompt", "second"], n=2, max_tokens=4,
                                         stream=True, stream_options={"include_usage": True}))
    for chunk in chunks[:-1]:
        texts[chunk.choices[0].index] = texts.get(chunk.choices[0].index, "") + chunk.choices[0].text
    assert texts == {choice.index: choice.text for choice in whole.choices}
    assert chunks[-1].usage.completion_tokens == 16


def test_embeddings_with_the_sdks_default_base64_decoding(sdk):
    result = sdk.embeddings.create(model="sim-model", input=["alpha", "beta", "gamma", "delta", "epsilon"])
    assert [item.index for item in result.data] == [0, 1, 2, 3, 4]
    assert all(abs(sum(x * x for x in item.embedding) - 1) < 1e-5 for item in result.data)
    floats = sdk.embeddings.create(model="sim-model", input="gamma", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[2].embedding, rel=1e-6)


def test_fastchat_extras_need_the_key_and_work(stack):
    url = stack["gateway"].url
    body = {"prompts": [{"model": "sim-model", "prompt": "a b c", "max_tokens": 10}]}
    assert requests.post(f"{url}/api/v1/token_check", json=body, timeout=10).status_code == 401
    reply = requests.post(f"{url}/api/v1/token_check", json=body, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=10).json()
    assert reply == {"prompts": [{"fits": True, "tokenCount": 4, "contextLength": 256}]}
