"""Workers that disappear and come back: a gateway with no controller in front of two simulated workers."""
from __future__ import annotations

import collections
import json
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from fault_checks import (KEY, MODEL, READ_TIMEOUT, WHOLE, Outcome, body_for, call, generation_calls, normal_problems,
                          outcome_problems, wait_idle)
from harness import sse
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


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
        a = SimulatedWorker(run_dir, "--tokens", "8", name="sim-faults-pair-a", model=MODEL)
        started.append(a)
        b = SimulatedWorker(run_dir, "--tokens", "8", name="sim-faults-pair-b", model=MODEL)
        started.append(b)
        gw = Gateway(run_dir, name="gateway-faults-pair", WORKER_ADDRESSES=f"{a.address},{b.address}",
                     API_KEYS=KEY, WORKER_STATUS_INTERVAL="0.5", WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        yield SimpleNamespace(a=a, b=b, gateway=gw)
    finally:
        for proc in reversed(started):
            proc.stop()


def wait_used(pair_, worker: SimulatedWorker, timeout: float = 5.0) -> list[str]:
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
            events = sse.parse(out.raw)
        except sse.SSEError as exc:
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
