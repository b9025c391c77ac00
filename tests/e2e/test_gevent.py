"""The optional gevent worker class: the same behaviour, many streams on one process, no late monkey-patching."""
import json
import threading
import time

import openai
import pytest
import requests

from harness.gateway import over_simulated_worker


@pytest.fixture(scope="module")
def stack(run_dir):
    with over_simulated_worker(run_dir, "gevent", "--tokens", "20", "--token-delay", "0.05",
                               GUNICORN_WORKER_CLASS="gevent", WEB_CONCURRENCY="1") as stack:
        yield stack


def test_many_streams_at_once_on_one_process(stack):
    gateway, _ = stack
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)
    texts, errors = [], []

    def stream():
        try:
            chunks = client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True, n=2)
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        except Exception as exc:  # reported below
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=stream) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert errors == [] and len(texts) == 40
    assert elapsed < 5  # each stream takes ~1 s; sequential handling would take 40 s
    client.close()


def test_client_disconnect_frees_the_worker_stream(stack):
    gateway, worker = stack
    body = {"model": "sim-model", "stream": True, "messages": [{"role": "user", "content": "story"}]}
    with requests.post(f"{gateway.url}/v1/chat/completions", json=body, stream=True, timeout=10) as response:
        first = next(line for line in response.iter_lines() if line)
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    deadline = time.monotonic() + 1
    while worker.stats()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.stats()["open_streams"] == 0


def test_gevent_patched_before_ssl_was_imported(stack):
    gateway, _ = stack
    assert "MonkeyPatchWarning" not in gateway.proc.log_text()
