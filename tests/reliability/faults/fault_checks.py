"""What the client must get for each simulated-worker fault, and the checks of an outcome against it, shared by
the fault-injection files of this folder.

For every case the client gets the documented error (README "Errors" and "Failover") or a normal answer where the
contract allows it, a stream always ends (an error event then ``data: [DONE]``, or a JSON error before the first
byte), no worker stream or request is left open, and a normal request succeeds afterwards.

Expected outcome of each worker fault (a whole response / a stream):


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

``die`` on a whole request: the worker accepted the connection and read the request, then closed it without a
reply. That worker *was* reached and generation may have started, so by README "Failover" ("Nothing is retried
once generation may have started ... a broken stream goes to the client as it is") it is a broken reply: 502
``upstream_error``, no failover, and the worker stays in rotation.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import requests

from harness import sse

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
            events = sse.parse(out.raw)
        except sse.SSEError as exc:
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
            events = sse.parse(out.raw)
        except sse.SSEError as exc:
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

# ------------------------------------------------------------------------------------- the controller setups
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
