"""Server-sent events: encode chunk dicts, end with [DONE], turn a failure mid-stream into an error event,
and always close the source (which closes the worker streams) however the response ends.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response

from app.error_handlers import as_api_error
from app.observability import RequestRecord

DONE = b"data: [DONE]\n\n"
# One encoder for every event: json.dumps with options builds a new one per call, which a chunk cannot afford.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_event(data: dict) -> bytes:
    return b"data: " + _JSON.encode(data).encode() + b"\n\n"


class EventStream:
    """The SSE body of a response, as the WSGI server consumes it.

    When the client goes away the server calls close(): the chunk source (and so the worker streams) is closed
    at once, even if iteration never started, and nothing more is yielded. The serving layer always ends with a
    usage chunk (choices == []); it is sent only when the client asked for it with include_usage.
    """

    def __init__(self, chunks: Iterator[dict], include_usage: bool, record: RequestRecord | None = None):
        self._chunks = chunks
        self._include_usage = include_usage
        self._record = record
        self._finished = False
        self._events = self._generate()
        if record is not None:
            record.stream_started()

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._finish()

    def _generate(self) -> Iterator[bytes]:
        try:
            try:
                for chunk in self._chunks:
                    if self._observe(chunk):
                        yield encode_event(chunk)
            except Exception as exc:  # the status is already sent: the SDK raises on an `error` event instead
                error = as_api_error(exc)
                if self._record is not None:
                    self._record.stream_error = error.code or error.type
                yield encode_event(error.body())
            yield DONE
        finally:
            self._finish()

    def _observe(self, chunk: dict) -> bool:
        """Note first text and usage for the record; return whether the chunk goes to the client."""
        choices = chunk.get("choices")
        if choices == [] and "usage" in chunk:
            if self._record is not None:
                self._record.usage = chunk["usage"]
            return self._include_usage
        delta = (choices[0].get("delta") or {}) if choices else {}
        if self._record is not None and choices and (choices[0].get("text") or delta.get("content")
                                                     or delta.get("tool_calls")):
            self._record.first_token()
        return True

    def _finish(self) -> None:
        if self._finished:  # close() and the generator's own finally both lead here
            return
        self._finished = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._record is not None:
            self._record.stream_finished()


def sse_response(chunks: Iterator[dict], include_usage: bool, record: RequestRecord | None = None) -> Response:
    return Response(EventStream(chunks, include_usage, record), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
