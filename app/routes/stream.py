"""An upstream's server-sent events, read as they arrive and handed on one event (a dict) at a time, or those of
one read together (batches(): EventStream writes them at once, an unchanged event as its upstream's JSON); a
stream ends in our framing ([DONE], our error event) whatever the upstream sent."""
from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import requests

from app.routes.errors import UPSTREAM, stream_error
from app.upstream.client import BodyPieces, decode_json, drop_connection
from app.upstream.errors import BAD_RESPONSE, TIMEOUT, UpstreamError
from app.upstream.framing import ChunkedBodyError, TruncatedFrameError

_READ_SIZE = 65536
_LINE_LIMIT = 16 * 1024 * 1024  # one event longer than this is no chat chunk


class RelayStream:
    """Iterate for the events; close() drops the upstream connection at once (the client left); usage_so_far():
    the last usage the upstream reported (EventStream's fallback for the access log and the limits)."""

    def __init__(self, response: requests.Response):
        self._response = response
        self._body = BodyPieces(response)
        self._usage: dict | None = None

    def __iter__(self) -> Iterator[dict]:
        for batch in self.batches():
            for event, _data in batch:
                yield event

    def batches(self) -> Iterator[list[tuple[dict, bytes | None]]]:
        """The events of each read from the upstream, together: (event, its `data:` JSON as received, or None
        when the event was changed), so that EventStream writes them in one write and need not encode again
        an event that passes unchanged."""
        try:
            yield from self._batches()
        except (requests.Timeout, TimeoutError, socket.timeout):
            raise UpstreamError(TIMEOUT, "The upstream stopped sending in time.", upstream=UPSTREAM) from None
        except (requests.RequestException, OSError, http.client.HTTPException, ChunkedBodyError,
                TruncatedFrameError):
            raise _broken() from None

    def usage_so_far(self) -> dict | None:
        return self._usage

    def close(self) -> None:
        drop_connection(self._response)

    def _batches(self) -> Iterator[list[tuple[dict, bytes | None]]]:
        """Each read's `data:` lines' JSON objects, until `data: [DONE]`. Other lines (comments, event:, id:)
        are skipped: OpenAI-compatible servers put one JSON object on one data line."""
        pending = b""
        for piece in self._pieces():
            pending += piece
            if b"\n" not in piece:
                if len(pending) > _LINE_LIMIT:
                    raise UpstreamError(BAD_RESPONSE, "The upstream sent an event too long.", upstream=UPSTREAM)
                continue
            *lines, pending = pending.split(b"\n")
            batch = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    if batch:
                        yield batch
                    self._release()
                    return
                batch.append(self._event(data))
            if batch:
                yield batch
        raise _broken()

    def _event(self, data: bytes) -> tuple[dict, bytes | None]:
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
                return event, None
        return event, data

    def _pieces(self) -> Iterator[bytes]:
        """The body as it arrives. A chunked body: every byte already received in one piece
        (app.upstream.client.BodyPieces), so the events an upstream sent while the gateway was busy come as one
        batch. Otherwise http.client's read1 returns what is there rather than wait for a full buffer, as
        iter_content would for a body with a Content-Length."""
        if self._body.chunked:
            yield from self._body
            return
        raw = self._response.raw
        message = getattr(raw, "_fp", None)
        if not isinstance(message, http.client.HTTPResponse) or raw.headers.get("content-encoding"):
            yield from self._response.iter_content(chunk_size=None)  # encoded, or a test's fake
            return
        while data := message.read1(_READ_SIZE):
            yield data

    def _release(self) -> None:
        """At [DONE] the connection goes back to its pool once the body's end is read (it usually follows
        [DONE] at once: read if it is already there, without waiting), else it is dropped."""
        try:
            if self._body.read_end_if_arrived():
                return
            raw = self._response.raw
            raw.release_conn() if raw.isclosed() else self._response.close()
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
