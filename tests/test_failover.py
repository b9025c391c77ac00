"""A worker that cannot be reached before generation is replaced by another; nothing else is retried."""

import pytest
import requests
from urllib3.exceptions import MaxRetryError, ProtocolError

from app import create_app
from app.errors import ApiError
from app.serving import failover
from app.upstream import errors
from app.upstream.errors import UpstreamError
from tests.fakes import CONTROLLER, MODEL, text_frames
from tests.test_api_chat import chat, sse_events

DEAD, ALIVE = "http://dead.test", "http://alive.test"


def alive_worker(cluster):
    cluster.template(at=ALIVE)
    cluster.context(at=ALIVE)
    cluster.counts(at=ALIVE)


def test_an_unreachable_worker_is_replaced_and_the_controller_refreshed(client, cluster, upstream):
    cluster.serves(MODEL)
    picks = cluster.routes_in_turn(DEAD, ALIVE)
    cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    refresh = upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    alive_worker(cluster)
    cluster.generates("from the live one", at=ALIVE)
    response = chat(client)
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "from the live one"
    assert len(picks) == 2 and refresh.call_count == 1


def test_a_worker_that_refuses_the_generation_is_replaced(client, cluster, upstream):
    cluster.serves(MODEL)
    cluster.routes_in_turn(DEAD, ALIVE)
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.template(at=DEAD)
    cluster.context(at=DEAD)
    cluster.counts(at=DEAD)
    cluster.unreachable(f"{DEAD}/worker_generate_stream")
    alive_worker(cluster)
    cluster.streams(text_frames(["ok"]), at=ALIVE)
    events = sse_events(chat(client, stream=True))
    assert events[1]["choices"][0]["delta"] == {"content": "ok"}


def test_the_next_request_goes_to_the_worker_that_answered(client, cluster, upstream):
    cluster.serves(MODEL)
    picks = cluster.routes_in_turn(DEAD, ALIVE, DEAD)
    cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    alive_worker(cluster)
    cluster.generates(at=ALIVE)
    assert chat(client).status_code == 200
    assert chat(client).status_code == 200  # the cached picks no longer hold DEAD: no round trip
    assert len(picks) == 2


def test_a_recently_failed_worker_is_avoided_by_asking_again(config, cluster, upstream):
    client = create_app({**config, "WORKER_PICK_INTERVAL": 0}, environ={}).test_client()
    cluster.serves(MODEL)
    picks = cluster.routes_in_turn(DEAD, ALIVE, DEAD, ALIVE)
    cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    alive_worker(cluster)
    cluster.generates(at=ALIVE)
    assert chat(client).status_code == 200
    assert chat(client).status_code == 200  # picks DEAD (cooling down), asks again, gets ALIVE
    assert len(picks) == 4


def test_attempts_are_bounded(client, cluster, upstream):
    cluster.serves(MODEL)
    picks = cluster.routes_in_turn(DEAD)
    unreachable = cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    response = chat(client)
    assert response.status_code == 503
    assert unreachable.call_count == 3  # FAILOVER_ATTEMPTS=2 other tries
    assert len(picks) >= 3  # the controller was asked again each time


HUNG_UP = requests.ConnectionError(MaxRetryError(None, "/", ProtocolError("Connection aborted.", ConnectionResetError())))


@pytest.mark.parametrize("failure", [requests.ReadTimeout("slow"), requests.exceptions.ChunkedEncodingError("cut"),
                                     HUNG_UP])
def test_timeouts_and_broken_replies_are_not_retried(client, cluster, upstream, failure):
    cluster.chat_ready()
    generation = upstream.post("http://worker.test/worker_generate", body=failure)
    response = chat(client)
    assert response.status_code in (502, 504)
    assert generation.call_count == 1


def test_failover_can_be_turned_off(config, cluster, upstream):
    app = create_app({**config, "FAILOVER_ATTEMPTS": 0}, environ={})
    cluster.serves(MODEL)
    cluster.routes_in_turn(DEAD, ALIVE)
    unreachable = cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    assert chat(app.test_client()).status_code == 503
    assert unreachable.call_count == 1


def test_static_mode_takes_the_dead_worker_out_of_rotation(cluster, upstream):
    app = create_app({"UPSTREAM_CONNECT_RETRIES": 0}, environ={"WORKER_ADDRESSES": f"{DEAD},{ALIVE}"})
    static = app.extensions["cluster"].controller
    static._poller = object()  # no background thread: the test drives the polls
    static._first_poll.set()
    for address in (DEAD, ALIVE):
        upstream.post(f"{address}/worker_get_status", json={"model_names": [MODEL], "speed": 1, "queue_length": 0})
    static.poll()
    cluster.unreachable(f"{DEAD}/worker_get_conv_template")
    alive_worker(cluster)
    cluster.generates(at=ALIVE)
    client = app.test_client()
    assert chat(client).status_code == 200
    cluster.generates(at=ALIVE)
    cluster.counts(at=ALIVE)
    assert chat(client).status_code == 200
    assert static.list_models() == [MODEL]
    assert static.get_worker_address(MODEL) == ALIVE


class ScriptedSource:
    """A WorkerSource that names the given addresses in turn and records what it is told."""

    def __init__(self, *addresses, models=(MODEL,)):
        self.addresses, self.models, self.failed = list(addresses), models, []

    def list_models(self):
        return sorted(self.models)

    def has_model(self, model):
        return model in self.models

    def get_worker_address(self, model):
        return self.addresses.pop(0)

    def report_failure(self, address):
        self.failed.append(address)

    def ready(self):
        pass


def unreachable_at(*dead):
    def attempt(address):
        if address in dead:
            raise UpstreamError(errors.UNAVAILABLE, f"{address} refused", upstream="worker")
        return f"done by {address}"
    return attempt


def test_run_on_worker_needs_only_a_worker_source():
    source = ScriptedSource(DEAD, DEAD, ALIVE)
    assert failover.run_on_worker(source, MODEL, unreachable_at(DEAD), failover_attempts=2) == f"done by {ALIVE}"
    assert source.failed == [DEAD, DEAD]


def test_run_on_worker_raises_the_last_failure_when_attempts_run_out():
    source = ScriptedSource(DEAD, DEAD, ALIVE)
    with pytest.raises(UpstreamError, match="refused"):
        failover.run_on_worker(source, MODEL, unreachable_at(DEAD), failover_attempts=1)
    assert source.addresses == [ALIVE]


@pytest.mark.parametrize("failure", [UpstreamError(errors.TIMEOUT, "slow", upstream="worker"),
                                     UpstreamError(errors.UNAVAILABLE, "no worker", upstream="controller"),
                                     UpstreamError(errors.WORKER_ERROR, "boom", upstream="worker")])
def test_run_on_worker_retries_only_an_unreachable_worker(failure):
    source = ScriptedSource(DEAD, ALIVE)
    with pytest.raises(UpstreamError) as raised:
        failover.run_on_worker(source, MODEL, lambda address: (_ for _ in ()).throw(failure), failover_attempts=2)
    assert raised.value is failure and source.failed == [] and source.addresses == [ALIVE]


def test_run_on_worker_is_404_for_a_model_nobody_serves():
    with pytest.raises(ApiError) as raised:
        failover.run_on_worker(ScriptedSource(ALIVE), "nope", unreachable_at(), failover_attempts=2)
    assert (raised.value.status, raised.value.code, raised.value.param) == (404, "model_not_found", "model")
