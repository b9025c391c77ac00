"""An upstream's server-sent events, read as they arrive and handed on one event (a dict) at a time: the
gateway's EventStream encodes them again, so a stream ends in our framing ([DONE], our error event) whatever the
upstream sent."""
from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import requests

from app.routes.errors import UPSTREAM, stream_error
from app.upstream.client import decode_json, drop_connection
from app.upstream.errors import BAD_RESPONSE, TIMEOUT, UpstreamError

_READ_SIZE = 65536
_LINE_LIMIT = 16 * 1024 * 1024  # one event longer than this is no chat chunk


class RelayStream:
    """Iterate for the events; close() drops the upstream connection at once (the client left); usage_so_far():
    the last usage the upstream reported (EventStream's fallback for the access log and the limits)."""

    def __init__(self, response: requests.Response):
        self._response = response
        self._usage: dict | None = None

    def __iter__(self) -> Iterator[dict]:
        try:
            yield from self._events()
        except (requests.Timeout, TimeoutError, socket.timeout):
            raise UpstreamError(TIMEOUT, "The upstream stopped sending in time.", upstream=UPSTREAM) from None
        except (requests.RequestException, OSError, http.client.HTTPException):
            raise _broken() from None

    def usage_so_far(self) -> dict | None:
        return self._usage

    def close(self) -> None:
        drop_connection(self._response)

    def _events(self) -> Iterator[dict]:
        """Each `data:` line's JSON object, until `data: [DONE]`. Other lines (comments, event:, id:) are
        skipped: OpenAI-compatible servers put one JSON object on one data line."""
        pending = b""
        for piece in self._pieces():
            pending += piece
            if b"\n" not in piece:
                if len(pending) > _LINE_LIMIT:
                    raise UpstreamError(BAD_RESPONSE, "The upstream sent an event too long.", upstream=UPSTREAM)
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self._release()
                    return
                yield self._event(data)
        raise _broken()

    def _event(self, data: bytes) -> dict:
        try:
            event = decode_json(data)
        except (ValueError, UnicodeDecodeError):
            event = None
        if not isinstance(event, dict):
            raise UpstreamError(BAD_RESPONSE, "The upstream sent a stream event that is not a JSON object.",
                                upstream=UPSTREAM)
        if "choices" not in event and ("error" in event or event.get("error_code")):
            raise stream_error(event)  # OpenAI's error event, or FastChat's in-band {"text", "error_code"}
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
            if event.get("choices") and all(_empty_choice(choice) for choice in event["choices"]):
                # LiteLLM's proxy sends its usage chunk with one choice holding an empty delta, not OpenAI's
                # choices == []: made the standard usage chunk, which reaches only clients that asked for it.
                event["choices"] = []
        return event

    def _pieces(self) -> Iterator[bytes]:
        """The body as it arrives: http.client's read1 returns what is there (chunked or not) rather than wait
        for a full buffer, as iter_content would for a body with a Content-Length."""
        raw = self._response.raw
        message = getattr(raw, "_fp", None)
        if not isinstance(message, http.client.HTTPResponse) or raw.headers.get("content-encoding"):
            yield from self._response.iter_content(chunk_size=None)  # encoded, or a test's fake
            return
        while data := message.read1(_READ_SIZE):
            yield data

    def _release(self) -> None:
        """At [DONE] the connection goes back to its pool once the body's end is read, else it is dropped."""
        try:
            self._response.raw.release_conn() if self._response.raw.isclosed() else self._response.close()
        except (AttributeError, OSError):
            self._response.close()


def _empty_choice(choice: object) -> bool:
    """A choice that says nothing: no text, no delta content, role or tool calls, no finish_reason or logprobs."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict) or any(delta.values()):
        return False
    return not any(value for key, value in choice.items() if key not in ("index", "delta"))


def _broken() -> UpstreamError:
    return UpstreamError(BAD_RESPONSE, "The upstream closed the stream before it finished.", upstream=UPSTREAM)
