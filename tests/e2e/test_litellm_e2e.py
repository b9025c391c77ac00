"""Issue 17: the gateway under gunicorn routing models to LiteLLM's real proxy (``litellm --config``, from its own
``.venv-litellm``), which relays them to FastChat's own openai_api_server over its real controller and simulated
workers; driven by the official openai SDK.  The twin of test_routes_e2e.py with LiteLLM in between:

    openai SDK -> gateway (ROUTES_FILE) -> LiteLLM proxy -> FastChat openai_api_server -> controller -> sim worker
"""
from __future__ import annotations

import time

import openai
import pytest
import requests

from harness import litellm, procs, sse
from harness.fastchat import FastChatApiServer, wait_registered
from harness.gateway import Gateway
from harness.procs import free_port
from harness.simworkers import SimulatedWorker

KEY = "sk-e2e-litellm"  # the client's key for the gateway; LiteLLM only knows its master key
MASTER = litellm.MASTER_KEY


def litellm_config(api_url: str, chat: str, embed: str | None = None) -> str:
    """A LiteLLM proxy config: ``ll-chat`` (and ``ll-embed``) relayed to FastChat's API server as OpenAI models."""
    entries = [("ll-chat", chat, "chat")] + ([("ll-embed", embed, "embedding")] if embed else [])
    models = "".join(f'''
  - model_name: {name}
    litellm_params:
      model: "openai/{upstream}"
      api_base: "{api_url}/v1"
      api_key: "x"
    model_info:
      mode: {mode}
''' for name, upstream, mode in entries)
    return f'''model_list:{models}
general_settings:
  master_key: "{MASTER}"
litellm_settings:
  telemetry: False
  drop_params: True
  num_retries: 0
  request_timeout: 30
'''


@pytest.fixture(scope="session")
def litellm_venv():
    """The LiteLLM virtualenv, made by harness/litellm_venv.sh if needed (a failure fails the tier)."""
    return procs.require(litellm.ensure_litellm_venv)


@pytest.fixture(scope="module")
def stack(litellm_venv, fastchat_venv, fastchat_controller, run_dir):
    ctl = fastchat_controller.address
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "8", "--context-length", "64", controller=ctl,
                                 model="sim-litellm", name="sim-litellm")
        started.append(worker)
        slow = SimulatedWorker(run_dir, "--tokens", "400", "--token-delay", "0.02", controller=ctl,
                               model="sim-litellm-slow", name="sim-litellm-slow")
        started.append(slow)
        for each in (worker, slow):
            wait_registered(ctl, each.model)
        api = procs.require(FastChatApiServer, fastchat_venv / "bin" / "python", ctl, run_dir,
                            models=["sim-litellm", "sim-litellm-slow"], name="fastchat-api-litellm")
        started.append(api)
        proxy = procs.require(litellm.LiteLLMProxy, litellm_venv, run_dir,
                              litellm_config(api.url, "sim-litellm", "sim-litellm"),
                              models=("ll-chat", "ll-embed"), name="litellm-proxy")
        started.append(proxy)
        # A second proxy in front of the slow worker: the mid-stream test kills it.
        doomed = procs.require(litellm.LiteLLMProxy, litellm_venv, run_dir,
                               litellm_config(api.url, "sim-litellm-slow"),
                               models=("ll-chat",), name="litellm-proxy-doomed")
        started.append(doomed)
        routes = run_dir / "routes-litellm.toml"
        # A base URL nobody listens on, chosen first (its weight dwarfs the other's): every request fails over.
        routes.write_text(f'''
[[routes]]
model = "via-litellm"
base_url = "http://127.0.0.1:{free_port()}/v1"
api_key = "{MASTER}"
upstream_model = "ll-chat"
weight = 1e12

[[routes]]
model = "via-litellm"
base_url = "{proxy.url}/v1"
api_key = "{MASTER}"
upstream_model = "ll-chat"
weight = 1e-12

[[routes]]
model = "via-litellm-embed"
base_url = "{proxy.url}/v1"
api_key = "{MASTER}"
upstream_model = "ll-embed"

[[routes]]
model = "via-litellm-nokey"
base_url = "{proxy.url}/v1"
upstream_model = "ll-chat"

[[routes]]
model = "via-litellm-doomed"
base_url = "{doomed.url}/v1"
api_key = "{MASTER}"
upstream_model = "ll-chat"
timeout = 30
''')
        gateway = Gateway(run_dir, name="gateway-litellm", CONTROLLER_ADDRESS=ctl, API_KEYS=KEY,
                          ROUTES_FILE=str(routes), UPSTREAM_CONNECT_RETRIES="0")
        started.append(gateway)
        yield {"gateway": gateway, "proxy": proxy, "doomed": doomed}
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def sdk(stack):
    with openai.OpenAI(base_url=f"{stack['gateway'].url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
        yield client


def raw_stream(stack, body: dict, timeout: float = 30) -> tuple[list, float]:
    """POST a streamed chat to the gateway; the decoded events (strictly framed, "[DONE]" last) and the seconds."""
    started = time.monotonic()
    body_bytes = sse.post_stream(f"{stack['gateway'].url}/v1/chat/completions", KEY, body, timeout)
    return sse.parse_json(body_bytes), time.monotonic() - started


def test_the_routed_models_are_listed(sdk):
    ids = {model.id for model in sdk.models.list()}
    assert {"via-litellm", "via-litellm-embed", "via-litellm-doomed"} <= ids
    assert sdk.models.retrieve("via-litellm").id == "via-litellm"


def test_litellm_refuses_a_request_without_its_master_key(stack):
    """The setup is honest: LiteLLM does check the key the routes send (the client's gateway key differs)."""
    resp = requests.post(f"{stack['proxy'].url}/v1/chat/completions", timeout=10,
                         headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "ll-chat", "messages": [{"role": "user", "content": "Hi"}]})
    assert resp.status_code in (400, 401), resp.text


def test_a_route_without_the_master_key_is_refused_upstream(sdk):
    """LiteLLM's 401 refused the gateway's (missing) upstream key: the gateway says 502, not the client's 401."""
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="via-litellm-nokey", messages=[{"role": "user", "content": "Hi"}],
                                    max_tokens=8)
    assert caught.value.status_code == 502


def test_chat_whole_goes_through_litellm_after_failover(sdk, stack):
    reply = sdk.chat.completions.create(model="via-litellm", messages=[{"role": "user", "content": "Hi"}],
                                        max_tokens=8)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0
    log = stack["gateway"].proc.log_path.read_text()
    assert "trying another" in log and MASTER not in log


def test_chat_streamed_chunk_by_chunk(sdk):
    chunks = list(sdk.chat.completions.create(model="via-litellm", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=8, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(chunks) > 2 and text
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: the gateway keeps it


def test_a_stream_ends_with_done_and_usage_when_asked(stack):
    events, _ = raw_stream(stack, {"model": "via-litellm", "messages": [{"role": "user", "content": "Hi"}],
                                   "max_tokens": 8, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] > 0, chunks[-3:]


def test_completions(sdk):
    reply = sdk.completions.create(model="via-litellm", prompt="Once upon", max_tokens=8)
    assert reply.choices[0].text


def test_embeddings(sdk):
    reply = sdk.embeddings.create(model="via-litellm-embed", input=["a", "b"], encoding_format="float")
    assert len(reply.data) == 2 and reply.data[0].embedding and reply.data[0].embedding != reply.data[1].embedding


def test_an_upstream_400_keeps_its_status_and_message(sdk):
    """FastChat's API server refuses a prompt longer than the worker's 64-token context; LiteLLM relays its 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="via-litellm", messages=[{"role": "user", "content": "word " * 200}],
                                    max_tokens=8)
    assert caught.value.status_code == 400
    assert "context" in str(caught.value).lower()


def test_litellm_dying_mid_stream_ends_the_stream_with_an_error_then_done(stack):
    """The LiteLLM proxy in front of a slow worker is killed (by its PID) while it streams: the gateway's stream
    ends with an error event, then data: [DONE] (last test: that proxy does not come back)."""
    url = f"{stack['gateway'].url}/v1/chat/completions"
    body = {"model": "via-litellm-doomed", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Tell me a long story"}]}
    reader = sse.Reader()
    payloads: list[bytes] = []
    started = time.monotonic()
    with requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30, stream=True) as resp:
        assert resp.status_code == 200, resp.text
        killed = False
        for data in resp.iter_content(chunk_size=None):
            payloads += reader.feed(data)
            if not killed and len(payloads) >= 3:
                stack["doomed"].stop(grace=0)  # SIGTERM then at once SIGKILL of its process group
                killed = True
    reader.close()  # the stream ended with data: [DONE], and nothing after it
    assert killed, "the stream ended before the proxy could be killed"
    assert time.monotonic() - started < 25
    events = [sse.json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == sse.DONE
    assert "error" in events[-1], events[-1]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert content  # it had begun: no failover, an error event instead
    assert len(events) < 300  # cut short, not the 400 tokens the worker would have sent
