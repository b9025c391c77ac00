"""The benchmark's worker built on FastChat's own worker code (bench/fastchat_worker.py, run by .venv-fastchat's
python): it registers with a real FastChat controller and heart-beats like a FastChat worker, and answers the same
payload with the same bytes as the simulated worker, under both of its stream generators."""
from __future__ import annotations

import time

import pytest
import requests

from harness import fastchat
from harness.procs import wait_until
from harness.simworkers import SimulatedWorker

TIMING = ("--tokens", "12", "--token-delay", "0.002")
PAYLOADS = [
    {"model": "m", "prompt": "USER: Tell me a story. ASSISTANT:", "temperature": 0.7, "top_p": 1.0, "top_k": -1,
     "max_new_tokens": 64, "echo": False, "stop": [], "stop_token_ids": None, "logprobs": None},
    # a stop string, echo, logprobs and a length cut: every part of the simulated model's frames
    {"model": "m", "prompt": "USER: hi ASSISTANT:", "temperature": 0.0, "max_new_tokens": 5, "echo": True,
     "stop": ["zzz"], "logprobs": 2},
]


@pytest.fixture(scope="module")
def workers(fastchat_venv, fastchat_controller, run_dir):
    python = fastchat_venv / "bin" / "python"
    started = []
    try:
        for generator in ("thread", "async"):
            started.append(fastchat.FastChatCodeWorker(
                python, run_dir, *TIMING, "--generator", generator, controller=fastchat_controller.address,
                model=f"fcw-e2e-{generator}", name=f"fcw-e2e-{generator}", heartbeat=1, wait=False))
        started.append(SimulatedWorker(run_dir, *TIMING, model="sim-e2e-reference", name="sim-e2e-reference"))
        for worker in started[:2]:
            worker.wait_ready()
        yield {"thread": started[0], "async": started[1], "simulated": started[2]}
    finally:
        for worker in started:
            worker.stop()


def test_it_registers_with_the_controller_and_heart_beats(workers, fastchat_controller):
    for generator in ("thread", "async"):
        worker = workers[generator]
        fastchat.wait_registered(fastchat_controller.address, worker.model)
        reply = fastchat_controller.post("/get_worker_address", {"model": worker.model}).json()
        assert reply["address"] == worker.address
        assert worker.model in fastchat_controller.list_models()
    # FastChat's own heartbeat thread (interval from FASTCHAT_WORKER_HEART_BEAT_INTERVAL), answered "exist".
    wait_until("a heartbeat", lambda: "Send heart beat" in workers["thread"].proc.log_text(), timeout=10)
    assert workers["thread"].proc.alive()


@pytest.mark.parametrize("generator", ["thread", "async"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=["filler", "stop-echo-logprobs"])
def test_stream_frames_equal_the_simulated_workers_byte_for_byte(workers, generator, payload):
    ours = requests.post(workers[generator].address + "/worker_generate_stream", json=payload, timeout=10)
    reference = requests.post(workers["simulated"].address + "/worker_generate_stream", json=payload, timeout=10)
    assert ours.status_code == reference.status_code == 200
    assert ours.content == reference.content
    frames = ours.content.split(b"\0")
    assert frames[-1] == b"" and len(frames) > 2  # NUL-terminated frames, several of them


def test_the_other_endpoints_answer_as_the_simulated_worker(workers):
    ours, reference = workers["thread"], workers["simulated"]
    for payload in PAYLOADS:
        got = requests.post(ours.address + "/worker_generate", json=payload, timeout=10).json()
        assert got == requests.post(reference.address + "/worker_generate", json=payload, timeout=10).json()
        assert got["finish_reason"] in ("stop", "length") and got["error_code"] == 0
    for path in ("/count_token", "/model_details"):
        body = {"prompt": PAYLOADS[0]["prompt"]}
        assert (requests.post(ours.address + path, json=body, timeout=5).json()
                == requests.post(reference.address + path, json=body, timeout=5).json())
    conv = requests.post(ours.address + "/worker_get_conv_template", timeout=5).json()["conv"]
    assert conv["name"] == "vicuna_v1.1" and isinstance(conv["sep_style"], int)  # fastchat.conversation's own
    status = requests.post(ours.address + "/worker_get_status", timeout=5).json()
    assert status == {"model_names": [ours.model], "speed": 1, "queue_length": 0}


def test_it_keeps_the_simulated_timing(workers):
    """12 tokens 2 ms apart: the stream takes at least the 11 gaps, as the simulated worker's does."""
    payload = PAYLOADS[0]
    for name in ("thread", "async", "simulated"):
        started = time.perf_counter()
        requests.post(workers[name].address + "/worker_generate_stream", json=payload, timeout=10).raise_for_status()
        assert time.perf_counter() - started >= 11 * 0.002


def test_a_bad_payload_is_fastchats_error_frame(workers):
    reply = requests.post(workers["thread"].address + "/worker_generate_stream",
                          json={"prompt": ["not", "a", "string"], "max_new_tokens": 4}, timeout=5)
    frames = [f for f in reply.content.split(b"\0") if f]
    assert len(frames) == 1 and b'"error_code": 50001' in frames[0]  # ErrorCode.INTERNAL_ERROR, as model_worker
