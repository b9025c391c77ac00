"""HTTP to the controller and workers: one pooled requests.Session per thread, explicit timeouts, and every
transport failure translated here, once, into UpstreamError.
"""
from __future__ import annotations

import functools
import http.client
import json
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from app.upstream.errors import BAD_RESPONSE, TIMEOUT, UNAVAILABLE, UpstreamError
from app.upstream.framing import (FRAME_LIMIT, ChunkedBody, ChunkedBodyError, FrameTooLongError,
                                 TruncatedFrameError, iter_frame_batches)

Timeout = tuple[float, float]  # (connect, read) seconds; read is the longest silence between two bytes
_HEADERS = {"User-Agent": "fastchat-gateway", "Content-Type": "application/json", "Accept": "*/*"}
_JSON = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one per call
_DECODER = json.JSONDecoder()
_READ_SIZE = 65536  # what one read of a stream may take: every frame already received, however many


class UpstreamClient:
    """POSTs JSON to FastChat processes; callers get parsed JSON or an open frame stream, never requests types."""

    def __init__(self, *, connect_retries: int = 1, pool_size: int = 64):
        self._local = threading.local()
        # Retry only failures to connect: nothing was sent, so even a generation request is safe to repeat.
        self._retry = Retry(total=connect_retries, connect=connect_retries, read=0, status=0, other=0, redirect=0,
                            allowed_methods=None, raise_on_status=False)
        self._pool_size = pool_size

    def session(self) -> requests.Session:
        """This thread's Session: requests does not promise a Session is safe to share between threads."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Controller and workers are internal addresses: no proxy or netrc from the environment applies.
            session.trust_env = False
            adapter = HTTPAdapter(max_retries=self._retry, pool_maxsize=self._pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def post_json(self, url: str, payload: Any, *, timeout: Timeout, upstream: str) -> Any:
        """POST `payload` (no body when None) and return the decoded JSON reply.

        Raises UpstreamError: unavailable, timeout, or bad_response (non-200 or not JSON).
        """
        response = self._post(url, payload, timeout=timeout, upstream=upstream, stream=False)
        try:
            return decode_json(response.content)
        except ValueError:
            raise UpstreamError(BAD_RESPONSE, f"The {upstream} sent a reply that is not JSON.",
                                upstream=upstream) from None

    def open_stream(self, url: str, payload: Any, *, timeout: Timeout, upstream: str) -> "FrameStream":
        """POST and return the open NUL-framed stream once its status is known to be 200."""
        return FrameStream(self._post(url, payload, timeout=timeout, upstream=upstream, stream=True), upstream)

    def _post(self, url: str, payload: Any, *, timeout: Timeout, upstream: str, stream: bool) -> requests.Response:
        body = None if payload is None else _JSON.encode(payload).encode()
        response = self.send(url, body, timeout=timeout, upstream=upstream, stream=stream)
        if response.status_code != 200:
            response.close()
            raise UpstreamError(BAD_RESPONSE, f"The {upstream} answered with HTTP {response.status_code}.",
                                upstream=upstream)
        return response

    def send(self, url: str, body: bytes | None, *, timeout: Timeout, upstream: str, stream: bool,
             headers: dict[str, str] | None = None) -> requests.Response:
        """POST `body` and return the response whatever its status (the caller reads a non-200 body itself); with
        stream, once its headers are in. headers: added to the JSON ones (an upstream's Authorization). Raises
        UpstreamError for every transport failure: unavailable (nothing was sent), timeout, bad_response."""
        try:
            request = _prepare(url, body, headers)
            # Straight to the session's transport adapter: Session.send would add settings merging, cookie
            # persistence, response hooks and redirect handling, none of which applies to these JSON calls (a
            # prompt goes only to the address the controller or the configuration named, so no redirects), and
            # together they cost more CPU than a localhost round trip to a worker.
            response = self.session().get_adapter(url).send(request, stream=stream, timeout=timeout)
            if not stream:
                _read_whole(response, upstream)  # here, so that its failures are translated below
        except requests.ConnectTimeout:
            raise UpstreamError(UNAVAILABLE, f"The {upstream} did not accept a connection in time.",
                                upstream=upstream) from None
        except requests.Timeout:
            raise UpstreamError(TIMEOUT, f"The {upstream} did not answer in time.", upstream=upstream) from None
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            if isinstance(reason, ReadTimeoutError):
                raise UpstreamError(TIMEOUT, f"The {upstream} did not answer in time.", upstream=upstream) from None
            if isinstance(reason, ProtocolError):
                # The request reached it and it hung up: it may have started the work, so this is no
                # "unreachable" (which failover retries elsewhere) but a broken reply.
                raise UpstreamError(BAD_RESPONSE, f"The {upstream} closed the connection without answering.",
                                    upstream=upstream) from None
            raise UpstreamError(UNAVAILABLE, f"The {upstream} could not be reached.", upstream=upstream) from None
        except requests.RequestException as exc:
            raise UpstreamError(BAD_RESPONSE, f"The {upstream} request failed: {type(exc).__name__}.",
                                upstream=upstream) from None
        return response


class FrameStream:
    """An open worker stream: iterate it for decoded frames; close() releases the connection (and so the
    worker's concurrency slot) at once."""

    def __init__(self, response: requests.Response, upstream: str = "worker"):
        self._response = response
        self._upstream = upstream

    def __iter__(self) -> Iterator[dict]:
        """The latest frame of each read. FastChat frames are cumulative (text, usage and logprobs so far), so
        when one read brings several, only the last needs decoding and relaying: the others are checked for shape
        only. A read takes every byte already received (_body_pieces), so a gateway that falls behind its worker
        relays what is new in one chunk instead of one chunk per frame: when it keeps up, each frame is one read
        and is relayed as it comes."""
        try:
            for batch in iter_frame_batches(self._body_pieces()):
                for frame in batch[:-1]:
                    if not (frame.startswith(b"{") and frame.rstrip().endswith(b"}")):
                        raise _not_an_object(self._upstream)
                yield _decode_frame(batch[-1], self._upstream)
        except requests.ConnectionError as exc:
            if isinstance(_reason(exc), ReadTimeoutError):
                raise UpstreamError(TIMEOUT, f"The {self._upstream} stopped sending in time.",
                                    upstream=self._upstream) from None
            raise self._broken() from None
        except TimeoutError:
            raise UpstreamError(TIMEOUT, f"The {self._upstream} stopped sending in time.",
                                upstream=self._upstream) from None
        except FrameTooLongError:
            raise UpstreamError(BAD_RESPONSE, f"The {self._upstream} sent a frame larger than "
                                f"{FRAME_LIMIT // 2 ** 20} MiB.", upstream=self._upstream) from None
        except (requests.RequestException, TruncatedFrameError, ChunkedBodyError, OSError,
                http.client.HTTPException):
            raise self._broken() from None

    def _body_pieces(self) -> Iterator[bytes]:
        return iter(BodyPieces(self._response))

    def close(self) -> None:
        drop_connection(self._response)

    def _broken(self) -> UpstreamError:
        return UpstreamError(BAD_RESPONSE, f"The {self._upstream} closed the stream before it finished.",
                             upstream=self._upstream)


class BodyPieces:
    """A streamed response's body as it arrives; iterate for the pieces.

    A chunked body (FastChat's workers send one HTTP chunk per frame, OpenAI-compatible servers one per event) is
    decoded here from what the connection received: first what http.client's reader buffered with the headers
    (its 8 KiB buffer, taken whole by one read1), then one recv() per read from the socket itself, each taking
    everything received so far (several frames or events when the gateway fell behind), where urllib3 hands
    over one HTTP chunk at a time through four layers of Python. urllib3 still owns the connection (its socket,
    read timeout, pool); as soon as the body's end is read (before its last piece is handed on) the connection
    goes back to its pool, as urllib3 itself does. Any other body (not chunked, encoded, a test's fake) comes
    through iter_content."""

    def __init__(self, response: requests.Response):
        self._response = response
        raw = response.raw
        self._message = getattr(raw, "_fp", None)  # urllib3's http.client response
        self._reader = getattr(self._message, "fp", None)
        self.chunked = (isinstance(self._message, http.client.HTTPResponse) and self._message.chunked
                         and self._message.chunk_left is None and hasattr(self._reader, "read1")
                         and not raw.headers.get("content-encoding"))
        self._body = ChunkedBody()
        self._kernel_timeout: tuple | None = None  # (socket, Python timeout) while SO_RCVTIMEO stands in
        self.released = False  # the whole body was read and the connection went back to its pool

    def __iter__(self) -> Iterator[bytes]:
        if not self.chunked:
            yield from self._response.iter_content(chunk_size=None)
            return
        data = self._feed(self._reader.read1(_READ_SIZE))  # what came with the headers, or one read
        if data:
            yield data
        if self._body.done:
            return
        sock = getattr(self._response.raw.connection, "sock", None)
        timeout = sock.gettimeout() if _kernel_timeouts(sock) else None
        if timeout:
            # The read timeout kept by the kernel (SO_RCVTIMEO on a blocking socket): Python's own timeout costs a
            # poll() before every recv(), one more GIL release and retake per frame. Put back as it was before
            # the connection goes back to its pool (_feed), or when the reading stops.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
            sock.settimeout(None)
            self._kernel_timeout = (sock, timeout)
        receive = sock.recv if sock is not None else self._reader.read1
        try:
            while not self._body.done:
                try:
                    received = receive(_READ_SIZE)
                except BlockingIOError:  # SO_RCVTIMEO ran out
                    raise TimeoutError from None
                if not received:
                    raise TruncatedFrameError("the connection closed inside the chunked body")
                data = self._feed(received)
                if data:
                    yield data
        finally:
            self._restore_timeout()

    def read_end_if_arrived(self) -> bool:
        """After the last event: read the body's end if it is already there, without waiting (the end of a
        chunked body usually follows its last data at once), so the connection goes back to its pool rather
        than being dropped. True when the body is complete and the connection released."""
        if self.released or not self.chunked:
            return self.released
        sock = getattr(self._response.raw.connection, "sock", None)
        if sock is None:
            return False
        try:
            for _ in range(4):
                received = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
                if not received:
                    return False
                self._feed(received)
                if self._body.done:
                    break
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ChunkedBodyError):
            return False
        return self.released

    def _feed(self, received: bytes) -> bytes:
        data = self._body.feed(received)
        if self._body.done and not self.released:
            self._restore_timeout()
            self._message.close()  # what http.client does at a chunked body's end: the socket stays open for reuse
            self._response.raw.release_conn()
            self.released = True
        return data

    def _restore_timeout(self) -> None:
        if self._kernel_timeout is None:
            return
        sock, timeout = self._kernel_timeout
        self._kernel_timeout = None
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0))
        except OSError:  # closed meanwhile (the client left): nothing to restore
            pass


# A whole reply larger than this is no chat, completion or embedding reply (the largest, embeddings of a full
# request body's inputs, stay far below): refused rather than held in memory.
REPLY_LIMIT = 256 * 1024 * 1024


def _read_whole(response: requests.Response, upstream: str) -> None:
    """Read the body into response.content, at most REPLY_LIMIT bytes. Raises UpstreamError(bad_response) beyond."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) <= REPLY_LIMIT:
        response.content  # the common case (FastChat's workers, most servers): its size is known and fits
        return
    if not length.isdigit():  # chunked, or no length: read up to the limit
        pieces, size = [], 0
        for piece in response.iter_content(1024 * 1024):
            pieces.append(piece)
            size += len(piece)
            if size > REPLY_LIMIT:
                break
        else:
            response._content = b"".join(pieces)  # what response.content would have read, as requests keeps it
            return
    response.close()
    raise UpstreamError(BAD_RESPONSE, f"The {upstream} sent a reply larger than {REPLY_LIMIT // 2 ** 20} MiB.",
                        upstream=upstream)


def drop_connection(response: requests.Response) -> None:
    """Close a streamed response's connection now (the client left). shutdown() wakes a thread blocked reading
    this socket at once; close() alone waits for the next byte."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def _kernel_timeouts(sock) -> bool:
    """Whether `sock` is the standard library's socket, which SO_RCVTIMEO governs once blocking (gevent's
    cooperative sockets poll in their hub: they keep Python's timeout)."""
    return type(sock).__module__ == "socket"


def _timeval(seconds: float) -> bytes:
    """A struct timeval (time_t seconds, microseconds: two C longs on Linux)."""
    return struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000))


def _prepare(url: str, body: bytes | None, headers: dict[str, str] | None = None) -> requests.PreparedRequest:
    """What PreparedRequest.prepare() makes of a JSON POST, with the URL's preparation done once per URL."""
    request = requests.PreparedRequest()
    request.method, request.url, request.body = "POST", _prepared_url(url), body
    request.headers = CaseInsensitiveDict(_HEADERS)
    if headers:
        request.headers.update(headers)
    request.headers["Content-Length"] = str(len(body or b""))
    return request


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str) -> str:
    """requests' checks and normalisation of a URL (scheme, IDNA host, quoting): with the rest of prepare(),
    ~7 % of a whole gateway request's CPU when done per call, though the gateway only calls a few addresses."""
    request = requests.PreparedRequest()
    request.prepare_url(url, None)
    return request.url


def decode_json(data: bytes) -> Any:
    """JSON from a FastChat process: UTF-8, as RFC 8259 requires. orjson decodes a frame in a quarter of the
    standard library's time; what it refuses and Python's json takes (NaN and Infinity, which a worker's
    json.dumps writes for such floats, integers beyond 64 bits, lone surrogate escapes) goes to the latter, so
    the result is what json would make of it either way."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _DECODER.decode(data.decode("utf-8"))


def _decode_frame(frame: bytes, upstream: str) -> dict:
    try:
        data = decode_json(frame)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _not_an_object(upstream)
    return data


def _not_an_object(upstream: str) -> UpstreamError:
    return UpstreamError(BAD_RESPONSE, f"The {upstream} sent a stream frame that is not a JSON object.",
                         upstream=upstream)


def _reason(exc: requests.ConnectionError) -> BaseException | None:
    """The urllib3 error behind a requests ConnectionError: requests wraps it directly inside a streamed body,
    and as MaxRetryError(reason=...) when a urllib3 Retry gave up."""
    cause = exc.args[0] if exc.args else None
    return getattr(cause, "reason", None) or cause
