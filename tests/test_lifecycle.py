"""The shutdown drain (app/lifecycle.py): SIGTERM starts it, /ready answers 503 from then on, and an open stream
ends with the shutdown error event and [DONE] once the graceful timeout less its margin has passed. The listener
closing of app/server_worker.py is checked here on a real socket; tests/reliability/test_restarts.py checks all of
it against real gunicorn."""
import json
import os
import selectors
import signal
import socket
import time

import pytest

from app import lifecycle
from app.server_worker import ThreadWorker
from app.streaming import EventStream
from tests.test_streaming import Source, decode, generator_over


@pytest.fixture(autouse=True)
def serving():
    lifecycle.reset()
    yield
    lifecycle.reset()


@pytest.mark.parametrize("graceful, margin", [(3, 1.0), (30, 3.0), (300, 5.0)])
def test_the_margin_is_a_tenth_of_the_graceful_timeout_between_1_and_5_seconds(graceful, margin):
    assert lifecycle.margin(graceful) == margin


def test_streams_go_on_until_the_graceful_timeout_less_the_margin():
    assert not lifecycle.draining() and lifecycle.stream_error() is None
    lifecycle.begin_drain(30)
    assert lifecycle.draining()
    assert lifecycle.stream_error() is None  # 27 s left


def test_past_the_deadline_a_stream_gets_the_shutdown_error():
    lifecycle.begin_drain(30, now=time.monotonic() - 27)
    error = lifecycle.stream_error()
    assert (error.status, error.code, error.type) == (503, "server_shutting_down", "service_unavailable_error")


def test_a_second_sigterm_does_not_move_the_deadline():
    lifecycle.begin_drain(30, now=time.monotonic() - 27)
    lifecycle.begin_drain(30)
    assert lifecycle.stream_error() is not None


def test_install_drains_on_sigterm_then_runs_the_previous_handler():
    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        lifecycle.install(30)
        os.kill(os.getpid(), signal.SIGTERM)
        assert lifecycle.draining() and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_ready_is_503_while_draining_without_asking_the_cluster(client, upstream):
    lifecycle.begin_drain(30)
    response = client.get("/ready")  # `upstream` has nothing registered: any call to the cluster would fail
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "server_shutting_down"
    assert response.headers["Retry-After"] == "1"


def test_a_stream_past_the_deadline_ends_with_the_error_event_then_done_and_closes_its_source():
    source = Source([{"i": i} for i in range(5)])
    stream = iter(EventStream(generator_over(source), include_usage=False))
    assert json.loads(next(stream)[len(b"data: "):]) == {"i": 0}
    lifecycle.begin_drain(30, now=time.monotonic() - 30)
    rest = decode(stream)
    assert rest[-1] == "data: [DONE]\n\n" and len(rest) == 2
    assert json.loads(rest[0][len("data: "):])["error"]["code"] == "server_shutting_down"
    assert source.closed


def test_a_stream_before_the_deadline_is_untouched():
    lifecycle.begin_drain(30)
    events = decode(EventStream(iter([{"a": 1}, {"b": 2}]), include_usage=False))
    assert events == ['data: {"a":1}\n\n', 'data: {"b":2}\n\n', "data: [DONE]\n\n"]


class _Listener:
    """What gunicorn's worker holds of a listening socket: the socket, and close()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


def stub_worker(alive: bool) -> ThreadWorker:
    worker = ThreadWorker.__new__(ThreadWorker)  # no arbiter or config: set_accept_enabled needs only these
    worker.alive, worker.sockets, worker._accepting = alive, [_Listener()], False
    worker.poller = selectors.DefaultSelector()
    worker.set_accept_enabled(True)
    return worker


def test_a_stopped_worker_closes_its_listeners_when_it_stops_accepting():
    worker = stub_worker(alive=True)
    worker.alive = False  # gunicorn's SIGTERM handler
    worker.set_accept_enabled(False)
    assert worker.sockets[0].sock.fileno() == -1


def test_a_full_worker_that_stops_accepting_keeps_its_listeners():
    worker = stub_worker(alive=True)
    worker.set_accept_enabled(False)  # worker_connections reached: it accepts again later
    assert worker.sockets[0].sock.fileno() != -1
    worker.sockets[0].close()
