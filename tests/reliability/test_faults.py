"""Fault injection (issue 7, part 3): every simulated-worker fault, a controller that is down, slow or broken,
workers that disappear and come back.

For every case the client gets the documented error (README "Errors" and "Failover") or a normal answer where the
contract allows it, a stream always ends (an error event then ``data: [DONE]``, or a JSON error before the first
byte), no worker stream or request is left open, and a normal request succeeds afterwards.

Expected outcome of each worker fault (a whole response / a stream):

============================  ======================================  ==========================================
fault                         whole                                   stream
============================  ======================================  ==========================================
error (in-band, 50001)        500 ``worker_error``                    200, error event ``worker_error``, [DONE]
oom (in-band, 50002)          503 ``worker_error``                    200, error event ``worker_error``, [DONE]
die (connection closed)       502 ``upstream_error``, not retried     200, error event ``upstream_error``, [DONE]
hang                          504 ``upstream_timeout``, no-retry hdr  200, error event ``upstream_timeout``, [DONE]
slow-first-token < timeout    normal answer                           normal stream
slow-first-token > timeout    504 ``upstream_timeout``                200, error event ``upstream_timeout``, [DONE]
http-500                      502 ``upstream_error``                  502 ``upstream_error`` (before any byte)
garbage                       502 ``upstream_error``                  200, error event ``upstream_error``, [DONE]
============================  ======================================  ==========================================

``die`` on a whole request: the worker accepted the connection and read the request, then closed it without a
reply. That worker *was* reached and generation may have started, so by README "Failover" ("Nothing is retried
once generation may have started ... a broken stream goes to the client as it is") it is a broken reply: 502
``upstream_error``, no failover, and the worker stays in rotation.
"""
from __future__ import annotations

import collections
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import openai
import pytest
import requests

import procs
from stack import SIMULATED_WORKER, Gateway, wait_registered

KEY = "sk-reliability"  # the shared `gateway` fixture's key (tests/reliability/conftest.py)
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "sim-model"
READ_TIMEOUT = 3.0  # WORKER_READ_TIMEOUT of the shared gateway fixture and of the gateways started here
STATUS_INTERVAL = 1.0  # WORKER_STATUS_INTERVAL of the shared gateway fixture
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}

# fault key -> the directive put in the prompt
DIRECTIVES = {
    "error": "[[fault:error]]",
    "oom": "[[fault:oom]]",
    "die": "[[fault:die]]",
    "hang": "[[fault:hang]]",
    "slow-first-token": "[[fault:slow-first-token delay=1]]",  # below WORKER_READ_TIMEOUT: a normal answer
    "slow-first-token-timeout": "[[fault:slow-first-token delay=5]]",  # above it
    "http-500": "[[fault:http-500]]",
    "garbage": "[[fault:garbage]]",
    # the fault as the very first frame of a stream (after the worker's 200 head)
    "error-first-frame": "[[fault:error after=0]]",
    "die-first-frame": "[[fault:die after=0]]",
    "garbage-first-frame": "[[fault:garbage after=0]]",
}
SIM_MODE = {key: directive[len("[[fault:"):].split("]")[0].split()[0] for key, directive in DIRECTIVES.items()}


@dataclass(frozen=True)
class Expect:
    """What the client must get: status, error.code, FastChat code, error.type; in_stream: an error event
    after a 200 head (else a JSON error body); status 200 and no code: a normal answer."""

    status: int = 200
    code: str | None = None
    fastchat: int | None = None
    type: str = "server_error"
    in_stream: bool = False
    min_seconds: float = 0.0
    max_seconds: float = 2.5

    @property
    def normal(self) -> bool:
        return self.code is None


TIMED_OUT = dict(min_seconds=READ_TIMEOUT - 0.5, max_seconds=READ_TIMEOUT + 2.5)
WHOLE = {
    "error": Expect(500, "worker_error", 50001),
    "oom": Expect(503, "worker_error", 50002),
    "die": Expect(502, "upstream_error", 50001),
    "hang": Expect(504, "upstream_timeout", 50006, **TIMED_OUT),
    "slow-first-token": Expect(min_seconds=0.9, max_seconds=READ_TIMEOUT),
    "slow-first-token-timeout": Expect(504, "upstream_timeout", 50006, **TIMED_OUT),
    "http-500": Expect(502, "upstream_error", 50001),
    "garbage": Expect(502, "upstream_error", 50001),
}
STREAM = {
    "error": Expect(200, "worker_error", 50001, in_stream=True),
    "oom": Expect(200, "worker_error", 50002, in_stream=True),
    "die": Expect(200, "upstream_error", 50001, in_stream=True),
    "hang": Expect(200, "upstream_timeout", 50006, in_stream=True, **TIMED_OUT),
    "slow-first-token": Expect(min_seconds=0.9, max_seconds=READ_TIMEOUT),
    "slow-first-token-timeout": Expect(200, "upstream_timeout", 50006, in_stream=True, **TIMED_OUT),
    "http-500": Expect(502, "upstream_error", 50001),
    "garbage": Expect(200, "upstream_error", 50001, in_stream=True),
    "error-first-frame": Expect(200, "worker_error", 50001, in_stream=True),
    "die-first-frame": Expect(200, "upstream_error", 50001, in_stream=True),
    "garbage-first-frame": Expect(200, "upstream_error", 50001, in_stream=True),
}
ERROR_TYPES = {"upstream_unavailable": "service_unavailable_error"}


# --------------------------------------------------------------------------------------------------- helpers
@dataclass
class Outcome:
    status: int
    headers: dict
    raw: bytes
    elapsed: float
    started: float = 0.0
    ended: float = 0.0

    def json(self):
        return json.loads(self.raw)


def body_for(endpoint: str, text: str, stream: bool = False, n: int = 1) -> dict:
    if endpoint == "chat":
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    elif endpoint == "completions":
        body = {"model": MODEL, "prompt": text, "max_tokens": 8}
    else:  # embeddings: the directive in one input of two faults the whole batch
        return {"model": MODEL, "input": ["a plain input", text]}
    if stream:
        body["stream"] = True
    if n != 1:
        body["n"] = n
    return body


def call(base_url: str, endpoint: str, body: dict, timeout=(5, 20), session: requests.Session | None = None,
         headers: dict | None = None) -> Outcome:
    """POST and read the whole response, streamed or not, as raw bytes (framing is checked on those)."""
    started = time.monotonic()
    post = session.post if session is not None else requests.post
    with post(base_url + PATHS.get(endpoint, endpoint), json=body, headers=headers or AUTH, stream=True,
              timeout=timeout) as resp:
        raw = b"".join(resp.iter_content(chunk_size=None))
        ended = time.monotonic()
        return Outcome(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, raw, ended - started,
                       started, ended)


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing strictly: only `data: ...` events, each ended by
    a blank line, the last one `[DONE]` and nothing after it."""
    if not raw.endswith(b"\n\n"):
        raise AssertionError(f"SSE body does not end with a blank line: ...{raw[-120:]!r}")
    blocks = raw[:-2].split(b"\n\n")
    events = []
    for block in blocks:
        if not block.startswith(b"data: ") or b"\n" in block:
            raise AssertionError(f"not a single-line `data:` event: {block[:200]!r}")
        events.append(block[len(b"data: "):].decode("utf-8"))
    if not events or events[-1] != "[DONE]":
        raise AssertionError(f"stream does not end with data: [DONE]; last events {events[-2:]!r}")
    if events.count("[DONE]") != 1:
        raise AssertionError("data: [DONE] sent more than once")
    return events


def error_body_problems(body, expect: Expect, where: str) -> list[str]:
    problems = []
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return [f"{where}: not an error body: {body!r:.300}"]
    error = body["error"]
    expected_type = ERROR_TYPES.get(expect.code, expect.type)
    if error.get("code") != expect.code:
        problems.append(f"{where}: error.code {error.get('code')!r}, expected {expect.code!r} "
                        f"(message: {error.get('message')!r})")
    if error.get("type") != expected_type:
        problems.append(f"{where}: error.type {error.get('type')!r}, expected {expected_type!r}")
    if expect.fastchat is not None and body.get("code") != expect.fastchat:
        problems.append(f"{where}: FastChat code {body.get('code')!r}, expected {expect.fastchat}")
    if body.get("object") != "error" or not isinstance(error.get("message"), str) or not error["message"]:
        problems.append(f"{where}: body lacks object=error or a message: {body!r:.300}")
    return problems


def normal_problems(endpoint: str, out: Outcome, stream: bool, where: str) -> list[str]:
    """A normal (successful) answer, whole or streamed."""
    if out.status != 200:
        return [f"{where}: HTTP {out.status}, expected 200: {out.raw[:300]!r}"]
    if stream:
        try:
            events = sse_events(out.raw)
        except AssertionError as exc:
            return [f"{where}: {exc}"]
        chunks = [json.loads(e) for e in events[:-1]]
        errors = [c for c in chunks if "error" in c]
        if errors:
            return [f"{where}: error event in a normal stream: {errors[0]!r:.300}"]
        finished = [c for c in chunks for ch in c.get("choices") or [] if ch.get("finish_reason")]
        if not finished:
            return [f"{where}: no chunk with a finish_reason"]
        return []
    body = out.json()
    expected_object = {"chat": "chat.completion", "completions": "text_completion", "embeddings": "list"}[endpoint]
    if body.get("object") != expected_object:
        return [f"{where}: object {body.get('object')!r}, expected {expected_object!r}: {body!r:.300}"]
    if endpoint == "embeddings":
        return [] if len(body.get("data") or []) == 2 else [f"{where}: expected 2 embeddings: {body!r:.300}"]
    choice = (body.get("choices") or [{}])[0]
    text = choice.get("message", {}).get("content") if endpoint == "chat" else choice.get("text")
    return [] if isinstance(text, str) and text else [f"{where}: empty completion: {body!r:.300}"]


def outcome_problems(endpoint: str, out: Outcome, stream: bool, expect: Expect, n: int = 1) -> list[str]:
    """Everything wrong with `out` against `expect`."""
    problems = []
    if not expect.min_seconds <= out.elapsed < expect.max_seconds:
        problems.append(f"took {out.elapsed:.2f}s, expected {expect.min_seconds}-{expect.max_seconds}s")
    if expect.normal:
        return problems + normal_problems(endpoint, out, stream, "response")
    if out.status != expect.status:
        problems.append(f"HTTP {out.status}, expected {expect.status}: {out.raw[:400]!r}")
        return problems
    if expect.in_stream:
        if not out.headers.get("content-type", "").startswith("text/event-stream"):
            problems.append(f"content-type {out.headers.get('content-type')!r} for a stream")
        try:
            events = sse_events(out.raw)
        except AssertionError as exc:
            return problems + [str(exc)]
        payloads = [json.loads(e) for e in events[:-1]]
        errors = [i for i, p in enumerate(payloads) if "error" in p]
        if len(errors) != 1 or errors[0] != len(payloads) - 1:
            problems.append(f"expected exactly one error event, right before [DONE]; error event positions "
                            f"{errors} of {len(payloads)} events")
        if errors:
            problems += error_body_problems(payloads[errors[-1]], expect, "error event")
        return problems
    if not out.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"content-type {out.headers.get('content-type')!r} for a JSON error")
    try:
        body = out.json()
    except ValueError:
        return problems + [f"error body is not JSON: {out.raw[:300]!r}"]
    problems += error_body_problems(body, expect, "error body")
    if expect.status == 504 and out.headers.get("x-should-retry") != "false":
        problems.append(f"504 without x-should-retry: false (got {out.headers.get('x-should-retry')!r})")
    return problems


def wait_idle(*workers, timeout: float = 1.0) -> list[str]:
    """Every worker's open_streams and active_requests back to 0 within `timeout`; the problems if not."""
    deadline = time.monotonic() + timeout
    while True:
        stats = [worker.stats() for worker in workers]
        busy = [(w.address, s["open_streams"], s["active_requests"]) for w, s in zip(workers, stats)
                if s["open_streams"] or s["active_requests"]]
        if not busy:
            return []
        if time.monotonic() >= deadline:
            return [f"worker {a}: open_streams={o} active_requests={r} still {timeout:.0f}s after the response"
                    for a, o, r in busy]
        time.sleep(0.05)


def injected(stats: dict) -> int:
    return sum(stats.get("faults_injected", {}).values())


def generation_calls(stats: dict) -> int:
    requests_ = stats.get("requests", {})
    return requests_.get("/worker_generate", 0) + requests_.get("/worker_generate_stream", 0)


def settle(base_url: str, timeout: float = 6.0) -> None:
    """After a case that may have taken the worker out of rotation: wait for a status poll to bring it back."""
    time.sleep(STATUS_INTERVAL + 0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if call(base_url, "chat", body_for("chat", "settle")).status == 200:
            return
        time.sleep(0.2)


class Tally:
    """Counts for report section "faults"."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.scenarios: set[str] = set()
        self.failed: list[str] = []

    def case(self, scenario: str, *, requests: int = 0, faults: int = 0, errors: int = 0) -> None:
        self.counts["cases"] += 1
        self.counts["requests"] += requests
        self.counts["faults_injected"] += faults
        self.counts["error_replies"] += errors
        self.scenarios.add(scenario)

    def passed(self) -> None:
        self.counts["passed"] += 1


@pytest.fixture(scope="module")
def tally(report):
    collected = Tally()
    yield collected
    counts = dict(collected.counts)
    counts.setdefault("passed", 0)
    report.add("faults", **counts, failed=counts.get("cases", 0) - counts["passed"],
               scenarios=sorted(collected.scenarios))


# ----------------------------------------------------------------------- worker faults on the shared stack
def _matrix():
    cases = []
    for fault in WHOLE:
        for endpoint in ("chat", "completions", "embeddings"):
            cases.append(pytest.param(endpoint, False, fault, 1, id=f"{endpoint}-whole-{fault}"))
    for fault in STREAM:
        for endpoint in ("chat", "completions"):
            cases.append(pytest.param(endpoint, True, fault, 1, id=f"{endpoint}-stream-{fault}"))
    # n = 2: two worker calls / streams per request, both faulted; the other must be closed too
    for fault in ("error", "die", "hang", "garbage"):
        cases.append(pytest.param("chat", True, fault, 2, id=f"chat-stream-n2-{fault}"))
        cases.append(pytest.param("completions", False, fault, 2, id=f"completions-whole-n2-{fault}"))
    return cases


@pytest.mark.parametrize("endpoint, stream, fault, n", _matrix())
def test_worker_fault(endpoint, stream, fault, n, gateway, sim_worker, tally):
    expect = (STREAM if stream else WHOLE)[fault]
    before = sim_worker.stats()
    out = call(gateway.url, endpoint, body_for(endpoint, f"tell me {DIRECTIVES[fault]} a story", stream, n))
    problems = outcome_problems(endpoint, out, stream, expect, n)
    problems += wait_idle(sim_worker)
    after = sim_worker.stats()
    faults = injected(after) - injected(before)
    if faults < 1:
        problems.append(f"the worker injected no fault (faults_injected {after.get('faults_injected')})")
    # Nothing is retried once generation may have started: one worker call per choice, whatever the fault.
    if endpoint != "embeddings" and generation_calls(after) - generation_calls(before) != n:
        problems.append(f"{generation_calls(after) - generation_calls(before)} generation calls reached the "
                        f"worker, expected {n} (one per choice, no retry)")
    # Later requests succeed.
    follow = call(gateway.url, endpoint, body_for(endpoint, "and now a normal one", stream))
    follow_problems = normal_problems(endpoint, follow, stream, "next normal request")
    problems += follow_problems
    if follow_problems or out.status in (503, 404):
        settle(gateway.url)  # do not let this case's damage leak into the next ones
    tally.case(f"worker:{fault}", requests=2, faults=faults, errors=0 if expect.normal else 1)
    assert not problems, f"{endpoint} {'stream' if stream else 'whole'} n={n} [[fault:{SIM_MODE[fault]}]]:\n" + \
        "\n".join(problems)
    tally.passed()


def test_global_fault_mode_with_count(gateway, sim_worker, tally):
    """POST /sim/fault (no directive): the next generation requests fail, then the worker is healthy again."""
    problems = []
    requests.post(f"{sim_worker.address}/sim/fault", json={"mode": "oom", "count": 2}, timeout=5).raise_for_status()
    try:
        outs = [call(gateway.url, "completions", body_for("completions", "plain prompt")),
                call(gateway.url, "chat", body_for("chat", "plain prompt", stream=True))]
        problems += outcome_problems("completions", outs[0], False, WHOLE["oom"])
        problems += outcome_problems("chat", outs[1], True, STREAM["oom"])
        problems += wait_idle(sim_worker)
        state = requests.get(f"{sim_worker.address}/sim/fault", timeout=5).json()["fault"]
        if state["mode"] != "none":
            problems.append(f"fault mode still {state}")
        for stream in (False, True):
            problems += normal_problems("chat", call(gateway.url, "chat", body_for("chat", "again", stream)), stream,
                                        "next normal request")
    finally:
        requests.post(f"{sim_worker.address}/sim/fault", json={"mode": "none"}, timeout=5).raise_for_status()
    tally.case("worker:global-oom", requests=4, faults=2, errors=2)
    assert not problems, "\n".join(problems)
    tally.passed()


# ------------------------------------------------------------------------------- the same, via the openai SDK
SDK_CASES = [pytest.param(fault, stream, id=f"{'stream' if stream else 'whole'}-{fault}")
             for fault in ("error", "oom", "die", "hang", "slow-first-token", "http-500", "garbage")
             for stream in (False, True)]


@pytest.mark.parametrize("fault, stream", SDK_CASES)
def test_worker_fault_openai_sdk(fault, stream, gateway, sim_worker, tally):
    """The official SDK raises what each status promises: InternalServerError (with the status) before the first
    byte, exactly openai.APIError for an error event mid-stream."""
    expect = (STREAM if stream else WHOLE)[fault]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=20)
    messages = [{"role": "user", "content": f"tell me {DIRECTIVES[fault]} a story"}]
    chunks = []
    tally.case(f"sdk:{fault}", requests=1, faults=1, errors=0 if expect.normal else 1)
    try:
        _sdk_case(client, expect, messages, stream, chunks)
    finally:
        client.close()
        if fault == "die" and not stream:  # may have taken the worker out of rotation (see test_worker_fault)
            settle(gateway.url)
    assert not wait_idle(sim_worker)
    tally.passed()


def _sdk_case(client: openai.OpenAI, expect: Expect, messages: list, stream: bool, chunks: list) -> None:
    if expect.normal:
        if stream:
            for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
                chunks.append(chunk)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        else:
            reply = client.chat.completions.create(model=MODEL, messages=messages)
            assert reply.choices[0].message.content
    elif not expect.in_stream:
        with pytest.raises(openai.InternalServerError) as raised:
            result = client.chat.completions.create(model=MODEL, messages=messages, stream=stream)
            if stream:
                chunks.extend(result)
        assert raised.value.status_code == expect.status, (raised.value.status_code, raised.value.body)
        assert raised.value.code == expect.code, raised.value.body
    else:
        with pytest.raises(openai.APIError) as raised:
            for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
                chunks.append(chunk)
        assert type(raised.value) is openai.APIError, f"{type(raised.value).__name__}: {raised.value}"
        assert raised.value.code == expect.code, raised.value.body
        assert raised.value.type == expect.type
        assert chunks, "the chunks before the fault were not delivered"


def test_sdk_does_not_retry_a_timed_out_generation(gateway, sim_worker, tally):
    """504 carries x-should-retry: false, so even an SDK with retries enabled generates the prompt once."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=2, timeout=30)
    tally.case("sdk:hang-no-retry", requests=1, faults=1, errors=1)
    before = generation_calls(sim_worker.stats())
    started = time.monotonic()
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[fault:hang]]"}])
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert raised.value.status_code == 504 and raised.value.code == "upstream_timeout"
    assert generation_calls(sim_worker.stats()) - before == 1, "the SDK retried a timed-out generation"
    assert elapsed < READ_TIMEOUT + 2.5
    assert not wait_idle(sim_worker)
    tally.passed()


# ------------------------------------------------------- workers that disappear and come back (no controller)
class Worker:
    """bench/simworker on a fixed port, which can be stopped and started again on that port."""

    def __init__(self, run_dir, name: str, *args: str, controller: str | None = None, model: str = MODEL):
        self.run_dir = run_dir
        self.name = name
        self.model = model
        self.port = procs.free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.cmd = [*SIMULATED_WORKER, "--host", "127.0.0.1", "--port", str(self.port),
                    "--model-names", model, *args]
        self.cmd += ["--controller-address", controller] if controller else ["--no-register"]
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = procs.Proc(self.cmd, log_dir=self.run_dir, name=self.name, cwd=procs.REPO_ROOT)
        self.proc.wait_http(f"{self.address}/worker_get_status", method="POST", timeout=15,
                            ok=lambda r: r.status_code == 200)

    def stats(self) -> dict:
        return requests.get(f"{self.address}/sim/stats", timeout=5).json()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def mixed_requests(base_url: str, count: int, tag: str) -> list[str]:
    """`count` normal requests (chat/completions, whole/streamed); the problems."""
    problems = []
    for i in range(count):
        endpoint = ("chat", "completions")[i % 2]
        stream = bool(i // 2 % 2)
        out = call(base_url, endpoint, body_for(endpoint, f"{tag} request {i}", stream))
        problems += normal_problems(endpoint, out, stream, f"{tag} #{i} ({endpoint}, stream={stream})")
    return problems


@pytest.fixture(scope="module")
def pair(run_dir):
    """A gateway with no controller in front of two simulated workers, polled every 0.5 s."""
    started = []
    try:
        a = Worker(run_dir, "sim-faults-pair-a", "--tokens", "8")
        started.append(a)
        b = Worker(run_dir, "sim-faults-pair-b", "--tokens", "8")
        started.append(b)
        gw = Gateway(run_dir, name="gateway-faults-pair", WORKER_ADDRESSES=f"{a.address},{b.address}",
                     API_KEYS=KEY, WORKER_STATUS_INTERVAL="0.5", WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        yield SimpleNamespace(a=a, b=b, gateway=gw)
    finally:
        for proc in reversed(started):
            proc.stop()


def wait_used(pair_, worker: Worker, timeout: float = 5.0) -> list[str]:
    """Send normal requests until `worker` serves one (it is back in rotation); the problems."""
    problems = []
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        problems += mixed_requests(pair_.gateway.url, 2, f"while waiting for {worker.name} #{i}")
        i += 1
        if generation_calls(worker.stats()) > 0:
            return problems
    return problems + [f"{worker.name} restarted on {worker.address} was not used again within {timeout}s"]


def test_worker_disappears_and_comes_back(pair, tally):
    problems = mixed_requests(pair.gateway.url, 8, "both up")
    pair.a.stop()
    problems += mixed_requests(pair.gateway.url, 20, "a stopped")
    ready = requests.get(f"{pair.gateway.url}/ready", timeout=5)
    if ready.status_code != 200:
        problems.append(f"/ready {ready.status_code} with one of two workers up")
    served_by_b = generation_calls(pair.b.stats())
    pair.a.start()  # same port
    problems += wait_used(pair, pair.a)
    problems += mixed_requests(pair.gateway.url, 20, "a back")
    a_calls = generation_calls(pair.a.stats())
    if a_calls < 1:
        problems.append("the restarted worker served none of the last 20 requests")
    problems += wait_idle(pair.a, pair.b)
    tally.case("worker:disappears-and-returns", requests=48, faults=1)
    assert not problems, "\n".join(problems)
    assert served_by_b >= 20
    tally.passed()


def test_streams_on_a_killed_worker_end(pair, tally):
    """Streams held open on two workers; one worker is killed: its streams end at once with an upstream_error
    event then [DONE], the other worker's streams time out (upstream_timeout) and end the same way."""
    url = pair.gateway.url
    results: dict[int, object] = {}
    threads = []

    def run(i: int) -> None:
        try:
            results[i] = call(url, "chat", body_for("chat", f"[[fault:hang after=1]] stream {i}", True),
                              timeout=(5, 15))
        except Exception as exc:  # reported below
            results[i] = exc

    try:
        for i in range(8):
            thread = threading.Thread(target=run, args=(i,), daemon=True)
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:  # until this stream is open on some worker
                if pair.a.stats()["open_streams"] + pair.b.stats()["open_streams"] >= i + 1:
                    break
                time.sleep(0.02)
            if i >= 1 and pair.a.stats()["open_streams"] and pair.b.stats()["open_streams"]:
                break
        on_a = pair.a.stats()["open_streams"]
        on_b = pair.b.stats()["open_streams"]
        assert on_a >= 1 and on_b >= 1, f"streams not spread over both workers: a={on_a} b={on_b}"
        stopped_at = time.monotonic()
        pair.a.stop()
    finally:
        for thread in threads:
            thread.join(timeout=20)
    problems = []
    codes = collections.Counter()
    for i, out in sorted(results.items()):
        if not isinstance(out, Outcome):
            problems.append(f"stream {i}: {out!r}")
            continue
        try:
            events = sse_events(out.raw)
        except AssertionError as exc:
            problems.append(f"stream {i}: {exc}")
            continue
        error = json.loads(events[-2]).get("error", {}) if len(events) >= 2 else {}
        codes[error.get("code")] += 1
        if error.get("code") == "upstream_error" and out.ended - stopped_at > 2:
            problems.append(f"stream {i} on the killed worker ended {out.ended - stopped_at:.1f}s after the kill")
    if len(results) != len(threads):
        problems.append(f"{len(threads) - len(results)} streams never ended")
    if codes != {"upstream_error": on_a, "upstream_timeout": on_b}:
        problems.append(f"stream endings {dict(codes)}, expected {on_a} upstream_error (killed worker) and "
                        f"{on_b} upstream_timeout (hanging worker)")
    problems += wait_idle(pair.b)
    pair.a.start()
    problems += wait_used(pair, pair.a)
    tally.case("worker:killed-mid-stream", requests=len(threads), faults=len(threads) + 1, errors=len(threads))
    assert not problems, "\n".join(problems)
    tally.passed()


def test_worker_dying_before_its_reply_is_not_retried(pair, tally):
    """A worker that closes the connection after reading a whole-generation request was reached: the request may
    have been generated, so it must not be sent to another worker (README "Failover"), the client gets 502
    upstream_error, and the worker stays in rotation."""
    problems = []
    before = generation_calls(pair.a.stats()) + generation_calls(pair.b.stats())
    out = call(pair.gateway.url, "chat", body_for("chat", "[[fault:die]] once only"))
    problems += outcome_problems("chat", out, False, WHOLE["die"])
    calls = generation_calls(pair.a.stats()) + generation_calls(pair.b.stats()) - before
    if calls != 1:
        problems.append(f"the prompt was sent to {calls} workers (generated {calls} times), expected once")
    problems += mixed_requests(pair.gateway.url, 6, "right after")
    problems += wait_idle(pair.a, pair.b)
    time.sleep(1.0)  # let the status polls restore anything the case took out of rotation
    tally.case("worker:die-before-reply-failover", requests=7, faults=calls)
    assert not problems, "\n".join(problems)
    tally.passed()


# ------------------------------------------------------------- a real FastChat controller that goes down
@pytest.fixture(scope="module")
def fastchat_python():
    try:
        return procs.ensure_fastchat_venv("controller", procs.REPO_ROOT / ".venv-fastchat")
    except procs.PrerequisiteMissing as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def controlled(fastchat_python, run_dir):
    """A real FastChat controller, one simulated worker registered to it (heartbeat every 0.5 s), a gateway with
    CONTROLLER_READ_TIMEOUT=1."""
    started = []
    try:
        ctl = procs.FastChatController(fastchat_python, run_dir, name="fastchat-controller-faults")
        started.append(ctl)
        worker = Worker(run_dir, "sim-faults-controlled", "--tokens", "8", "--heartbeat-interval", "0.5",
                        controller=ctl.address, model="ctl-model")
        started.append(worker)
        wait_registered(ctl.address, "ctl-model")
        gw = Gateway(run_dir, name="gateway-faults-controller", CONTROLLER_ADDRESS=ctl.address, API_KEYS=KEY,
                     CONTROLLER_READ_TIMEOUT="1", WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        stack = SimpleNamespace(controller=ctl, worker=worker, gateway=gw, python=fastchat_python, run_dir=run_dir)
        yield stack
        started[0] = stack.controller  # it may have been replaced by a restart
    finally:
        for proc in reversed(started):
            proc.stop()


def model_requests(base_url: str, model: str, tag: str) -> list[Outcome]:
    """One of each: chat whole, chat streamed, completions whole, models list."""
    def body(endpoint, stream=False):
        b = body_for(endpoint, f"{tag} hello", stream)
        b["model"] = model
        return b
    outs = [call(base_url, "chat", body("chat")), call(base_url, "chat", body("chat", True)),
            call(base_url, "completions", body("completions"))]
    started = time.monotonic()
    with requests.get(f"{base_url}/v1/models", headers=AUTH, timeout=(5, 20)) as resp:
        outs.append(Outcome(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content,
                            time.monotonic() - started))
    return outs


def unavailable_problems(outs: list[Outcome], expect: Expect, tag: str) -> list[str]:
    problems = []
    for name, out in zip(("chat", "chat stream", "completions", "GET /v1/models"), outs):
        if out.status != expect.status:
            problems.append(f"{tag}: {name}: HTTP {out.status}, expected {expect.status}: {out.raw[:300]!r}")
            continue
        if out.elapsed >= expect.max_seconds:
            problems.append(f"{tag}: {name}: took {out.elapsed:.1f}s (bound {expect.max_seconds}s)")
        problems += error_body_problems(out.json(), expect, f"{tag}: {name}")
        if expect.status == 504 and out.headers.get("x-should-retry") != "false":
            problems.append(f"{tag}: {name}: 504 without x-should-retry: false")
    return problems


def ready_status(base_url: str) -> int:
    return requests.get(f"{base_url}/ready", timeout=10).status_code


def wait_success(base_url: str, model: str, timeout: float) -> list[str]:
    """Until a chat request for `model` succeeds; then a few of each kind must succeed."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        body = body_for("chat", "are you back")
        body["model"] = model
        last = call(base_url, "chat", body)
        if last.status == 200:
            break
        time.sleep(0.2)
    else:
        return [f"no success within {timeout}s; last: HTTP {last.status} {last.raw[:300]!r}"]
    problems = []
    for i, out in enumerate(model_requests(base_url, model, "back")[:3]):
        endpoint, stream = (("chat", False), ("chat", True), ("completions", False))[i]
        problems += normal_problems(endpoint, out, stream, f"after recovery ({endpoint}, stream={stream})")
    if ready_status(base_url) != 200:
        problems.append("/ready not 200 after recovery")
    return problems


def test_controller_down_then_back(controlled, tally):
    url = controlled.gateway.url
    problems = []
    for i, out in enumerate(model_requests(url, "ctl-model", "up")[:3]):
        endpoint, stream = (("chat", False), ("chat", True), ("completions", False))[i]
        problems += normal_problems(endpoint, out, stream, f"controller up ({endpoint})")
    assert not problems, "\n".join(problems)
    port = controlled.controller.port
    controlled.controller.stop()
    expect = Expect(503, "upstream_unavailable", 50005, max_seconds=5.0)
    # Twice: within the model-list cache TTL (5 s), and with it expired (has_model then asks the controller).
    problems += unavailable_problems(model_requests(url, "ctl-model", "down"), expect, "controller down")
    if ready_status(url) != 503:
        problems.append("/ready not 503 with the controller down")
    time.sleep(5.2)
    problems += unavailable_problems(model_requests(url, "ctl-model", "down"), expect,
                                     "controller down, model list expired")
    controlled.controller = procs.FastChatController(controlled.python, controlled.run_dir,
                                                     name="fastchat-controller-faults-restarted", port=port)
    wait_registered(controlled.controller.address, "ctl-model", timeout=15)  # re-registered on a heartbeat
    problems += wait_success(url, "ctl-model", timeout=10)
    problems += wait_idle(controlled.worker)
    tally.case("controller:down-and-back", requests=14, faults=1, errors=8)
    assert not problems, "\n".join(problems)
    tally.passed()


def test_registered_worker_dies_and_returns(controlled, tally):
    """With a controller: the only worker of a model gone -> 503 upstream_unavailable, quickly (failover to
    nothing); the worker back on the same address (it registers again) -> requests succeed."""
    url = controlled.gateway.url
    problems = wait_success(url, "ctl-model", timeout=10)
    controlled.worker.stop()
    out = call(url, "chat", body_for("chat", "anyone there") | {"model": "ctl-model"})
    problems += outcome_problems("chat", out, False, Expect(503, "upstream_unavailable", 50005, max_seconds=5.0))
    controlled.worker.start()
    wait_registered(controlled.controller.address, "ctl-model", timeout=15)
    problems += wait_success(url, "ctl-model", timeout=10)
    problems += wait_idle(controlled.worker)
    tally.case("controller:worker-dies-and-returns", requests=6, faults=1, errors=1)
    assert not problems, "\n".join(problems)
    tally.passed()


# ------------------------------------------------------- a controller that is slow or answers garbage
class FakeController:
    """A stdlib HTTP server speaking the two controller calls the gateway makes, with a settable delay per path
    and a settable failure mode ("ok", "http-500", "garbage")."""

    def __init__(self, worker_address: str, model: str):
        self.delays: dict[str, float] = {}
        self.mode = "ok"
        self.calls: collections.Counter = collections.Counter()
        owner = self
        replies = {"/list_models": {"models": [model]}, "/get_worker_address": {"address": worker_address},
                   "/refresh_all_workers": {}}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                owner.calls[path] += 1
                delay = owner.delays.get(path, owner.delays.get("*", 0.0))
                if delay:
                    time.sleep(delay)
                if path not in replies:
                    status, body, ctype = 404, b'{"detail": "Not Found"}', "application/json"
                elif owner.mode == "http-500":
                    status, body, ctype = 500, b"Internal Server Error", "text/plain"
                elif owner.mode == "garbage":
                    status, body, ctype = 200, b"<html>not json</html>", "text/html"
                else:
                    status, body, ctype = 200, json.dumps(replies[path]).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the gateway gave up waiting: fine
                    self.close_connection = True

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-controller", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def faked(run_dir):
    """A gateway (CONTROLLER_READ_TIMEOUT=1, model list and worker picks not cached) in front of a fake controller
    that routes to one simulated worker. Without the pick cache every request meets the controller's fault; a
    request right after a good pick would otherwise reuse it (the cache's own tests are in test_controller.py)."""
    started = []
    worker = fake = None
    try:
        worker = Worker(run_dir, "sim-faults-fake-controller", "--tokens", "8")
        started.append(worker)
        fake = FakeController(worker.address, MODEL)
        gw = Gateway(run_dir, name="gateway-faults-fake-controller", CONTROLLER_ADDRESS=fake.address, API_KEYS=KEY,
                     CONTROLLER_READ_TIMEOUT="1", MODEL_LIST_TTL="0", WORKER_PICK_INTERVAL="0",
                     WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        yield SimpleNamespace(fake=fake, worker=worker, gateway=gw)
    finally:
        for proc in reversed(started):
            proc.stop()
        if fake is not None:
            fake.stop()


CONTROLLER_FAULTS = [
    # (id, delays, mode, expected)
    pytest.param({"*": 2.5}, "ok", Expect(504, "upstream_timeout", 50006, max_seconds=5.0), id="slow-all"),
    pytest.param({"/get_worker_address": 2.5}, "ok", Expect(504, "upstream_timeout", 50006, max_seconds=5.0),
                 id="slow-get-worker-address"),
    pytest.param({}, "http-500", Expect(502, "upstream_error", 50001, max_seconds=5.0), id="http-500"),
    pytest.param({}, "garbage", Expect(502, "upstream_error", 50001, max_seconds=5.0), id="garbage"),
]


@pytest.mark.parametrize("delays, mode, expect", CONTROLLER_FAULTS)
def test_controller_slow_or_broken(delays, mode, expect, faked, tally):
    url = faked.gateway.url
    faked.fake.delays, faked.fake.mode = {}, "ok"
    problems = wait_success(url, MODEL, timeout=5)
    assert not problems, "\n".join(problems)
    faked.fake.delays, faked.fake.mode = dict(delays), mode
    outs = []
    try:
        outs = model_requests(url, MODEL, "faulty controller")
        if set(delays) == {"/get_worker_address"}:
            outs = outs[:3]  # GET /v1/models does not ask for a worker
        problems += unavailable_problems(outs, expect, f"controller {mode} {delays}")
        if set(delays) != {"/get_worker_address"} and ready_status(url) != 503:
            problems.append("/ready not 503 with the controller failing")
    finally:
        faked.fake.delays, faked.fake.mode = {}, "ok"
    problems += wait_success(url, MODEL, timeout=10)
    problems += wait_idle(faked.worker)
    tally.case(f"controller:{mode}:{','.join(delays) or '-'}", requests=len(outs) + 4, faults=1, errors=len(outs))
    assert not problems, "\n".join(problems)
    tally.passed()
