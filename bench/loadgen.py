"""Load generator for bench/benchmark.py: asyncio, raw HTTP/1.1 over keep-alive connections, stdlib only (and
the project's harness/sse.py).

One connection per concurrent client; each client sends its next request as soon as the previous response has
ended. Per request it records the send time, the time of the first content token (streams only) and the time of
the last byte, and an error label or None:

- ``http_<status>``: any status other than 200;
- ``timeout``, ``conn:<Exception>``, ``exc:<Exception>``: the request did not complete;
- ``no_done`` (an SSE stream without ``data: [DONE]``), ``error_event`` (an SSE ``error`` object in the stream),
  ``worker_error`` (a worker frame or reply with a non-zero ``error_code``), ``no_finish`` (a worker stream whose
  last frame has no ``finish_reason``), ``empty`` (no generated text at all), ``bad_body`` (unparsable body, or SSE
  framing that harness/sse.py refuses even leniently: a field other than ``data``, an event after ``[DONE]``).

Time to first token (TTFT) is send -> the first SSE ``data:`` event whose JSON has a non-empty
``choices[0].delta.content`` (or ``choices[0].text``), or, for a FastChat worker's own stream, the first
NUL-delimited frame with a non-empty ``text``. Only the events up to that one are parsed as JSON; after it the
stream is scanned for its end and for error objects without decoding, so the generator stays cheap.

Usable on its own for quick experiments against a running server::

    python bench/loadgen.py --url http://127.0.0.1:8000 --model sim-chat --stream -c 16 -n 2000 -t 10
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import re
import resource
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from harness import sse

__all__ = [
    "Target", "LoadResult", "HoldResult", "run_load", "run_hold", "chat_request", "worker_request",
    "raise_nofile_limit", "percentile",
]

READ_SIZE = 1 << 16
MAX_HEAD = 1 << 16
_ERROR_RE = re.compile(rb'(?<!\\)"error(?:_code)?"\s*:\s*(?!0[,}\s])')


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (children inherit it); return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY or (want != resource.RLIM_INFINITY and soft >= want):
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return soft, hard
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ----------------------------------------------------------------------------------------------- requests
class Target:
    """Where requests go and what they look like.

    kind: ``openai`` (POST an OpenAI request, read JSON or SSE) or ``worker`` (POST a FastChat worker payload to
    /worker_generate or /worker_generate_stream, read JSON or NUL-delimited frames).
    ``addresses``: one or more (host, port); connection i goes to addresses[i % len(addresses)].
    """

    def __init__(self, name: str, kind: str, addresses: Sequence[tuple[str, int]], path: str, body: dict,
                 stream: bool, headers: dict[str, str] | None = None):
        if kind not in ("openai", "worker"):
            raise ValueError(f"unknown target kind {kind!r}")
        self.name = name
        self.kind = kind
        self.addresses = list(addresses)
        self.path = path
        self.body = body
        self.stream = stream
        payload = json.dumps(body, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        host, port = self.addresses[0]
        self.raw = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fastchat-gateway-bench\r\n"
                    f"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    f"{extra}\r\n").encode("latin-1") + payload

    def handler(self):
        if self.kind == "openai":
            return SSEHandler() if self.stream else OpenAIJSONHandler()
        return WorkerStreamHandler() if self.stream else WorkerJSONHandler()

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "stream": self.stream,
                "addresses": [f"http://{h}:{p}" for h, p in self.addresses], "body": self.body}


def chat_request(model: str, content: str, max_tokens: int, stream: bool, temperature: float = 0.7) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": temperature}
    if stream:
        body["stream"] = True
    return body


def worker_request(model: str, prompt: str, max_new_tokens: int, temperature: float = 0.7) -> dict:
    """The payload FastChat's server and the gateway send a worker for a plain chat request."""
    return {"model": model, "prompt": prompt, "temperature": temperature, "logprobs": None, "top_p": 1.0,
            "top_k": -1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_new_tokens": max_new_tokens,
            "echo": False, "stop_token_ids": None, "stop": []}


# ----------------------------------------------------------------------------------------------- handlers
class OpenAIJSONHandler:
    __slots__ = ("parts", "ttft")

    def __init__(self):
        self.parts: list[bytes] = []
        self.ttft = None

    def feed(self, data: bytes, now: float) -> None:
        self.parts.append(data)

    def finish(self) -> str | None:
        try:
            obj = json.loads(b"".join(self.parts))
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "bad_body"
        return None if content else "empty"


class WorkerJSONHandler(OpenAIJSONHandler):
    __slots__ = ()

    def finish(self) -> str | None:
        try:
            obj = json.loads(b"".join(self.parts))
        except ValueError:
            return "bad_body"
        if not isinstance(obj, dict):
            return "bad_body"
        if obj.get("error_code", 0) != 0:
            return "worker_error"
        return None if obj.get("text") else "empty"


class SSEHandler:
    """OpenAI server-sent events, split by harness.sse.Reader (lenient: any SSE framing): JSON is decoded until
    the first content, later events are only scanned for error objects."""
    __slots__ = ("reader", "ttft", "error", "bad", "events")

    def __init__(self):
        self.reader = sse.Reader(lenient=True)
        self.ttft = None
        self.error = False
        self.bad = False
        self.events = 0

    def feed(self, data: bytes, now: float) -> None:
        if self.bad:
            return
        try:
            payloads = self.reader.feed(data)
        except sse.SSEError:
            self.bad = True
            return
        self.events += len(payloads)
        if self.ttft is None:
            for i, payload in enumerate(payloads):
                if payload != sse.DONE and self._event(payload, now):
                    payloads = payloads[i + 1:]
                    break
            else:
                return
        for payload in payloads:
            if b'"error' in payload and _ERROR_RE.search(payload):
                self.error = True

    def _event(self, payload: bytes, now: float) -> bool:
        """Decode one event before the first content; True once that content has arrived."""
        try:
            obj = json.loads(payload)
        except ValueError:
            self.error = True
            return False
        if not isinstance(obj, dict) or "error" in obj or obj.get("object") == "error" or (
                obj.get("error_code") not in (None, 0)):
            self.error = True
            return False
        choices = obj.get("choices")
        if choices:
            first = choices[0]
            if (first.get("delta") or {}).get("content") or first.get("text"):
                self.ttft = now
                return True
        return False

    def finish(self) -> str | None:
        if self.bad:
            return "bad_body"
        if self.error:
            return "error_event"
        if not self.reader.done:
            return "no_done"
        try:
            self.reader.close()
        except sse.SSEError:
            return "bad_body"
        if self.ttft is None:
            return "empty"
        return None


class WorkerStreamHandler:
    """FastChat worker stream: cumulative JSON frames separated by NUL bytes."""
    __slots__ = ("buf", "ttft", "last", "events", "error")

    def __init__(self):
        self.buf = b""
        self.ttft = None
        self.last = b""
        self.events = 0
        self.error = False

    def feed(self, data: bytes, now: float) -> None:
        frames = (self.buf + data).split(b"\0")
        self.buf = frames.pop()
        if not frames:
            return
        self.events += len(frames)
        if self.ttft is None:
            for frame in frames:
                try:
                    obj = json.loads(frame)
                except ValueError:
                    self.error = True
                    return
                if obj.get("error_code", 0) != 0:
                    self.error = True
                    return
                if obj.get("text"):
                    self.ttft = now
                    break
        self.last = frames[-1]

    def finish(self) -> str | None:
        if self.error:
            return "worker_error"
        try:
            obj = json.loads(self.last)
        except ValueError:
            return "bad_body"
        if obj.get("error_code", 0) != 0:
            return "worker_error"
        if self.ttft is None:
            return "empty"
        if obj.get("finish_reason") is None:
            return "no_finish"
        return None


# ------------------------------------------------------------------------------------------- HTTP client
class ProtocolError(Exception):
    pass


class ChunkedDecoder:
    """Incremental Transfer-Encoding: chunked decoder over a byte buffer (one await per read, not per chunk)."""
    __slots__ = ("buf", "remaining", "crlf", "trailer", "done")

    def __init__(self):
        self.buf = b""
        self.remaining = 0
        self.crlf = False
        self.trailer = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self.buf + data if self.buf else data
        pos = 0
        out = []
        n = len(buf)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.crlf = True
                continue
            if self.crlf:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self.crlf = False
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if n - pos > 4096:
                    raise ProtocolError("chunk size line too long")
                break
            line = buf[pos:nl]
            pos = nl + 2
            if self.trailer:
                if not line:
                    self.done = True
                    break
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                self.trailer = True
            else:
                self.remaining = size
        self.buf = buf[pos:]
        return b"".join(out) if len(out) != 1 else out[0]


class Connection:
    """One keep-alive HTTP/1.1 connection (asyncio streams), reopened after errors or Connection: close."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def open(self) -> bool:
        return self.writer is not None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=READ_SIZE)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
        self.reader = self.writer = None

    async def request(self, raw: bytes, handler) -> int:
        """Send one request and read the whole response, feeding the body to ``handler``; return the status."""
        if self.writer is None:
            await self.connect()
        reader, writer = self.reader, self.writer
        writer.write(raw)
        if writer.transport.get_write_buffer_size() > READ_SIZE:
            await writer.drain()
        buf = b""
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("connection closed before the response head")
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
        now = time.perf_counter()
        head = buf[:end].decode("latin-1").split("\r\n")
        rest = buf[end + 4:]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {head[0][:60]!r}")
        status = int(parts[1])
        length = None
        chunked = False
        close = parts[0] == "HTTP/1.0"
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                value = value.strip().lower()
                close = "close" in value or (close and "keep-alive" not in value)
        feed = handler.feed
        if chunked:
            decoder = ChunkedDecoder()
            data = rest
            while True:
                if data:
                    piece = decoder.feed(data)
                    if piece:
                        feed(piece, now)
                    if decoder.done:
                        break
                data = await reader.read(READ_SIZE)
                if not data:
                    raise ConnectionResetError("connection closed inside a chunked body")
                now = time.perf_counter()
        elif length is not None:
            got = len(rest)
            if rest:
                feed(rest, now)
            while got < length:
                data = await reader.read(min(READ_SIZE, length - got))
                if not data:
                    raise ConnectionResetError("connection closed inside the body")
                got += len(data)
                feed(data, time.perf_counter())
        else:  # body until EOF
            close = True
            if rest:
                feed(rest, now)
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                feed(data, time.perf_counter())
        if close:
            self.close()
        return status


# ------------------------------------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _dist_ms(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None, "min": None}
    ms = lambda v: round(v * 1000.0, 3)  # noqa: E731
    return {"n": len(values), "mean": ms(sum(values) / len(values)), "min": ms(values[0]),
            "p50": ms(percentile(values, 50)), "p90": ms(percentile(values, 90)),
            "p99": ms(percentile(values, 99)), "max": ms(values[-1])}


class LoadResult(dict):
    """A JSON-ready summary: requests, ok, errors {label: count}, elapsed_s, rps, latency_ms, ttft_ms."""


def measured_seconds(records: list[tuple], started: float) -> float:
    return max(max((r[2] for r in records), default=started) - started, 1e-9)


def summarize(records: list[tuple], elapsed: float, stream: bool) -> LoadResult:
    """Summary of (send, first token, end, error, events) records measured over ``elapsed`` seconds."""
    ok = [r for r in records if r[3] is None]
    errors = collections.Counter(r[3] for r in records if r[3] is not None)
    elapsed = max(elapsed, 1e-9)
    result = LoadResult(
        requests=len(records), ok=len(ok), errors=sum(errors.values()), error_kinds=dict(errors),
        elapsed_s=round(elapsed, 3), rps=round(len(ok) / elapsed, 2),
        latency_ms=_dist_ms([r[2] - r[0] for r in ok]),
    )
    if stream:
        result["ttft_ms"] = _dist_ms([r[1] - r[0] for r in ok if r[1] is not None])
        result["events_per_stream"] = round(sum(r[4] for r in ok) / len(ok), 2) if ok else None
    return result


# ------------------------------------------------------------------------------------------- load runs
async def _one(conn: Connection, target: Target, timeout: float) -> tuple:
    handler = target.handler()
    t0 = time.perf_counter()
    error = None
    try:
        async with asyncio.timeout(timeout):
            status = await conn.request(target.raw, handler)
        if status != 200:
            error = f"http_{status}"
        else:
            error = handler.finish()
    except TimeoutError:
        error = "timeout"
        conn.close()
    except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
        error = f"conn:{type(exc).__name__}"
        conn.close()
    except asyncio.CancelledError:
        conn.close()
        raise
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        error = f"exc:{type(exc).__name__}"
        conn.close()
    return (t0, handler.ttft, time.perf_counter(), error, getattr(handler, "events", 0))


async def _client(conn: Connection, target: Target, budget: list, deadline: float, timeout: float,
                  records: list | None) -> None:
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        record = await _one(conn, target, timeout)
        if records is not None:
            records.append(record)
        if record[3] is not None and record[3].startswith("conn:"):
            await asyncio.sleep(0.01)  # do not spin on a refused connection


async def run_load_async(target: Target, concurrency: int, max_requests: int, max_seconds: float, *,
                         warmup_requests: int = 0, warmup_seconds: float = 2.0, timeout: float = 30.0,
                         on_measure_start: Callable[[], None] | None = None, raw: bool = False):
    """Closed loop: ``concurrency`` clients on their own keep-alive connections, until ``max_requests`` have
    been sent or ``max_seconds`` have passed (requests in flight then still complete, bounded by ``timeout``).
    A warm-up on the same connections comes first and is not counted. Returns a LoadResult, or with ``raw``
    the (records, measured seconds) to summarize later with others."""
    conns = [Connection(*target.addresses[i % len(target.addresses)]) for i in range(concurrency)]
    try:
        await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
        if warmup_requests > 0:
            budget = [max(warmup_requests, concurrency)]
            deadline = time.perf_counter() + warmup_seconds
            await asyncio.gather(*(_client(c, target, budget, deadline, timeout, None) for c in conns))
        if on_measure_start is not None:
            on_measure_start()
        records: list[tuple] = []
        budget = [max_requests]
        started = time.perf_counter()
        deadline = started + max_seconds
        await asyncio.gather(*(_client(c, target, budget, deadline, timeout, records) for c in conns))
        if raw:
            return records, measured_seconds(records, started)
        result = summarize(records, measured_seconds(records, started), target.stream)
        result["concurrency"] = concurrency
        return result
    finally:
        for c in conns:
            c.close()


def run_load(target: Target, concurrency: int, max_requests: int, max_seconds: float, **kwargs):
    return asyncio.run(run_load_async(target, concurrency, max_requests, max_seconds, **kwargs))


class HoldResult(dict):
    """streams, ok, errors, error_kinds, peak_concurrent (streams between first token and end at once),
    all_held (every stream had its first token before any stream ended), ttft_ms, duration_ms, elapsed_s."""


async def run_hold_async(target: Target, streams: int, *, timeout: float = 120.0, connect_timeout: float = 30.0,
                         sampler: Callable[[], None] | None = None, sample_interval: float = 0.2,
                         connect_batch: int = 256) -> HoldResult:
    """Open ``streams`` connections, then start one stream on each at the same moment and read them all."""
    conns = [Connection(*target.addresses[i % len(target.addresses)]) for i in range(streams)]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            sampler()
            try:
                await asyncio.wait_for(stop.wait(), sample_interval)
            except TimeoutError:
                pass

    sampler_task = asyncio.create_task(sample()) if sampler is not None else None
    try:
        t_connect = time.perf_counter()
        connect_errors: collections.Counter = collections.Counter()
        for i in range(0, streams, connect_batch):
            batch = conns[i:i + connect_batch]
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(c.connect(), connect_timeout) for c in batch), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    connect_errors[f"connect:{type(outcome).__name__}"] += 1
        connect_s = time.perf_counter() - t_connect
        started = time.perf_counter()
        records = await asyncio.gather(*(_one(c, target, timeout) for c in conns if c.open))
        records = list(records) + [(started, None, started, kind, 0)
                                   for kind, count in connect_errors.items() for _ in range(count)]
    finally:
        stop.set()
        if sampler_task is not None:
            await sampler_task
        for c in conns:
            c.close()
    ok = [r for r in records if r[3] is None]
    errors = collections.Counter(r[3] for r in records if r[3] is not None)
    # Streams open at once: +1 at the first token, -1 at the end.
    marks = sorted([(r[1], 1) for r in ok if r[1] is not None] + [(r[2], -1) for r in ok if r[1] is not None],
                   key=lambda m: (m[0], m[1]))
    running = peak = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    last_first_token = max((r[1] for r in ok if r[1] is not None), default=None)
    first_end = min((r[2] for r in ok), default=None)
    return HoldResult(
        streams=streams, ok=len(ok), errors=sum(errors.values()), error_kinds=dict(errors),
        peak_concurrent=peak,
        all_held=bool(ok) and len(ok) == streams and last_first_token is not None and last_first_token < first_end,
        connect_s=round(connect_s, 3),
        elapsed_s=round(max((r[2] for r in records), default=started) - started, 3),
        ttft_ms=_dist_ms([r[1] - r[0] for r in ok if r[1] is not None]),
        duration_ms=_dist_ms([r[2] - r[0] for r in ok]),
    )


def run_hold(target: Target, streams: int, **kwargs) -> HoldResult:
    return asyncio.run(run_hold_async(target, streams, **kwargs))


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Closed-loop load against one OpenAI-compatible server or "
                                                 "FastChat worker (see bench/benchmark.py for the full run).")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000 (comma-separated "
                                                     "for several workers)")
    parser.add_argument("--kind", choices=("openai", "worker"), default="openai")
    parser.add_argument("--model", required=True)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-t", "--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--api-key")
    parser.add_argument("--hold", type=int, help="instead: open this many streams at once and hold them")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    addresses = []
    for url in args.url.split(","):
        parts = urlsplit(url.strip())
        addresses.append((parts.hostname, parts.port or 80))
    message = "Tell me about the history of the printing press."
    if args.kind == "openai":
        path = "/v1/chat/completions"
        body = chat_request(args.model, message, args.max_tokens, args.stream or bool(args.hold))
    else:
        path = "/worker_generate_stream" if args.stream or args.hold else "/worker_generate"
        body = worker_request(args.model, f"USER: {message} ASSISTANT:", args.max_tokens)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    target = Target("cli", args.kind, addresses, path, body, args.stream or bool(args.hold), headers)
    if args.hold:
        result = run_hold(target, args.hold, timeout=args.timeout)
    else:
        result = run_load(target, args.concurrency, args.requests, args.seconds, warmup_requests=args.warmup,
                          timeout=args.timeout)
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
