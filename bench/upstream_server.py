"""A minimal OpenAI-compatible upstream for the LiteLLM comparison (bench/litellm_compare.py): fast and
deterministic, so that what is measured is the proxy in front of it, not the model behind.

    python -m bench.upstream_server --port 9000 [--models bench-chat] [--tokens 16] [--chunk-delay 0]

Stdlib asyncio only, one process, HTTP/1.1 keep-alive (Content-Length or chunked request bodies):

- ``GET /v1/models``: the ``--models``;
- ``POST /v1/chat/completions``: ``max_tokens`` (or ``max_completion_tokens``; default ``--tokens``) tokens of
  fixed filler, whole (with ``usage``) or, with ``stream: true``, as SSE: a role chunk, one chunk per token, a
  chunk with ``finish_reason``, the usage chunk (``choices: []``) when ``stream_options.include_usage``, then
  ``data: [DONE]``; every event one HTTP chunk, written as soon as it is made (``--chunk-delay`` seconds apart);
- ``GET /health``; ``GET /stats``: requests served so far by path, and connections accepted.

The replies are a pure function of the request (model, token count, usage asked for), built once per shape and
then served from a cache, so the server spends almost nothing per request.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import signal

MAX_TOKENS = 4096
MAX_BODY = 8 * 1024 * 1024
MAX_HEAD = 64 * 1024
CREATED = 1_700_000_000
WORDS = ("The", " press", " changed", " how", " ideas", " moved", " across", " Europe", ",", " and", " books",
         " became", " cheap", " enough", " to", " share", ".")


# ------------------------------------------------------------------------------------------------ the model
def token_count(body: dict, default: int) -> int:
    """How many tokens a request gets: its max_tokens (or max_completion_tokens), else ``default``; 1..4096."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, MAX_TOKENS)
    return max(1, min(default, MAX_TOKENS))


def tokens(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def _usage(n: int) -> dict:
    return {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=256)
def chat_whole(model: str, n: int) -> bytes:
    """The JSON body of a whole chat completion of ``n`` tokens."""
    return _dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens(n))},
                                "finish_reason": "length", "logprobs": None}],
                   "usage": _usage(n)})


@functools.lru_cache(maxsize=256)
def chat_events(model: str, n: int, include_usage: bool) -> tuple[bytes, ...]:
    """The SSE events (each ``data: ...\\n\\n``) of a streamed chat completion of ``n`` tokens."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": model}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": token}) for token in tokens(n)]
    events.append(chunk({}, "length"))
    if include_usage:
        events.append({**base, "choices": [], "usage": _usage(n)})
    return tuple(b"data: " + _dumps(e) + b"\n\n" for e in events) + (b"data: [DONE]\n\n",)


def models_body(models: tuple[str, ...]) -> bytes:
    return _dumps({"object": "list", "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                                              for m in models]})


def error_body(message: str, kind: str = "invalid_request_error") -> bytes:
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def chat(body: object, default_tokens: int) -> tuple[int, bytes | tuple[bytes, ...]]:
    """(status, whole JSON body) or (200, the stream's events) for a chat request's decoded JSON."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get("messages"):
        return 400, error_body("model and messages are required")
    n = token_count(body, default_tokens)
    if body.get("stream"):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return 200, chat_events(body["model"], n, include_usage)
    return 200, chat_whole(body["model"], n)


# ------------------------------------------------------------------------------------------------ HTTP/1.1
class HttpError(Exception):
    pass


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, lower-cased headers) of a request head without its final CRLF CRLF."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise HttpError("bad request line") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError("bad header line")
        headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


def dechunk(data: bytes) -> tuple[bytes, int] | None:
    """A chunked body from the start of ``data``: (body, bytes used), or None while incomplete."""
    body, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        try:
            size = int(data[pos:end].split(b";", 1)[0], 16)
        except ValueError:
            raise HttpError("bad chunk size") from None
        start = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", end)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(data) < start + size + 2:
            return None
        body += data[start:start + size]
        if len(body) > MAX_BODY:
            raise HttpError("body too large")
        pos = start + size + 2


class UpstreamProtocol(asyncio.Protocol):
    """One connection: requests handled one after another (no pipelining beyond buffering)."""

    def __init__(self, server: Server):
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def connection_lost(self, exc) -> None:
        self.transport = None

    def _next(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail(431, "request head too large")
                return
            try:
                method, path, headers = parse_head(bytes(self.buffer[:end]))
                rest = bytes(self.buffer[end + 4:])
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    got = dechunk(rest)
                    if got is None:
                        return
                    body, used = got
                else:
                    length = int(headers.get("content-length") or 0)
                    if length > MAX_BODY:
                        raise HttpError("body too large")
                    if len(rest) < length:
                        return
                    body, used = rest[:length], length
            except (HttpError, ValueError) as exc:
                self._fail(400, str(exc))
                return
            del self.buffer[:end + 4 + used]
            keep_alive = headers.get("connection", "").lower() != "close"
            self.handle(method, path, body, keep_alive)

    def _fail(self, status: int, message: str) -> None:
        self.respond(status, error_body(message), keep_alive=False)

    def respond(self, status: int, body: bytes, keep_alive: bool = True,
                content_type: str = "application/json") -> None:
        if self.transport is None:
            return
        close = "" if keep_alive else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{close}\r\n").encode("latin-1")
        self.transport.write(head + body)
        if not keep_alive:
            self.transport.close()
            self.transport = None

    def handle(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        self.server.counts[f"{method} {path}"] += 1
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            try:
                decoded = json.loads(body)
            except ValueError:
                self.respond(400, error_body("the body is not JSON"), keep_alive)
                return
            status, reply = chat(decoded, self.server.tokens)
            if isinstance(reply, tuple):
                self.stream(reply, keep_alive)
            else:
                self.respond(status, reply, keep_alive)
        elif method == "GET" and path in ("/v1/models", "/models"):
            self.respond(200, self.server.models_body, keep_alive)
        elif method == "GET" and path == "/health":
            self.respond(200, b'{"status":"ok"}', keep_alive)
        elif method == "GET" and path == "/stats":
            self.respond(200, _dumps({"requests": dict(self.server.counts),
                                                  "connections": self.server.connections}), keep_alive)
        else:
            self.respond(404, error_body(f"no route {method} {path}", "not_found_error"), keep_alive)

    def stream(self, events: tuple[bytes, ...], keep_alive: bool) -> None:
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n" + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n")
        self.transport.write(head)
        if self.server.chunk_delay <= 0:
            for event in events:
                self.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            self._end_stream(keep_alive)
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._paced(events, keep_alive))

    async def _paced(self, events: tuple[bytes, ...], keep_alive: bool) -> None:
        for event in events:
            if self.transport is None:
                return
            self.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            await asyncio.sleep(self.server.chunk_delay)
        self.busy = False
        self._end_stream(keep_alive)
        self._next()

    def _end_stream(self, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self.transport.close()
            self.transport = None


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large"}


class Server:
    def __init__(self, models: tuple[str, ...], tokens: int = 16, chunk_delay: float = 0.0):
        self.models_body = models_body(models)
        self.tokens = tokens
        self.chunk_delay = chunk_delay
        self.counts: collections.Counter = collections.Counter()
        self.connections = 0

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: UpstreamProtocol(self), host, port, backlog=4096,
                                          reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"bench.upstream_server: listening on http://{host}:{port}", flush=True)
        async with server:
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models", default="bench-upstream", help="comma-separated model ids for /v1/models")
    parser.add_argument("--tokens", type=int, default=16, help="tokens of a request without max_tokens")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between a stream's events")
    args = parser.parse_args(argv)
    server = Server(tuple(m for m in args.models.split(",") if m), args.tokens, args.chunk_delay)
    asyncio.run(server.serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
