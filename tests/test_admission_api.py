"""Back-pressure through the app: the 503 a full queue or a full process gets, before any worker call or byte."""
import json
import time

import pytest
from prometheus_client import REGISTRY

from app import create_app
from tests.fakes import MODEL, WORKER, text_frames

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
STREAMS = [
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/api/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "stream": True}),
    ("/v1/responses", {"model": MODEL, "input": "Hi", "max_output_tokens": 8, "stream": True}),
]


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def open_stream(client, cluster, first: bool = True):
    """A chat stream the client has not read yet: it holds its place until closed. first: the app's first request
    (later ones find the model list, worker and template cached)."""
    if first:
        cluster.chat_ready(counted=False)
    cluster.streams(text_frames(["Hel", "Hello"]))
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    return response


def assert_overloaded(response, code: str) -> dict:
    assert response.status_code == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    body = response.get_json()
    assert body["error"]["type"] == "service_unavailable_error" and body["error"]["code"] == code
    assert body["code"] == 42903 and "retry" in body["message"].lower()
    return body


@pytest.fixture
def stream_capped(config):
    config["MAX_STREAMS_PER_PROCESS"] = 1
    return create_app(config, environ={}).test_client()


@pytest.mark.parametrize("path, body", STREAMS)
def test_a_stream_beyond_the_process_cap_gets_503_with_retry_after_before_any_byte(stream_capped, cluster, path,
                                                                                  body):
    held = open_stream(stream_capped, cluster)
    before = sample("fastchat_gateway_rejections_total", key="-", reason="backpressure")
    assert_overloaded(stream_capped.post(path, json=body), "server_overloaded")
    assert sample("fastchat_gateway_rejections_total", key="-", reason="backpressure") == before + 1
    assert stream_capped.get("/health").status_code == 200
    held.close()


def test_the_place_is_given_back_when_the_stream_ends(stream_capped, cluster):
    first = open_stream(stream_capped, cluster)
    assert b"[DONE]" in first.get_data()  # read to its end
    first.close()
    second = open_stream(stream_capped, cluster, first=False)
    assert b"[DONE]" in second.get_data()


def test_a_whole_reply_is_not_held_back_by_the_stream_cap(stream_capped, cluster):
    held = open_stream(stream_capped, cluster)
    cluster.generates()
    assert stream_capped.post("/v1/chat/completions", json=CHAT).status_code == 200
    held.close()


@pytest.fixture
def model_capped(config):
    # one worker generating one request at a time, none waiting: the second request in flight is refused
    config.update(WORKER_CONCURRENCY=1, MODEL_QUEUE_LIMIT=0)
    return create_app(config, environ={"WEB_CONCURRENCY": "1"}).test_client()


def test_a_full_model_queue_gets_503_model_overloaded_and_no_worker_is_blamed(model_capped, cluster, upstream):
    cluster.chat_ready(counted=False)
    cluster.generates()
    assert model_capped.post("/v1/chat/completions", json=CHAT).status_code == 200  # learns the model's worker
    cluster.streams(text_frames(["Hel", "Hello"]))
    held = model_capped.post("/v1/chat/completions", json={**CHAT, "stream": True})
    calls = len(upstream.calls)
    before = sample("fastchat_gateway_rejections_total", key="-", reason="backpressure")
    body = assert_overloaded(model_capped.post("/v1/chat/completions", json=CHAT), "model_overloaded")
    assert f"`{MODEL}`" in body["message"]
    assert_overloaded(model_capped.post("/v1/embeddings", json={"model": MODEL, "input": "Hi"}), "model_overloaded")
    assert len(upstream.calls) == calls  # refused before any upstream call: nothing reported, nothing cooled down
    assert sample("fastchat_gateway_rejections_total", key="-", reason="backpressure") == before + 2
    assert b"[DONE]" in held.get_data()
    held.close()
    assert model_capped.post("/v1/chat/completions", json=CHAT).status_code == 200  # its place is free again


@pytest.mark.parametrize("others, status", [(0, 200), (1, 503)])
def test_past_its_share_a_process_borrows_only_what_the_workers_status_leaves(config, cluster, upstream, others,
                                                                              status):
    # cap 2 (1 generating + 1 waiting), 2 processes: a share of 1; the worker holds this process's requests and
    # `others` of the other process
    config.update(WORKER_CONCURRENCY=1, MODEL_QUEUE_LIMIT=1, QUEUE_STATUS_TTL=0.02)
    app = create_app(config, environ={"WEB_CONCURRENCY": "2"})
    admission = app.extensions["cluster"].admission
    upstream.add_callback("POST", f"{WORKER}/worker_get_status", callback=lambda request: (200, {}, json.dumps(
        {"model_names": [MODEL], "speed": 1, "queue_length": admission.in_flight(MODEL) + others})))
    client = app.test_client()
    try:
        cluster.chat_ready(counted=False)
        cluster.generates()
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        cluster.streams(text_frames(["Hel", "Hello"]))
        held = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        model = admission._models[MODEL]
        deadline = time.monotonic() + 5
        while model.in_flight_at_read != 1 and time.monotonic() < deadline:  # a poll since the stream started
            time.sleep(0.01)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == status
        held.get_data()
        held.close()
    finally:
        admission.close()


def test_fastchat_error_status_mode_keeps_the_503(config, cluster):
    config.update(WORKER_CONCURRENCY=1, MODEL_QUEUE_LIMIT=0, ERROR_STATUS_MODE="fastchat")
    client = create_app(config, environ={"WEB_CONCURRENCY": "1"}).test_client()
    cluster.chat_ready(counted=False)
    cluster.generates()
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    cluster.streams(text_frames(["Hel", "Hello"]))
    held = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert_overloaded(client.post("/v1/chat/completions", json=CHAT), "model_overloaded")  # 400 would stop retries
    held.get_data()
    held.close()


def test_token_check_is_never_refused(model_capped, cluster):
    cluster.chat_ready(counted=False)
    cluster.streams(text_frames(["Hel", "Hello"]))
    held = model_capped.post("/v1/chat/completions", json={**CHAT, "stream": True})
    cluster.counts(3)
    response = model_capped.post("/api/v1/token_check",
                                 json={"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 1}]})
    assert response.status_code == 200
    held.get_data()
    held.close()
