"""Every simulated-worker fault (fault_checks.py's table) on the shared stack (tests/reliability/conftest.py: one
gateway with no controller in front of one simulated worker), with requests and with the openai SDK."""
from __future__ import annotations

import time

import openai
import pytest
import requests

from fault_checks import (DIRECTIVES, KEY, MODEL, READ_TIMEOUT, SIM_MODE, STREAM, WHOLE, Expect, body_for, call,
                          generation_calls, injected, normal_problems, outcome_problems, settle, wait_idle)


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
