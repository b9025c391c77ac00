"""Reading the gateway's server-sent events: one reader for the tests and the load generator.

The gateway's streams are strict: every event is one line ``data: <payload>`` ended by a blank line, and the last
event is ``data: [DONE]``, sent once, with nothing after it. `Reader` checks that incrementally, fed the bytes as
they arrive (events split across reads are joined); `parse` and `parse_json` check a whole body.

``lenient=True`` accepts the framing any SSE client accepts (the WHATWG event-stream format): CRLF or CR line ends,
``data:`` without its space, an event of several ``data:`` lines (joined by "\\n"), comment lines (``:...``) and
extra blank lines. The [DONE] rules hold in both modes, and a field other than ``data`` (``event:``, ``id:``,
``retry:``) is refused in both: the gateway never sends one.

Every problem raises `SSEError` with a message saying what is wrong; callers turn it into an assertion, a flag or
an error label. The reader never decodes JSON, so the load generator can split events cheaply.
"""
from __future__ import annotations

import json

__all__ = ["DONE", "SSEError", "Reader", "parse", "parse_json"]

DONE = b"[DONE]"


class SSEError(ValueError):
    """The bytes are not the event stream the gateway promises."""


class Reader:
    """Incremental reader: `feed` returns the payloads of the events each read completes, `close` checks the end."""

    __slots__ = ("lenient", "done", "last", "_buf", "_after_cr")

    def __init__(self, lenient: bool = False):
        self.lenient = lenient
        self.done = False  # data: [DONE] was read
        self.last = None  # the last payload read, for messages
        self._buf = b""  # the start of an event whose blank line has not arrived yet
        self._after_cr = False  # lenient: the last read ended with CR, so a LF starting the next one belongs to it

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads (bytes after ``data: ``) of the events `data` completes, in order; [DONE] included."""
        if b"\r" in data or self._after_cr:
            if not self.lenient:
                raise SSEError(f"CR in the stream (CRLF line ends?): {data[:200]!r}")
            data = self._normalise(data)
        buf = self._buf + data if self._buf else data
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        payloads = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:  # the gateway's framing: the fast path
                payload = block[6:]
            elif self.lenient:
                payload = _lenient_payload(block)
                if payload is None:  # comments or blank lines only: no event
                    continue
            else:
                raise SSEError(f"not a single-line `data: ` event: {block[:200]!r}")
            if self.done:
                raise SSEError("data: [DONE] sent more than once" if payload == DONE else
                               f"an event after data: [DONE]: {payload[:200]!r}")
            if payload == DONE:
                self.done = True
            payloads.append(payload)
        if payloads:
            self.last = payloads[-1]
        return payloads

    def close(self) -> None:
        """The body has ended: it must end with a blank line, the last event being data: [DONE]."""
        rest = self._buf
        if rest and (not self.lenient or _lenient_payload(rest) is not None):
            raise SSEError(f"the body does not end with a blank line: ...{rest[-120:]!r}")
        if not self.done:
            raise SSEError(f"the stream does not end with data: [DONE]; last event {self.last!r:.200}")

    def _normalise(self, data: bytes) -> bytes:
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        self._after_cr = data[-1:] == b"\r"
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _lenient_payload(block: bytes) -> bytes | None:
    """The data of one event in the general format; None when it has no data line."""
    data = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if name != b"data":
            raise SSEError(f"not a data line: {line[:200]!r}")
        data.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(data) if data else None


def parse(body: bytes, lenient: bool = False) -> list[str]:
    """The data payloads of a whole event-stream body as text, the last one "[DONE]"."""
    reader = Reader(lenient)
    payloads = reader.feed(body)
    reader.close()
    try:
        return [payload.decode("utf-8") for payload in payloads]
    except UnicodeDecodeError as exc:
        raise SSEError(f"an event is not UTF-8: {exc}") from None


def parse_json(body: bytes, lenient: bool = False) -> list:
    """The events of a whole body decoded from JSON, followed by the "[DONE]" sentinel (a str)."""
    *events, done = parse(body, lenient)
    decoded = []
    for event in events:
        try:
            decoded.append(json.loads(event))
        except ValueError:
            raise SSEError(f"event data is not JSON: {event[:200]!r}") from None
    return decoded + [done]


def post_stream(url: str, key: str, body: dict, timeout: float = 30) -> bytes:
    """POST ``body`` with "stream": true to ``url`` with the API key ``key``: the whole SSE body, once its status
    (200) and content type (text/event-stream) are checked."""
    import requests  # the parsers above need no HTTP client

    with requests.post(url, json={**body, "stream": True}, headers={"Authorization": f"Bearer {key}"},
                       timeout=timeout, stream=True) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
        return b"".join(resp.iter_content(chunk_size=None))
