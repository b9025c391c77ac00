import http.client
import json
import socket
import threading
from contextlib import closing

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from app.upstream import errors
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamError
from tests.fakes import WORKER, OneReadPerFrame, frames

URL = f"{WORKER}/count_token"
TIMEOUT = (1.0, 2.0)


@pytest.fixture
def client():
    return UpstreamClient(connect_retries=0)


def post(client, url=URL, payload=None):
    return client.post_json(url, payload or {"model": "m"}, timeout=TIMEOUT, upstream="worker")


def test_post_json_sends_payload_and_returns_reply(client, upstream):
    upstream.post(URL, json={"count": 3}, match=[responses.matchers.json_params_matcher({"model": "m"})])
    assert post(client) == {"count": 3}


def test_post_without_payload_sends_no_body(client, upstream):
    upstream.post(f"{WORKER}/list_models", json={"models": []})
    client.post_json(f"{WORKER}/list_models", None, timeout=TIMEOUT, upstream="controller")
    assert upstream.calls[0].request.body is None


def test_the_request_is_what_requests_itself_would_prepare(client, upstream):
    """The URL is prepared once per URL: the same normalised URL, headers and body as requests makes."""
    url = "http://Worker.Example:21002/worker_generate?x=a b"
    upstream.post(url.replace(" ", "%20").replace("Worker.Example", "worker.example"), json={})
    client.post_json(url, {"prompt": "é"}, timeout=TIMEOUT, upstream="worker")
    client.post_json(url, None, timeout=TIMEOUT, upstream="worker")
    expected = requests.Request("POST", url, headers=_sent_headers(upstream.calls[0].request),
                                data=json.dumps({"prompt": "é"}, separators=(",", ":")).encode()).prepare()
    sent = upstream.calls[0].request
    assert (sent.url, sent.body, dict(sent.headers)) == (expected.url, expected.body, dict(expected.headers))
    assert upstream.calls[1].request.headers["Content-Length"] == "0"
    assert upstream.calls[1].request.url == expected.url


def _sent_headers(request):
    return {k: v for k, v in request.headers.items() if k != "Content-Length"}


@pytest.mark.parametrize("address", ["worker-without-scheme:21002", "http://", "http://[::1/x"])
def test_an_unusable_address_is_a_bad_response(client, address):
    """A controller may name any string as a worker: it is a failed upstream call, not a crash."""
    with pytest.raises(UpstreamError) as raised:
        post(client, url=address + "/count_token")
    assert raised.value.kind == errors.BAD_RESPONSE


def test_the_timeout_is_passed_to_requests(client, upstream):
    upstream.post(URL, json={}, match=[responses.matchers.request_kwargs_matcher({"timeout": TIMEOUT})])
    post(client)


@pytest.mark.parametrize("exc, kind", [
    (requests.ConnectionError("refused"), errors.UNAVAILABLE),
    (requests.ConnectTimeout("slow connect"), errors.UNAVAILABLE),
    (requests.ReadTimeout("slow reply"), errors.TIMEOUT),
    (requests.ConnectionError(ReadTimeoutError(None, URL, "read timed out")), errors.TIMEOUT),
    (requests.ConnectionError(MaxRetryError(None, URL, ReadTimeoutError(None, URL, "read timed out"))),
     errors.TIMEOUT),
    (requests.exceptions.ChunkedEncodingError("broken"), errors.BAD_RESPONSE),
    # the worker took the request and hung up: it may have started generating, so not "unreachable"
    (requests.ConnectionError(MaxRetryError(None, URL, ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("closed")))), errors.BAD_RESPONSE),
    (requests.ConnectionError(MaxRetryError(None, URL, NewConnectionError(None, "refused"))), errors.UNAVAILABLE),
])
def test_transport_failures_become_upstream_errors(client, upstream, exc, kind):
    upstream.post(URL, body=exc)
    with pytest.raises(UpstreamError) as raised:
        post(client)
    assert raised.value.kind == kind
    assert raised.value.upstream == "worker"


@pytest.mark.parametrize("status", [404, 500, 503])
def test_non_200_is_a_bad_response(client, upstream, status):
    upstream.post(URL, body="Internal Server Error", status=status)
    with pytest.raises(UpstreamError, match=str(status)) as raised:
        post(client)
    assert raised.value.kind == errors.BAD_RESPONSE


class BreaksAfter(OneReadPerFrame):
    """A reply body that sends its first bytes, then the connection breaks."""

    def read(self, size=-1):
        if self._frames:
            return self._frames.pop(0)
        raise ProtocolError("Connection broken", http.client.IncompleteRead(b""))


def test_a_reply_broken_mid_body_is_a_bad_response(client, upstream):
    upstream.post(URL, body=BreaksAfter(b'{"count":\0'))
    with pytest.raises(UpstreamError) as raised:
        post(client)
    assert raised.value.kind == errors.BAD_RESPONSE


def test_reply_that_is_not_json_is_a_bad_response(client, upstream):
    upstream.post(URL, body="<html>")
    with pytest.raises(UpstreamError) as raised:
        post(client)
    assert raised.value.kind == errors.BAD_RESPONSE


def test_reply_that_is_not_utf8_is_a_bad_response(client, upstream):
    upstream.post(URL, body='{"count": "\u00e9"}'.encode("latin-1"))
    with pytest.raises(UpstreamError) as raised:
        post(client)
    assert raised.value.kind == errors.BAD_RESPONSE


def test_each_thread_gets_its_own_session_and_reuses_it(client):
    import threading

    first = client.session()
    assert client.session() is first
    other = []
    thread = threading.Thread(target=lambda: other.append(client.session()))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_connection_failures_are_retried_but_not_reads(client):
    adapter = client.session().get_adapter("http://x")
    assert adapter.max_retries.connect == 0
    retrying = UpstreamClient(connect_retries=2).session().get_adapter("http://x").max_retries
    assert (retrying.connect, retrying.read, retrying.status, retrying.allowed_methods) == (2, 0, 0, None)


def test_stream_yields_each_frame_as_it_arrives_and_closes(client, upstream):
    upstream.post(f"{WORKER}/worker_generate_stream", body=OneReadPerFrame(frames({"text": "a"}, {"text": "ab"})))
    stream = client.open_stream(f"{WORKER}/worker_generate_stream", {}, timeout=TIMEOUT, upstream="worker")
    assert [frame["text"] for frame in stream] == ["a", "ab"]
    stream.close()


def test_frames_waiting_together_yield_only_the_latest(client, upstream):
    # cumulative frames: the last of a read holds everything the earlier ones did
    upstream.post(f"{WORKER}/worker_generate_stream", body=frames({"text": "a"}, {"text": "ab"}, {"text": "abc"}))
    stream = client.open_stream(f"{WORKER}/worker_generate_stream", {}, timeout=TIMEOUT, upstream="worker")
    assert [frame["text"] for frame in stream] == ["abc"]


def test_stream_with_non_200_status_fails_before_any_frame(client, upstream):
    upstream.post(f"{WORKER}/worker_generate_stream", body="Internal Server Error", status=500)
    with pytest.raises(UpstreamError) as raised:
        client.open_stream(f"{WORKER}/worker_generate_stream", {}, timeout=TIMEOUT, upstream="worker")
    assert raised.value.kind == errors.BAD_RESPONSE


@pytest.mark.parametrize("body", [b'{"text": "a"}\0not json\0', b'{"text": "a"}\0["a list"]\0', b'{"text": "a"}\0{"te'])
def test_garbage_or_truncated_frames_raise(client, upstream, body):
    upstream.post(f"{WORKER}/worker_generate_stream", body=OneReadPerFrame(body))
    stream = client.open_stream(f"{WORKER}/worker_generate_stream", {}, timeout=TIMEOUT, upstream="worker")
    frames_seen = []
    with pytest.raises(UpstreamError) as raised:
        for frame in stream:
            frames_seen.append(frame)
    assert frames_seen == [{"text": "a"}]
    assert raised.value.kind == errors.BAD_RESPONSE


@pytest.mark.parametrize("garbage", [b"not json", b"[1]", b"Internal Server Error"])
def test_garbage_among_frames_read_together_still_raises(client, upstream, garbage):
    upstream.post(f"{WORKER}/worker_generate_stream", body=b'{"text": "a"}\0' + garbage + b'\0{"text": "ab"}\0')
    stream = client.open_stream(f"{WORKER}/worker_generate_stream", {}, timeout=TIMEOUT, upstream="worker")
    with pytest.raises(UpstreamError):
        list(stream)


class ChunkedWorker:
    """A worker on a real socket answering every request with a chunked body written piece by piece (each
    piece after its event is set, so a test decides what has arrived when the gateway reads); counts the
    connections it accepted."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/worker_generate_stream"
        self.connections = 0
        self.open: list[socket.socket] = []
        self.pieces: list[tuple[threading.Event, bytes | None]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, *pieces: bytes | None, gated: bool = False) -> list[threading.Event]:
        """The next response's pieces (None: hang up); gated: each waits for its event (else all are written at
        once)."""
        self.pieces = [(threading.Event(), piece) for piece in pieces]
        if not gated:
            for event, _ in self.pieces:
                event.set()
        return [event for event, _ in self.pieces]

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed at the test's end
                return
            self.connections += 1
            self.open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection):
        try:
            self._answer_each_request(connection)
        except (OSError, ValueError):  # the connection was closed at the test's end
            pass

    def _answer_each_request(self, connection):
        with connection, connection.makefile("rb") as reader:
            while True:
                length = None
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length is None:
                    return
                reader.read(length)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n")
                for event, piece in self.pieces:
                    if not event.wait(5) or piece is None:
                        return
                    connection.sendall(piece)

    def close(self):
        self.server.close()
        for connection in self.open:
            connection.close()


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def frame(text: str) -> bytes:
    return json.dumps({"text": text, "error_code": 0}).encode() + b"\0"


LAST_CHUNK = b"0\r\n\r\n"


@pytest.fixture
def worker():
    worker = ChunkedWorker()
    yield worker
    worker.close()


def test_a_real_chunked_stream_relays_each_frame_that_comes_alone_and_reuses_the_connection(client, worker):
    for _ in range(2):
        events = worker.answer(http_chunk(frame("a")), http_chunk(frame("ab")), LAST_CHUNK, gated=True)
        stream = client.open_stream(worker.url, {}, timeout=TIMEOUT, upstream="worker")
        frames_seen = iter(stream)
        events[0].set()
        assert next(frames_seen)["text"] == "a"
        events[1].set()
        assert next(frames_seen)["text"] == "ab"
        events[2].set()
        assert list(frames_seen) == []
        stream.close()
    assert worker.connections == 1  # the connection went back to the pool after the body's end


def test_frames_already_received_in_separate_http_chunks_are_relayed_as_the_latest(client, worker):
    worker.answer(http_chunk(frame("a")) + http_chunk(frame("ab")) + http_chunk(frame("abc")) + LAST_CHUNK)
    with closing(client.open_stream(worker.url, {}, timeout=TIMEOUT, upstream="worker")) as stream:
        assert [f["text"] for f in stream] == ["abc"]


@pytest.mark.parametrize("body", [http_chunk(frame("a")),  # the connection closes before the last chunk
                                  http_chunk(frame("a")) + b"zz\r\n",  # not chunked encoding
                                  http_chunk(frame("a")) + http_chunk(b'{"text": "ab') + LAST_CHUNK])  # cut frame
def test_a_broken_real_chunked_body_is_a_bad_response(client, worker, body):
    worker.answer(body, None)
    with closing(client.open_stream(worker.url, {}, timeout=(1.0, 5.0), upstream="worker")) as stream:
        with pytest.raises(UpstreamError) as raised:
            list(stream)
    assert raised.value.kind == errors.BAD_RESPONSE


def test_a_real_stream_that_goes_silent_times_out(client, worker):
    # first a whole stream on the connection: the read timeout still holds on it when it is used again
    worker.answer(http_chunk(frame("a")), LAST_CHUNK)
    with closing(client.open_stream(worker.url, {}, timeout=(1.0, 0.3), upstream="worker")) as stream:
        assert [f["text"] for f in stream] == ["a"]
    worker.answer(http_chunk(frame("a")), LAST_CHUNK, gated=True)[0].set()
    with closing(client.open_stream(worker.url, {}, timeout=(1.0, 0.3), upstream="worker")) as stream:
        frames_seen = iter(stream)
        assert next(frames_seen)["text"] == "a"
        with pytest.raises(UpstreamError) as raised:
            next(frames_seen)
    assert raised.value.kind == errors.TIMEOUT
    assert worker.connections == 1


def test_closing_a_real_stream_unblocks_its_reader_at_once(client, worker):
    worker.answer(http_chunk(frame("a")), LAST_CHUNK, gated=True)
    stream = client.open_stream(worker.url, {}, timeout=(1.0, 30.0), upstream="worker")
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(UpstreamError, list, stream)))
    reader.start()
    stream.close()
    reader.join(5)
    assert not reader.is_alive() and outcome


def test_a_reply_over_the_limit_is_refused_when_its_size_is_announced(client, upstream, monkeypatch):
    monkeypatch.setattr("app.upstream.client.REPLY_LIMIT", 1000)
    upstream.post(URL, body=b'{"a": "' + b"x" * 2000 + b'"}')  # with its Content-Length
    with pytest.raises(UpstreamError, match="larger than") as raised:
        post(client)
    assert raised.value.kind == errors.BAD_RESPONSE
    upstream.post(URL, json={"b": "fits"})
    assert post(client) == {"b": "fits"}


def test_a_chunked_reply_is_refused_once_it_grows_over_the_limit(client, worker, monkeypatch):
    monkeypatch.setattr("app.upstream.client.REPLY_LIMIT", 1000)
    worker.answer(http_chunk(b'{"a": "' + b"x" * 600), http_chunk(b"x" * 600 + b'"}'), LAST_CHUNK)
    with pytest.raises(UpstreamError, match="larger than") as raised:
        post(client, worker.url)
    assert raised.value.kind == errors.BAD_RESPONSE
    worker.answer(http_chunk(b'{"a": '), http_chunk(b'"fits"}'), LAST_CHUNK)
    assert post(client, worker.url) == {"a": "fits"}


def test_a_stream_frame_over_the_limit_is_a_bad_response(client, worker, monkeypatch):
    monkeypatch.setattr("app.upstream.framing.FRAME_LIMIT", 1000)
    worker.answer(http_chunk(b'{"text": "' + b"x" * 600), http_chunk(b"x" * 600), LAST_CHUNK)
    with closing(client.open_stream(worker.url, {}, timeout=TIMEOUT, upstream="worker")) as stream:
        with pytest.raises(UpstreamError, match="frame larger than") as raised:
            list(stream)
    assert raised.value.kind == errors.BAD_RESPONSE
