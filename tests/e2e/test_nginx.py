"""deploy/nginx.conf, as shipped, in front of the gateway under gunicorn: streamed chunks arrive one by one, whole
chats work, forwarded headers reach gunicorn, a 5 MB body gets through, and nginx's own errors are OpenAI JSON.

A real nginx runs as our own non-daemon process (`nginx -p <dir> -c <conf> -g 'daemon off;'`) on a free port with
every file it writes under the run dir, and is stopped by PID. Its config is the shipped file with only the
upstream address, listen lines and log paths replaced. When nginx is missing this tier installs it with apt-get
(as root, with services kept from starting); when that is impossible the tier fails, saying so.
"""
from __future__ import annotations

import json
import re
import statistics
import time

import pytest
import requests

from harness import procs, sse
from harness.gateway import Gateway
from harness.nginx import SHIPPED_CONF, Nginx
from harness.nginx import binary as nginx_binary
from harness.simworkers import SimulatedWorker

KEY = "sk-nginx"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKENS, TOKEN_DELAY = 20, 0.1  # a stream of ~2 s: 20 content chunks 0.1 s apart
RUNS = 3
# What gunicorn received, in gunicorn's own access log (off by default; GUNICORN_CMD_ARGS overrides the config file).
ACCESS_FORMAT = ('probe rid=%({x-request-id}i)s xff=%({x-forwarded-for}i)s proto=%({x-forwarded-proto}i)s '
                 'xfh=%({x-forwarded-host}i)s status=%(s)s')


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """Path of the nginx binary, installed with apt-get if missing."""
    return procs.require(nginx_binary)


# ------------------------------------------------------------------------------------------------ the stack
@pytest.fixture(scope="module")
def stack(nginx_bin, run_dir):
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", str(TOKENS), "--token-delay", str(TOKEN_DELAY),
                                 name="sim-nginx")
        started.append(worker)
        gateway = Gateway(run_dir, name="gateway-nginx", WORKER_ADDRESSES=worker.address, API_KEYS=KEY,
                          GUNICORN_ACCESS_LOG="-", GUNICORN_CMD_ARGS=f"--access-logformat '{ACCESS_FORMAT}'")
        started.append(gateway)
        nginx = Nginx(nginx_bin, run_dir, upstream=f"127.0.0.1:{gateway.port}")
        started.append(nginx)
        # Warm both gunicorn processes (first status poll, template cache) and nginx's upstream connections.
        for base in [gateway.url, nginx.url] * 4:
            chat(base, max_tokens=1).raise_for_status()
        yield {"worker": worker, "gateway": gateway, "nginx": nginx}
    finally:
        for proc in reversed(started):
            proc.stop()


def body(**extra) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": "Tell me a story"}], **extra}


def chat(base: str, headers: dict | None = None, **extra) -> requests.Response:
    return requests.post(f"{base}/v1/chat/completions", json=body(**extra), headers={**AUTH, **(headers or {})},
                         timeout=30)


def timed_stream(base: str) -> dict:
    """One streamed chat: when (s after sending) each content event arrived, read as it arrives, and the text."""
    times, text = [], []
    reader = sse.Reader(lenient=True)
    start = time.perf_counter()
    with requests.post(f"{base}/v1/chat/completions", json=body(stream=True), headers=AUTH, stream=True,
                       timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in resp.headers  # the shipped `gzip off` beats the global gzip_types
        # chunk_size=None: each HTTP chunk as soon as it arrives, instead of waiting to fill a read size.
        for piece in resp.iter_content(chunk_size=None):
            now = time.perf_counter() - start
            for payload in reader.feed(piece):
                if payload == sse.DONE:
                    continue
                delta = json.loads(payload)["choices"][0]["delta"]
                if delta.get("content"):
                    times.append(now)
                    text.append(delta["content"])
    assert reader.done, "stream ended without [DONE]"
    assert len(times) >= TOKENS * 3 // 4, f"only {len(times)} content events"
    return {"ttft": times[0], "spread": times[-1] - times[0], "times": times, "text": "".join(text),
            "apart": sum(1 for a, b in zip(times, times[1:]) if b - a > TOKEN_DELAY / 2)}


def gunicorn_saw(stack, pattern: str, timeout: float = 5) -> re.Match:
    """The gateway's access-log line matching `pattern` (gthread logs a request once its response ends)."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, stack["gateway"].proc.log_text())
        if match or time.monotonic() > deadline:
            assert match, f"no gunicorn access-log line matches {pattern!r}"
            return match
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ the tests
def test_stream_chunks_arrive_one_by_one_through_nginx(stack):
    direct, proxied = [], []
    for _ in range(RUNS):  # interleaved, so both see the same machine load
        direct.append(timed_stream(stack["gateway"].url))
        proxied.append(timed_stream(stack["nginx"].url))
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    report = {name: {key: [round(run[key], 3) for run in runs] for key in ("ttft", "spread", "apart")}
              for name, runs in (("direct", direct), ("nginx", proxied))}
    print(f"\nstream timings over {RUNS} runs (s): {json.dumps(report)}")
    assert proxied[0]["text"] == direct[0]["text"]
    # The measurement itself sees a spread-out stream when nothing is in between...
    assert median(direct, "spread") > 1.5, report
    # ...and nginx neither holds the chunks back until the end nor delays the first one.
    assert median(proxied, "spread") > 1.5, report
    assert median(proxied, "apart") >= TOKENS * 3 // 4, report  # arrived ~TOKEN_DELAY apart, not in bursts
    assert median(proxied, "ttft") - median(direct, "ttft") < 0.15, report


def test_whole_chat_through_nginx(stack):
    resp = chat(stack["nginx"].url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding" not in resp.headers  # gzip off for the API, despite the hostile global gzip_types
    reply = resp.json()
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["completion_tokens"] == TOKENS
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_request_id_and_forwarded_headers_reach_gunicorn(stack):
    nginx = stack["nginx"]
    rid = f"e2e-{time.time_ns()}"
    resp = chat(nginx.url, {"X-Request-Id": rid, "X-Forwarded-For": "203.0.113.7",
                            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, max_tokens=2)
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Request-Id"] == rid  # the gateway used the client's id
    seen = gunicorn_saw(stack, rf"probe rid={rid} xff=(.*?) proto=(\S*) xfh=(\S*) status=200").groups()
    # nginx appends the peer to the client's chain and sets the scheme and host itself.
    assert seen == ("203.0.113.7, 127.0.0.1", "http", "127.0.0.1"), seen

    # No X-Request-Id from the client: nginx makes one, the gateway uses it, and both access logs carry it.
    resp = chat(nginx.url, {"X-Forwarded-For": "198.51.100.9"}, max_tokens=2)
    assert resp.status_code == 200, resp.text
    generated = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    gunicorn_saw(stack, rf"probe rid={generated} xff=198\.51\.100\.9, 127\.0\.0\.1 ")
    deadline = time.monotonic() + 5
    while f"rid={generated}" not in nginx.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"rid={generated}" in nginx.access_log.read_text()


def test_five_megabyte_body_reaches_the_gateway(stack):
    # An ignored field carries the bulk, so the gateway answers 200: proof it read the whole body.
    resp = chat(stack["nginx"].url, max_tokens=2, e2e_padding="x" * (5 * 1024 * 1024))
    assert resp.status_code == 200, resp.text[:500]
    assert resp.json()["object"] == "chat.completion"


def test_too_large_bodies_get_json_413s(stack):
    limit_mb = int(re.search(r"(?m)^\s*client_max_body_size\s+(\d+)m;", SHIPPED_CONF.read_text()).group(1))
    app_limit_mb = 16  # the gateway's MAX_REQUEST_BODY_BYTES default; nginx's limit must stay above it
    assert limit_mb > app_limit_mb
    answers = {}
    for size_mb in (app_limit_mb + 1, limit_mb + 1):
        resp = requests.post(f"{stack['nginx'].url}/v1/chat/completions", data=b"x" * (size_mb * 1024 * 1024),
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
        assert resp.status_code == 413, resp.text[:300]
        assert resp.headers["Content-Type"].startswith("application/json")
        answers[size_mb] = resp
    # Over the gateway's limit: its own answer passes through nginx (with its request id)...
    assert "X-Request-Id" in answers[app_limit_mb + 1].headers
    assert "client_max_body_size" not in answers[app_limit_mb + 1].json()["error"]["message"]
    # ...over nginx's: nginx's JSON stand-in, which the SDK reads the same way.
    assert answers[limit_mb + 1].json()["error"]["code"] == "request_too_large"


def test_nginx_own_502_is_openai_json(nginx_bin, run_dir):

    # gunicorn down (nothing listens on the upstream port): nginx's 502 is the OpenAI error body.
    dead = Nginx(nginx_bin, run_dir, upstream=f"127.0.0.1:{procs.free_port()}", name="nginx-no-upstream",
                 ready_status=502)
    try:
        resp = chat(dead.url)
        assert resp.status_code == 502
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["error"]["code"] == "upstream_unavailable"
    finally:
        dead.stop()
