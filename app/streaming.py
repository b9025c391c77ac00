"""Server-sent events: encode chunk dicts, end with [DONE], turn a failure mid-stream into an error event,
and always close the source (which closes the worker streams) however the response ends.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response

from app.errors import as_api_error

DONE = b"data: [DONE]\n\n"


def encode_event(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse_events(chunks: Iterator[dict]) -> Iterator[bytes]:
    """The SSE body. When the client goes away the server closes this generator: `finally` closes the chunks
    (and so the worker streams) and never yields."""
    try:
        try:
            for chunk in chunks:
                yield encode_event(chunk)
        except Exception as exc:  # the status is already sent: the SDK raises on an `error` event instead
            yield encode_event(as_api_error(exc).body())
        yield DONE
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def sse_response(chunks: Iterator[dict]) -> Response:
    return Response(sse_events(chunks), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
