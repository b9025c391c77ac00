"""Server-sent events: encode event dicts as their framing says (chat and text completions: `data:` lines ended by
[DONE]; the Responses API: named events), turn a failure mid-stream into the framing's error events, and always
close the source (which closes the worker streams) however the response ends.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Protocol

import orjson
from flask import Response

from app import lifecycle
from app.error_handlers import as_api_error
from app.errors import ApiError
from app.observability import RequestRecord
from app.serving.usage import usage_so_far

DONE = b"data: [DONE]\n\n"
# For what orjson refuses (integers beyond 64 bits, non-string keys): built once, json.dumps with options builds
# one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _json(data: dict) -> bytes:
    """Compact UTF-8 JSON, as json.dumps(ensure_ascii=False, separators=(",", ":")) writes it, in a tenth of its
    time per chunk (orjson). One difference: a NaN or infinite float is null rather than the NaN that no JSON
    parser of a client accepts."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return _JSON.encode(data).encode()


def encode_event(data: dict) -> bytes:
    return b"data: " + _json(data) + b"\n\n"


def encode_named_event(data: dict) -> bytes:
    """`event: <its type>` then its data: the framing of the Responses API's events."""
    return b"event: " + data["type"].encode() + b"\ndata: " + _json(data) + b"\n\n"


class Framing:
    """How chat and text completion chunks are streamed: each as a `data:` event, the serving layer's final usage
    chunk (choices == []) only when the client asked for it with include_usage, a failure as one Error body event,
    then data: [DONE]."""

    end = DONE
    encode = staticmethod(encode_event)

    def __init__(self, include_usage: bool = False):
        self.include_usage = include_usage

    def observe(self, chunk: dict, record: RequestRecord | None) -> bool:
        """Note first text and usage for the record; return whether the chunk goes to the client."""
        choices = chunk.get("choices")
        if choices == [] and "usage" in chunk:
            if record is not None:
                record.usage = chunk["usage"]
            return self.include_usage
        delta = (choices[0].get("delta") or {}) if choices else {}
        if record is not None and choices and (choices[0].get("text") or delta.get("content")
                                               or delta.get("tool_calls")):
            record.first_token()
        return True

    def failure(self, error: ApiError) -> list[dict]:
        return [error.body()]


class EventSource(Protocol):
    """What NamedEvents needs of its source besides its events: the chat usage once known, the ending events of
    a failure."""

    usage: dict | None

    def failure(self, error: ApiError) -> list[dict]: ...


class NamedEvents(Framing):
    """The Responses API's streams: `event: <type>` + `data:` per event, no [DONE] (the last event says the stream
    is over), a failure ended as its source says."""

    end = b""
    encode = staticmethod(encode_named_event)
    FIRST_OUTPUT = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})
    LAST = frozenset({"response.completed", "response.incomplete"})

    def __init__(self, source: EventSource):
        super().__init__()
        self._source = source

    def observe(self, event: dict, record: RequestRecord | None) -> bool:
        if record is not None:
            if event["type"] in self.FIRST_OUTPUT:
                record.first_token()
            elif event["type"] in self.LAST:
                record.usage = self._source.usage
        return True

    def failure(self, error: ApiError) -> list[dict]:
        return self._source.failure(error)


class EventStream:
    """The SSE body of a response, as the WSGI server consumes it.

    When the client goes away the server calls close(): the source (and so the worker streams) is closed at once,
    even if iteration never started, and nothing more is yielded. framing: chat's Framing(include_usage) unless
    given.
    """

    def __init__(self, chunks: Iterator[dict], include_usage: bool = False, record: RequestRecord | None = None,
                 framing: Framing | None = None):
        self._chunks = chunks
        self._framing = framing or Framing(include_usage)
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
        framing, record = self._framing, self._record
        encode, observe = framing.encode, framing.observe
        batches = getattr(self._chunks, "batches", None)
        try:
            try:
                yield from self._batched(batches()) if batches is not None else self._each()
            except Exception as exc:  # the status is already sent: the SDK raises on an `error` event instead
                error = as_api_error(exc)
                if record is not None:
                    record.stream_error = error.code or error.type
                for event in framing.failure(error):
                    yield encode(event)
            if framing.end:
                yield framing.end
        finally:
            self._finish()

    def _each(self) -> Iterator[bytes]:
        framing, record = self._framing, self._record
        encode, observe = framing.encode, framing.observe
        for chunk in self._chunks:
            if observe(chunk, record):
                yield encode(chunk)
            _stop_if_stopping()

    def _batched(self, batches: Iterator[list[tuple[dict, bytes | None]]]) -> Iterator[bytes]:
        """A relayed stream (app.routes.stream.RelayStream.batches): the events that arrived together are
        written together, and an event passed on unchanged is sent as its upstream's JSON, not encoded again."""
        framing, record = self._framing, self._record
        encode, observe = framing.encode, framing.observe
        as_received = encode is encode_event
        for batch in batches:
            out = [b"data: " + data + b"\n\n" if as_received and data is not None else encode(chunk)
                   for chunk, data in batch if observe(chunk, record)]
            if out:
                yield b"".join(out)
            _stop_if_stopping()

    def _finish(self) -> None:
        if self._finished:  # close() and the generator's own finally both lead here
            return
        self._finished = True
        if self._record is not None and self._record.usage is None:  # the client left before the usage chunk
            self._record.usage = self._usage_so_far()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._record is not None:
            self._record.stream_finished()


    def _usage_so_far(self) -> dict | None:
        """What the source generated until now: a Responses stream says it, a chunk generator answers StreamCut."""
        so_far = getattr(self._chunks, "usage_so_far", None)
        return so_far() if so_far is not None else usage_so_far(self._chunks)


def _stop_if_stopping() -> None:
    stopping = lifecycle.stream_error()
    if stopping is not None:  # the process stops: end the stream before gunicorn kills it
        raise stopping


def sse_response(chunks: Iterator[dict], include_usage: bool, record: RequestRecord | None = None,
                 framing: Framing | None = None) -> Response:
    return Response(EventStream(chunks, include_usage, record, framing), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
