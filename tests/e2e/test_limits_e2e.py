"""Per-key limits under real gunicorn: one limit shared by the processes of one host (the embedded store) and by two
gateway instances over a real redis-server; the openai SDK retrying a real 429; Redis killed and brought back; the
key file changed under load."""
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from app.limits.guard import PAUSE
from harness.gateway import Gateway
from harness.procs import require
from harness.redis import RedisServer
from harness.simworkers import SimulatedWorker

MODEL = "sim-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
KEYS = '''
[[keys]]
name = "five"
key = "sk-five"
requests_per_minute = 5

[[keys]]
name = "two"
key = "sk-two"
requests_per_minute = 2

[[keys]]
name = "once"
key = "sk-once"
requests_per_minute = 1
'''


@pytest.fixture(scope="module")
def worker(run_dir):
    worker = require(SimulatedWorker, run_dir, "--token-delay", "0.05", name="sim-limits")
    yield worker
    worker.stop()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(KEYS)
    return path


@pytest.fixture
def redis_server(run_dir):
    server = require(RedisServer, run_dir)
    yield server
    server.stop()


def chat(url, key, **extra):
    # A new connection each time (no keep-alive), so every request may land on any process.
    return requests.post(f"{url}/v1/chat/completions", json={**CHAT, **extra}, timeout=30,
                         headers={"Authorization": f"Bearer {key}", "Connection": "close"})


def ratelimit(response):
    return {name.lower(): value for name, value in response.headers.items()
            if name.lower().startswith(("x-ratelimit-", "retry-after"))}


def test_five_per_minute_is_five_of_eight_across_two_instances_and_four_processes(run_dir, worker, key_file,
                                                                                   redis_server):
    settings = {"API_KEYS_FILE": str(key_file), "WORKER_ADDRESSES": worker.address, "REDIS_URL": redis_server.url,
                "WEB_CONCURRENCY": "2"}
    first = Gateway(run_dir, "gateway-limits-a", **settings)
    try:
        second = Gateway(run_dir, "gateway-limits-b", **settings)
        try:
            responses = [chat((first, second)[i % 2].url, "sk-five") for i in range(8)]
        finally:
            second.stop()
    finally:
        first.stop()
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    assert [ratelimit(r)["x-ratelimit-remaining-requests"] for r in responses] == ["4", "3", "2", "1", "0"] + ["0"] * 3
    for response in responses:
        headers = ratelimit(response)
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-reset-requests"].endswith("s")  # such as 59s
    for refused in responses[5:]:
        error = refused.json()["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert error["message"].startswith("Rate limit reached for key five on requests per min (RPM): Limit 5, "
                                           "Used 5, Requested 1. Please try again in ")
        assert 50 <= int(ratelimit(refused)["retry-after"]) <= 60
        assert 50_000 <= int(ratelimit(refused)["retry-after-ms"]) <= 60_000


def requests_by_process(metrics_dir, key):
    """How many requests of `key` each gunicorn process answered, from its own prometheus_client file."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        for encoded, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            name, _, labels, _ = json.loads(encoded)
            if name == "fastchat_gateway_key_requests" and labels.get("key") == key and value:
                counts[pid] = counts.get(pid, 0) + int(value)
    return counts


def test_the_embedded_store_holds_one_limit_across_four_processes(run_dir, worker, key_file, tmp_path):
    # One connection at a time per process, and requests that take a while: 8 at once spread over the processes.
    metrics_dir = tmp_path / "metrics"
    gateway = Gateway(run_dir, "gateway-limits-embedded", API_KEYS_FILE=str(key_file),
                      WORKER_ADDRESSES=worker.address, WEB_CONCURRENCY="4", GUNICORN_THREADS="1",
                      GUNICORN_WORKER_CONNECTIONS="1", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: chat(gateway.url, "sk-five").status_code, range(8)))
        metrics = requests.get(f"{gateway.url}/metrics", timeout=10).text
        served = requests_by_process(metrics_dir, "five")
    finally:
        gateway.stop()
    assert sorted(statuses) == [200] * 5 + [429] * 3
    assert 'fastchat_gateway_rejections_total{key="five",reason="rate"} 3.0' in metrics
    assert len(served) >= 2 and sum(served.values()) == 8, served  # one count, whichever process answered


def test_the_openai_sdk_retries_a_429_after_the_advertised_time(run_dir, worker, key_file):
    """One real wait of up to a minute: the window of a per-minute limit."""
    gateway = Gateway(run_dir, "gateway-limits-sdk", API_KEYS_FILE=str(key_file), WORKER_ADDRESSES=worker.address)
    try:
        with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-once", max_retries=2) as sdk:
            sdk.chat.completions.create(**CHAT)
            started = time.monotonic()
            raw = sdk.chat.completions.with_raw_response.create(**CHAT)
            waited = time.monotonic() - started
    finally:
        gateway.stop()
    assert raw.retries_taken >= 1 and raw.parse().choices[0].message.content
    assert 50 <= waited <= 70
    assert raw.headers["x-ratelimit-limit-requests"] == "1"


def test_redis_down_fails_open_or_closed_as_set_and_recovers(run_dir, worker, key_file, redis_server):
    common = {"API_KEYS_FILE": str(key_file), "WORKER_ADDRESSES": worker.address, "REDIS_URL": redis_server.url}
    opened = Gateway(run_dir, "gateway-limits-open", **common)
    closed = Gateway(run_dir, "gateway-limits-closed", RATE_LIMIT_STORE_FAILURE="closed", **common)
    try:
        assert [chat(opened.url, "sk-two").status_code for _ in range(3)] == [200, 200, 429]
        redis_server.stop()
        timings = []
        for _ in range(6):
            started = time.monotonic()
            down_open, down_closed = chat(opened.url, "sk-two"), chat(closed.url, "sk-two")
            timings.append(time.monotonic() - started)
            assert down_open.status_code == 200 and ratelimit(down_open) == {}  # let in, unlimited
            assert down_closed.status_code == 503 and down_closed.headers["Retry-After"] == "1"
            assert down_closed.json()["error"]["code"] == "rate_limit_store_unavailable"
        assert max(timings) < 2.0, timings  # nothing waits for Redis long
        open_metrics = requests.get(f"{opened.url}/metrics", timeout=10).text
        closed_metrics = requests.get(f"{closed.url}/metrics", timeout=10).text
        assert 'fastchat_gateway_rate_limit_store_errors_total{decision="open"} 6.0' in open_metrics
        assert 'fastchat_gateway_rate_limit_store_errors_total{decision="closed"} 6.0' in closed_metrics

        redis_server.start()  # an empty Redis on the same port: the limits count afresh
        # A process that saw Redis fail leaves it alone for PAUSE seconds (open: unlimited meanwhile). Past that,
        # every process is back on Redis at its next request.
        time.sleep(PAUSE + 0.2)
        deadline = time.monotonic() + 10
        while chat(closed.url, "sk-once").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        for gateway in (opened, closed):  # both processes of each instance are back on Redis
            statuses = [chat(gateway.url, "sk-two").status_code for _ in range(6)]
            while statuses[0] == 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                statuses = [chat(gateway.url, "sk-two").status_code for _ in range(6)]
            assert statuses.count(200) <= 2 and statuses.count(429) >= 4, statuses
    finally:
        opened.stop()
        closed.stop()
    for gateway in (opened, closed):
        log = gateway.proc.log_text()
        assert "the per-key limits' store failed" in log and "answers again" in log
        assert log.count("the per-key limits' store failed") <= 2  # once per process, not once per request


def test_a_limit_added_and_raised_under_load_takes_effect_with_no_failed_request(run_dir, worker, tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nname = "steady"\nkey = "sk-steady"\n[[keys]]\nname = "probe"\nkey = "sk-probe"\n')
    gateway = Gateway(run_dir, "gateway-limits-reload", API_KEYS_FILE=str(path), WORKER_ADDRESSES=worker.address,
                      WORKER_STATUS_INTERVAL="0.5")
    stop, results = threading.Event(), []

    def load():
        while not stop.is_set():
            response = chat(gateway.url, "sk-steady", max_tokens=1)
            results.append((response.status_code, "x-ratelimit-limit-requests" in response.headers))

    def replace(text):
        new = path.with_suffix(".new")
        new.write_text(text)
        os.replace(new, path)

    def probe_statuses(count):
        return [chat(gateway.url, "sk-probe", max_tokens=1).status_code for _ in range(count)]

    try:
        with ThreadPoolExecutor(4) as pool:
            loops = [pool.submit(load) for _ in range(4)]
            time.sleep(1)
            assert probe_statuses(3) == [200] * 3
            replace('[[keys]]\nname = "steady"\nkey = "sk-steady"\nrequests_per_minute = 1000000\n'
                    '[[keys]]\nname = "probe"\nkey = "sk-probe"\nrequests_per_minute = 1\n')
            time.sleep(2.5)  # each process looks at the file at most once a second
            assert probe_statuses(3) == [200, 429, 429]  # added: one a minute
            replace('[[keys]]\nname = "steady"\nkey = "sk-steady"\nrequests_per_minute = 1000000\n'
                    '[[keys]]\nname = "probe"\nkey = "sk-probe"\nrequests_per_minute = 3\n')
            time.sleep(2.5)
            assert probe_statuses(3) == [200, 200, 429]  # raised to 3 in the same window: 2 more
            stop.set()
            for loop in loops:
                loop.result()
    finally:
        stop.set()
        gateway.stop()
    statuses = [status for status, _ in results]
    assert len(results) > 50 and set(statuses) == {200}, {code: statuses.count(code) for code in set(statuses)}
    assert results[0][1] is False and results[-1][1] is True  # steady's limit took effect
