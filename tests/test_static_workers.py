"""Dispatch without a controller: status polling and FastChat's shortest_queue rule."""
import time

import pytest
import requests

from app.upstream import errors
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamError
from app.upstream.static_workers import StaticWorkers

W1, W2 = "http://w1.test", "http://w2.test"


def status(upstream, address, models=("m",), queue_length=0, speed=1):
    return upstream.post(f"{address}/worker_get_status",
                         json={"model_names": list(models), "speed": speed, "queue_length": queue_length})


@pytest.fixture
def workers():
    static = StaticWorkers(UpstreamClient(connect_retries=0), (W1, W2), timeout=(1, 1), interval=3600)
    static._poller = object()  # tests drive poll() themselves; no background thread
    static._first_poll.set()
    return static


def test_models_are_the_union_of_live_workers(workers, upstream):
    status(upstream, W1, ["a", "b"])
    status(upstream, W2, ["c"])
    workers.poll()
    assert workers.list_models() == ["a", "b", "c"]
    assert workers.has_model("c") and not workers.has_model("d")


def test_the_shortest_queue_wins_and_each_pick_counts(workers, upstream):
    status(upstream, W1, queue_length=2)
    status(upstream, W2, queue_length=0)
    workers.poll()
    picks = [workers.get_worker_address("m") for _ in range(5)]
    # W2 takes picks until its count of 2 ties W1's queue; ties go to the first listed worker
    assert picks == [W2, W2, W1, W2, W1]


def test_speed_divides_the_queue(workers, upstream):
    status(upstream, W1, queue_length=4, speed=4)
    status(upstream, W2, queue_length=2, speed=1)
    workers.poll()
    assert workers.get_worker_address("m") == W1


def test_a_worker_that_does_not_answer_drops_out_until_it_answers(workers, upstream):
    status(upstream, W1)
    upstream.post(f"{W2}/worker_get_status", body=requests.ConnectionError())
    workers.poll()
    assert {workers.get_worker_address("m") for _ in range(3)} == {W1}
    status(upstream, W1)
    status(upstream, W2)
    workers.poll()
    assert {workers.get_worker_address("m") for _ in range(4)} == {W1, W2}


def test_a_model_whose_workers_are_all_down_is_known_but_unavailable(workers, upstream):
    status(upstream, W1)
    status(upstream, W2)
    workers.poll()
    workers.report_failure(W1)
    workers.report_failure(W2)
    assert workers.has_model("m")  # 503 for the client, not 404: the model exists, its workers are down
    with pytest.raises(UpstreamError) as raised:
        workers.get_worker_address("m")
    assert raised.value.kind == errors.UNAVAILABLE


def test_no_live_worker_for_the_model_is_unavailable(workers, upstream):
    status(upstream, W1, ["other"])
    upstream.post(f"{W2}/worker_get_status", status=500)
    workers.poll()
    with pytest.raises(UpstreamError) as raised:
        workers.get_worker_address("m")
    assert raised.value.kind == errors.UNAVAILABLE


def test_an_invalid_status_counts_as_down(workers, upstream):
    upstream.post(f"{W1}/worker_get_status", json={"speed": 1})
    status(upstream, W2)
    workers.poll()
    assert workers.list_models() == ["m"]
    assert workers.get_worker_address("m") == W2


def test_a_reported_failure_removes_a_worker_until_the_next_poll(workers, upstream):
    status(upstream, W1)
    status(upstream, W2)
    workers.poll()
    workers.report_failure(W1)
    assert {workers.get_worker_address("m") for _ in range(3)} == {W2}


def test_first_use_polls_then_keeps_polling_in_the_background(upstream):
    static = StaticWorkers(UpstreamClient(connect_retries=0), (W1,), timeout=(1, 1), interval=0.05)
    first = status(upstream, W1)
    try:
        assert static.has_model("m")
        assert first.call_count >= 1
        deadline = time.monotonic() + 3
        while first.call_count < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.call_count >= 3
    finally:
        static.close()
        static._poller.join(timeout=2)
    assert not static._poller.is_alive()


def test_app_uses_static_workers_when_worker_addresses_is_set():
    from app import create_app

    app = create_app(environ={"WORKER_ADDRESSES": f"{W1},{W2}"})
    assert isinstance(app.extensions["cluster"].controller, StaticWorkers)
    assert app.extensions["cluster"].controller.addresses == (W1, W2)


def test_both_addresses_set_is_a_config_error():
    from app.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="WORKER_ADDRESSES"):
        load_config({"WORKER_ADDRESSES": W1, "CONTROLLER_ADDRESS": "http://c:21001"})


def test_multimodal_models_is_what_says_which_models_take_images(upstream):
    static = StaticWorkers(UpstreamClient(connect_retries=0), (W1,), timeout=(1, 1), interval=3600,
                           multimodal_models=frozenset({"llava"}))
    assert static.is_multimodal("llava")
    assert not static.is_multimodal("m")
    assert not upstream.calls  # no worker is asked: its status does not say it


def test_the_app_passes_multimodal_models_to_static_workers():
    from app import create_app

    app = create_app({"API_KEYS": ()}, environ={"WORKER_ADDRESSES": W1, "MULTIMODAL_MODELS": "llava, qwen-vl"})
    source = app.extensions["cluster"].controller
    assert source.is_multimodal("qwen-vl") and not source.is_multimodal("vicuna")
