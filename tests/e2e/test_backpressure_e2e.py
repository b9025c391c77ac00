"""Back-pressure under real gunicorn: a full model queue and a full process answer 503 + Retry-After at once, the
probes keep answering, and the openai SDK's own retry gets through once the queue drains."""
from __future__ import annotations

import json
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from harness import procs
from harness.gateway import Gateway, over_simulated_worker
from harness.simworkers import SimulatedWorker

MODEL = "sim-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


SERVED = re.compile(r"\[(\d+)\] \[INFO\] request_id=\S+ .*route=/v1/chat/completions .*status=200 ")


def processes_served(gateway: Gateway) -> set[str]:
    """The gunicorn processes (pids, from the access log) that answered a chat completion with 200."""
    return set(SERVED.findall(gateway.proc.log_text()))


class HeldStream:
    """A chat stream opened on its own connection, its first event read: it holds its place until closed."""

    def __init__(self, url: str, max_tokens: int):
        self.response = requests.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True,
                                                                           "max_tokens": max_tokens},
                                      stream=True, timeout=30)
        assert self.response.status_code == 200, self.response.text
        self.lines = self.response.iter_lines()
        first = next(line for line in self.lines if line)
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        self.rest: list[bytes] = []

    def drain_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: self.rest.extend(self.lines), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.response.close()


def timed(call) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def assert_refused_at_once(session: requests.Session, url: str, body: dict, code: str) -> None:
    """Five tries on a warm connection: each a 503 with Retry-After; typically within 50 ms."""
    timings = []
    for _ in range(5):
        response, took = timed(lambda: session.post(f"{url}/v1/chat/completions", json=body, timeout=10))
        assert response.status_code == 503, response.text
        assert 1 <= int(response.headers["Retry-After"]) <= 30
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("service_unavailable_error", code)
        timings.append(took)
    assert max(timings) < 0.5  # never queued behind the held requests
    assert statistics.median(timings) < 0.05, timings


def backpressure_rejections(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = re.search(r'fastchat_gateway_rejections_total\{key="-",reason="backpressure"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


# ---------------------------------------------------------------------------------------------- streams per process
@pytest.fixture(scope="module", params=["gthread", "gevent"])
def stream_capped(run_dir, request):
    # 4 threads (gevent: 4 connections): streams capped at 2 (4 less the reserve of 2), so a third waits for nothing
    with over_simulated_worker(run_dir, f"bp-streams-{request.param}", "--tokens", "400", "--token-delay", "0.05",
                               WEB_CONCURRENCY="1", GUNICORN_WORKER_CLASS=request.param, GUNICORN_THREADS="4",
                               GUNICORN_WORKER_CONNECTIONS="4") as (gateway, _):
        yield gateway


def test_streams_beyond_the_process_cap_get_503_at_once_and_the_probes_still_answer(stream_capped):
    url = stream_capped.url
    before = backpressure_rejections(url)
    held = [HeldStream(url, 400) for _ in range(2)]
    try:
        with requests.Session() as session:
            assert session.get(f"{url}/health", timeout=5).status_code == 200  # warm the connection
            assert_refused_at_once(session, url, {**CHAT, "stream": True}, "server_overloaded")
            for probe in ("/health", "/ready"):
                response, took = timed(lambda: session.get(f"{url}{probe}", timeout=5))
                assert response.status_code == 200 and took < 0.5
            # a whole reply is not a stream: it still finds a thread
            whole = session.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10)
            assert whole.status_code == 200
    finally:
        for stream in held:
            stream.close()
    assert backpressure_rejections(url) == before + 5
    deadline = time.monotonic() + 5  # the closed streams give their places back once the gateway notices
    while time.monotonic() < deadline:
        response = requests.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 2},
                                 timeout=10)
        if response.status_code == 200:
            break
        time.sleep(0.1)
    assert response.status_code == 200 and b"[DONE]" in response.content


def test_without_the_cap_a_burst_of_streams_takes_every_thread_and_health_stops_answering(run_dir):
    """Why the cap exists: the same burst with MAX_STREAMS_PER_PROCESS=off leaves /health waiting."""
    with over_simulated_worker(run_dir, "bp-uncapped", "--tokens", "400", "--token-delay", "0.05",
                               WEB_CONCURRENCY="1", GUNICORN_THREADS="4", MAX_STREAMS_PER_PROCESS="off") as (gateway,
                                                                                                              _):
        held = [HeldStream(gateway.url, 400) for _ in range(4)]
        try:
            with pytest.raises(requests.ReadTimeout):
                requests.get(f"{gateway.url}/health", timeout=1)
        finally:
            for stream in held:
                stream.close()


# ---------------------------------------------------------------------------------------------- per model
@pytest.fixture
def model_capped(run_dir):
    # A worker generating one request at a time (3 s each); the gateway lets one more wait: a cap of 2.
    with over_simulated_worker(run_dir, "bp-model", "--limit-worker-concurrency", "1", "--tokens", "60",
                               "--token-delay", "0.05", WEB_CONCURRENCY="1", WORKER_CONCURRENCY="1",
                               MODEL_QUEUE_LIMIT="1") as stack:
        yield stack


def status_of(worker: SimulatedWorker) -> dict:
    return requests.post(f"{worker.address}/worker_get_status", timeout=5).json()


class QueuedStream(threading.Thread):
    """A chat stream read to its end in the background: it may wait at the worker before its first byte (FastChat's
    worker takes its semaphore before it answers)."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.status, self.body = None, b""
        self.start()

    def run(self):
        response = requests.post(f"{self.url}/v1/chat/completions",
                                 json={**CHAT, "stream": True, "max_tokens": self.max_tokens}, timeout=30)
        self.status, self.body = response.status_code, response.content


def test_a_full_model_queue_gets_503_at_once_and_the_sdk_retry_gets_through_once_it_drains(model_capped):
    gateway, worker = model_capped
    url = gateway.url
    learn = requests.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10)
    assert learn.status_code == 200
    queued = [QueuedStream(url, 60) for _ in range(2)]
    deadline = time.monotonic() + 5
    while status_of(worker)["queue_length"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert status_of(worker)["queue_length"] == 2  # one generating, one waiting on the worker's semaphore
    before = backpressure_rejections(url)
    with requests.Session() as session:
        assert session.get(f"{url}/health", timeout=5).status_code == 200
        assert_refused_at_once(session, url, {**CHAT, "max_tokens": 1}, "model_overloaded")
        embeddings = session.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": "hi"}, timeout=10)
        assert embeddings.status_code == 503 and embeddings.json()["error"]["code"] == "model_overloaded"
    assert status_of(worker)["queue_length"] == 2  # nothing refused reached the worker
    assert backpressure_rejections(url) == before + 6

    # The first stream ends about 3 s after it started: the SDK is refused (Retry-After: 1, its mean duration so
    # far) and retries by itself until the model has room.
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=8, timeout=30)
    reply = client.chat.completions.create(**CHAT, max_tokens=1)
    assert reply.choices[0].message.content
    assert backpressure_rejections(url) >= before + 7
    client.close()
    for stream in queued:
        stream.join(10)
        assert stream.status == 200 and b"[DONE]" in stream.body


def test_the_model_cap_holds_across_processes_by_the_workers_status(run_dir):
    """Two gunicorn processes, a cap of 3 for the model (a share of 2 each): once the worker holds 3, every process
    refuses, also the one holding fewer than its share (it goes by the worker's queue_length, read in the
    background; by its own count alone it would admit more)."""
    # Streams of 6 s, one at a time at the worker: the first still runs when the last request below is refused.
    worker = SimulatedWorker(run_dir, "--limit-worker-concurrency", "1", "--tokens", "120", "--token-delay", "0.05",
                             name="sim-bp-processes")
    gateway = None
    try:
        # 3 connections per process at most: 6 at once are spread over both processes
        gateway = Gateway(run_dir, name="gateway-bp-processes", WORKER_ADDRESSES=worker.address, WEB_CONCURRENCY="2",
                          GUNICORN_THREADS="8", GUNICORN_WORKER_CONNECTIONS="3", WORKER_CONCURRENCY="1",
                          MODEL_QUEUE_LIMIT="2", QUEUE_STATUS_TTL="0.1")
        url = gateway.url

        def ask(_) -> int:
            return requests.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10).status_code

        def primed() -> bool:  # 6 at once are spread over the processes once both accept
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(ask, range(6)))
            return len(processes_served(gateway)) == 2

        # Each process must serve one at least, and so learn the model's worker: one that has not admits up to its
        # share by design (it has no status to go by).
        procs.wait_until("both processes served the model", primed, gateway.proc, timeout=20, interval=0.2)
        queued = []
        for held in (1, 2, 3):  # one at a time: within one read a process takes only its half of the room
            time.sleep(0.5)  # several reads of the worker's status by each process
            queued.append(QueuedStream(url, 120))
            deadline = time.monotonic() + 5
            while status_of(worker)["queue_length"] < held and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status_of(worker)["queue_length"] == held
        time.sleep(0.5)
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(ask, range(12)))
        assert statuses == [503] * 12
        assert status_of(worker)["queue_length"] == 3
        for stream in queued:
            stream.join(20)
            assert stream.status == 200
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()
