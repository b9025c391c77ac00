"""Issue 17: the gateway under gunicorn routing models to llama.cpp's real OpenAI-compatible server
(``llama-server``, compiled by harness/llamacpp_venv.sh from the llama.cpp source vendored in llama-cpp-python's
sdist) serving a tiny GGUF model written here (harness/llamacpp_tiny_model.py); driven by the official openai SDK:

    openai SDK -> gateway (ROUTES_FILE) -> llama-server (chat/completions) | llama-server --embeddings

No FastChat process is needed: the gateway's controller address is a port nobody listens on, so the routed
models are all it lists.  A failure to build llama-server or the model fails the tier (never a skip).
"""
from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from harness import llamacpp, procs, sse
from harness.gateway import Gateway
from harness.procs import free_port

KEY = "sk-e2e-llamacpp"  # the client's key for the gateway; llama-server only knows llamacpp.API_KEY
UPSTREAM_KEY = llamacpp.API_KEY
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="session")
def llamacpp_venv():
    """The folder with llama-server and gguf, made by harness/llamacpp_venv.sh if needed (a failure fails the
    tier); how long that took goes to the run folder."""
    started = time.monotonic()
    venv = procs.require(llamacpp.ensure_llamacpp_venv)
    return venv, time.monotonic() - started


@pytest.fixture(scope="module")
def stack(llamacpp_venv, run_dir):
    venv, ensure_seconds = llamacpp_venv
    started = []
    try:
        model = procs.require(llamacpp.make_tiny_model, venv, run_dir / "tiny-llamacpp.gguf")
        chat = procs.require(llamacpp.LlamaServer, venv, run_dir, model, alias="tiny-llamacpp",
                             name="llama-server")
        started.append(chat)
        embed = procs.require(llamacpp.LlamaServer, venv, run_dir, model, alias="tiny-llamacpp-embed",
                              name="llama-server-embed", embeddings=True)
        started.append(embed)
        routes = run_dir / "routes-llamacpp.toml"
        routes.write_text(f'''
[[routes]]
model = "via-llamacpp"
base_url = "{chat.url}/v1"
api_key = "{UPSTREAM_KEY}"
upstream_model = "tiny-llamacpp"

[[routes]]
model = "via-llamacpp-embed"
base_url = "{embed.url}/v1"
api_key = "{UPSTREAM_KEY}"
upstream_model = "tiny-llamacpp-embed"

[[routes]]
model = "via-llamacpp-nokey"
base_url = "{chat.url}/v1"
upstream_model = "tiny-llamacpp"
''')
        gateway = Gateway(run_dir, name="gateway-llamacpp", CONTROLLER_ADDRESS=f"http://127.0.0.1:{free_port()}",
                          API_KEYS=KEY, ROUTES_FILE=str(routes), UPSTREAM_CONNECT_RETRIES="0")
        started.append(gateway)
        (run_dir / "llamacpp-metrics.json").write_text(json.dumps({
            "llama_server": llamacpp.server_version(venv), "ensure_venv_seconds": round(ensure_seconds, 1),
            "llama_server_start_seconds": round(chat.start_seconds or 0, 2),
            "model_bytes": model.stat().st_size}, indent=2))
        yield {"gateway": gateway, "chat": chat, "embed": embed}
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def sdk(stack):
    with openai.OpenAI(base_url=f"{stack['gateway'].url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
def direct(stack):
    """The SDK straight at llama-server, to compare with what the gateway relays."""
    with openai.OpenAI(base_url=f"{stack['chat'].url}/v1", api_key=UPSTREAM_KEY, max_retries=0,
                       timeout=30) as client:
        yield client


def raw_stream(stack, path: str, body: dict, timeout: float = 30) -> list:
    """POST a streamed request to the gateway; the decoded events (strictly framed, "[DONE]" last)."""
    return sse.parse_json(sse.post_stream(f"{stack['gateway'].url}/v1/{path}", KEY, body, timeout))


def test_the_routed_models_are_listed(sdk):
    ids = {model.id for model in sdk.models.list()}
    assert {"via-llamacpp", "via-llamacpp-embed", "via-llamacpp-nokey"} <= ids
    assert sdk.models.retrieve("via-llamacpp").id == "via-llamacpp"


def test_llama_server_refuses_a_request_without_its_key(stack):
    """The setup is honest: llama-server checks the key the routes send (the client's gateway key differs)."""
    resp = requests.post(f"{stack['chat'].url}/v1/chat/completions", timeout=10,
                         headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "tiny-llamacpp", "messages": HI, "max_tokens": 4})
    assert resp.status_code == 401, resp.text


def test_a_route_without_the_key_is_refused_upstream(sdk):
    """llama-server's 401 refused the gateway's (missing) upstream key: the gateway says 502, not the client's 401."""
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="via-llamacpp-nokey", messages=HI, max_tokens=4)
    assert caught.value.status_code == 502


def test_chat_whole(sdk, direct, stack):
    reply = sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=8, temperature=0, seed=1)
    assert reply.model == "tiny-llamacpp"  # the upstream's own reply, relayed (as for every route)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"  # the tiny model never picks its end token
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    # Greedy decoding: what llama-server says directly is what the gateway relayed.
    same = direct.chat.completions.create(model="tiny-llamacpp", messages=HI, max_tokens=8, temperature=0, seed=1)
    assert same.choices[0].message.content == reply.choices[0].message.content
    log = stack["gateway"].proc.log_path.read_text()
    assert UPSTREAM_KEY not in log


def test_chat_streamed_chunk_by_chunk(sdk):
    whole = sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=8, temperature=0)
    chunks = list(sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=8, temperature=0,
                                              stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(chunks) > 2 and text == whole.choices[0].message.content
    assert {chunk.model for chunk in chunks} == {"tiny-llamacpp"}
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: the gateway keeps it


def test_a_stream_ends_with_done_and_usage_when_asked(stack):
    events = raw_stream(stack, "chat/completions", {"model": "via-llamacpp", "messages": HI, "max_tokens": 8,
                                                     "temperature": 0, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny-llamacpp" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 8, last
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 8
    assert not any(c.get("usage") for c in chunks[:-1])


def test_the_sdk_stream_with_usage(sdk):
    chunks = list(sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=6, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_completions_whole_and_streamed(sdk, stack):
    reply = sdk.completions.create(model="via-llamacpp", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert reply.model == "tiny-llamacpp"
    assert reply.choices[0].text and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8
    events = raw_stream(stack, "completions", {"model": "via-llamacpp", "prompt": "Once upon a time",
                                               "max_tokens": 8, "temperature": 0,
                                               "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    text = "".join(c["choices"][0].get("text") or "" for c in events[:-1] if c.get("choices"))
    assert text == reply.choices[0].text
    assert events[-2]["usage"]["completion_tokens"] == 8


def test_embeddings(sdk):
    reply = sdk.embeddings.create(model="via-llamacpp-embed", input=["a cat", "the river"], encoding_format="float")
    assert reply.model == "tiny-llamacpp-embed"
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 64 and reply.data[0].embedding != reply.data[1].embedding
    assert reply.usage.prompt_tokens > 0


def test_embeddings_base64_as_the_sdk_asks_by_default(sdk):
    """The SDK asks for base64 unless told otherwise and decodes it: the same vectors as floats."""
    floats = sdk.embeddings.create(model="via-llamacpp-embed", input="a cat", encoding_format="float")
    default = sdk.embeddings.create(model="via-llamacpp-embed", input="a cat")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_an_upstream_400_keeps_its_status_and_message(sdk):
    """A prompt longer than llama-server's context: its own 400 and message, relayed."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="via-llamacpp", messages=[{"role": "user", "content": "word " * 400}],
                                    max_tokens=8)
    assert caught.value.status_code == 400
    assert "exceeds the available context size" in caught.value.message, caught.value.body
    assert caught.value.type == "exceed_context_size_error"


def test_a_parameter_llama_server_refuses_keeps_its_400(sdk):
    """``grammar`` is llama.cpp's own field, which the gateway relays without modelling it: a GBNF grammar that
    does not parse is llama-server's 400, and its words reach the client."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=4,
                                    extra_body={"grammar": "root ::= ("})
    assert caught.value.status_code == 400
    assert "failed to parse grammar" in caught.value.message, caught.value.body


def test_a_vendor_field_reaches_llama_server(sdk):
    """The same field, well formed: llama-server's sampler is held to the grammar, so the tiny model says it."""
    reply = sdk.chat.completions.create(model="via-llamacpp", messages=HI, max_tokens=16, temperature=0,
                                        extra_body={"grammar": 'root ::= "the cat" " sat"?'})
    assert reply.choices[0].message.content in ("the cat", "the cat sat")


def test_a_streamed_400_comes_before_the_stream(stack):
    """llama-server refuses a streamed request before its first event: the client gets the 400, not a stream."""
    resp = requests.post(f"{stack['gateway'].url}/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "via-llamacpp", "stream": True, "max_tokens": 8,
                               "messages": [{"role": "user", "content": "word " * 400}]})
    assert resp.status_code == 400, resp.text
    assert "exceeds the available context size" in resp.json()["error"]["message"]
