"""RelayStream over a real socket (a server on 127.0.0.1 in a thread): events are handed on as they arrive, not
when the upstream's body ends, whether the body is chunked or ends with the connection."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.routes.config import Route, RouteTable
from app.routes.relay import CHAT, Relay
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamError


def event(content: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; ``url`` is its /v1."""

    def _serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Upstream(LocalServer):
    """Sends one event, waits for `go`, then the rest: a relay that buffered would hang on the first."""

    def __init__(self, chunked: bool, finish: bool = True):
        self.go = threading.Event()
        self.rest_sent = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                rest = event("b") + (b"data: [DONE]\n\n" if finish else b"")
                for piece, wait in ((event("a"), True), (rest, False)):
                    data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                    self.wfile.write(data)
                    self.wfile.flush()
                    if wait:
                        owner.go.wait(5)
                        owner.rest_sent = True
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self._serve(Handler)

    def close(self):
        self.go.set()
        super().close()


@pytest.mark.parametrize("chunked", [True, False])
def test_the_first_event_is_handed_on_before_the_upstream_sends_the_rest(chunked):
    upstream = Upstream(chunked)
    try:
        relay = Relay(UpstreamClient(connect_retries=0), RouteTable({"m": (Route("m", upstream.url, "m"),)}),
                      read_timeout=5)
        events = iter(relay.stream(CHAT, "m", {"model": "m", "messages": []}))
        assert next(events)["choices"][0]["delta"]["content"] == "a"
        assert not upstream.rest_sent  # handed on while the upstream still waits
        upstream.go.set()
        assert [item["choices"][0]["delta"]["content"] for item in events] == ["b"]
    finally:
        upstream.close()


def test_a_stream_without_done_is_a_broken_stream():
    upstream = Upstream(chunked=False, finish=False)
    upstream.go.set()
    try:
        relay = Relay(UpstreamClient(connect_retries=0), RouteTable({"m": (Route("m", upstream.url, "m"),)}),
                      read_timeout=5)
        with pytest.raises(UpstreamError, match="closed the stream before it finished"):
            list(relay.stream(CHAT, "m", {"model": "m", "messages": []}))
    finally:
        upstream.close()


def test_close_drops_the_upstream_connection_at_once():
    """The client left (EventStream.close): the upstream sees its connection go, so it can stop generating."""
    gone = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(2000):  # about 40 s of events unless the reader goes away
                    self.wfile.write(event("x"))
                    self.wfile.flush()
                    threading.Event().wait(0.02)
            except (BrokenPipeError, ConnectionResetError):
                gone.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        relay = Relay(UpstreamClient(connect_retries=0), RouteTable({"m": (Route("m", url, "m"),)}), read_timeout=5)
        stream = relay.stream(CHAT, "m", {"model": "m", "messages": []})
        events = iter(stream)
        next(events)
        stream.close()
        assert gone.wait(5)
    finally:
        server.shutdown()
        server.server_close()


def _relayed(body: bytes) -> list[dict]:
    import io

    import requests

    from app.routes.stream import RelayStream

    response = requests.Response()
    response.status_code = 200
    response.raw = io.BytesIO(body)
    return list(RelayStream(response))


def test_a_usage_chunk_with_an_empty_choice_becomes_the_standard_usage_chunk():
    """LiteLLM's proxy sends its usage with choices [{"delta": {}, "index": 0}]: it is made choices == [], so
    the framing passes it on only to a client that asked for include_usage."""
    usage = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [{"index": 0, "delta": {}}], "usage": usage},
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    events = _relayed(body)
    assert events[-1] == {"choices": [], "usage": usage}
    assert events[:2] == chunks[:2]


def test_a_chunk_with_content_and_usage_keeps_its_choice():
    usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
    chunks = [{"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": usage},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    assert _relayed(body) == chunks


class WholeBodyUpstream(LocalServer):
    """A chunked upstream that writes each stream's whole body in one write (events that arrive together, as when
    the gateway fell behind), and counts the connections it accepted."""

    def __init__(self, body: bytes):
        self.connections = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                owner.connections += 1
                super().setup()

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self._serve(Handler)


USAGE = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
# json.dumps's default separators (", ", ": ") differ from the gateway's own compact encoding, so the bytes tell
# whether an event was passed on as received or encoded again.
AS_SENT = [json.dumps({"choices": [{"index": 0, "delta": {"content": c}}]}).encode() for c in ("a", "b")]
LITELLM_USAGE = json.dumps({"choices": [{"index": 0, "delta": {}}], "usage": USAGE}).encode()


@pytest.fixture
def whole_body():
    upstream = WholeBodyUpstream(b"".join(b"data: " + data + b"\n\n" for data in (*AS_SENT, LITELLM_USAGE))
                                 + b"data: [DONE]\n\n")
    yield upstream
    upstream.close()


def _relay(upstream) -> Relay:
    return Relay(UpstreamClient(connect_retries=0), RouteTable({"m": (Route("m", upstream.url, "m"),)}),
                 read_timeout=5)


def test_events_received_together_are_one_batch_with_the_json_as_received(whole_body):
    batches = list(_relay(whole_body).stream(CHAT, "m", {"model": "m", "messages": []}).batches())
    assert len(batches) == 1
    (first, first_data), (second, second_data), (usage, usage_data) = batches[0]
    assert (first_data, second_data) == tuple(AS_SENT)
    assert first == json.loads(AS_SENT[0]) and second == json.loads(AS_SENT[1])
    assert usage == {"choices": [], "usage": USAGE} and usage_data is None  # changed: not the upstream's bytes


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_sse_body_passes_unchanged_events_as_received_in_one_write(whole_body, include_usage):
    from app.streaming import EventStream, encode_event

    writes = list(EventStream(_relay(whole_body).stream(CHAT, "m", {"model": "m", "messages": []}),
                              include_usage))
    usage = encode_event({"choices": [], "usage": USAGE}) if include_usage else b""
    assert writes == [b"".join(b"data: " + data + b"\n\n" for data in AS_SENT) + usage, b"data: [DONE]\n\n"]


def test_the_connection_goes_back_to_the_pool_after_done(whole_body):
    relay = _relay(whole_body)
    for _ in range(3):
        assert len(list(relay.stream(CHAT, "m", {"model": "m", "messages": []}))) == 3
    assert whole_body.connections == 1
