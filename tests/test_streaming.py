"""SSE encoding and the guarantee that matters most: the worker stream is closed however the response ends."""
import json
import threading
import time

import pytest

from app.serving.interleave import interleave
from app.observability import RequestRecord
from app.streaming import EventStream, NamedEvents
from app.upstream.errors import UpstreamError


class Source:
    """A chunk source that records whether it was closed."""

    def __init__(self, items, fail_with=None):
        self.items = list(items)
        self.fail_with = fail_with
        self.closed = False

    def __iter__(self):
        yield from self.items
        if self.fail_with:
            raise self.fail_with

    def close(self):
        self.closed = True


def generator_over(source):
    def chunks():
        try:
            yield from source
        finally:
            source.close()
    return chunks()


def decode(events):
    return [e.decode() for e in events]


def test_events_are_data_lines_then_done():
    events = decode(EventStream(iter([{"a": 1}, {"b": "é"}]), include_usage=False))
    assert events == ['data: {"a":1}\n\n', 'data: {"b":"é"}\n\n', "data: [DONE]\n\n"]


def test_the_usage_chunk_is_sent_only_when_asked_for():
    chunks = [{"choices": [{"delta": {"content": "a"}}]}, {"choices": [], "usage": {"prompt_tokens": 1}}]
    assert len(list(EventStream(iter(chunks), include_usage=False))) == 2
    assert len(list(EventStream(iter(chunks), include_usage=True))) == 3


def test_error_mid_stream_is_an_error_event_then_done_and_the_source_is_closed():
    source = Source([{"a": 1}], fail_with=UpstreamError("worker_error", "boom", error_code=50001))
    events = decode(EventStream(generator_over(source), include_usage=False))
    assert events[-1] == "data: [DONE]\n\n"
    error = json.loads(events[-2][len("data: "):])
    assert error["error"]["message"] == "boom" and error["code"] == 50001
    assert source.closed


def test_client_disconnect_closes_the_source_without_yielding_more():
    source = Source([{"i": i} for i in range(10)])
    body = EventStream(generator_over(source), include_usage=False)
    assert next(iter(body)).startswith(b"data: ")
    body.close()  # what the WSGI server does when the client has gone
    assert source.closed
    assert list(body) == []


def test_close_before_iteration_started_still_closes_the_source():
    source = Source([{"i": 1}])
    EventStream(source, include_usage=False).close()
    assert source.closed


class NamedSource(Source):
    """A Responses event source: its failure events, and the chat usage it learned."""

    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}

    def failure(self, error):
        return [{"type": "response.failed"}, {"type": "error", "message": error.message}]


def test_named_events_have_an_event_line_and_no_done():
    source = NamedSource([{"type": "response.created", "a": 1}, {"type": "response.completed", "b": "é"}])
    events = decode(EventStream(source, framing=NamedEvents(source)))
    assert events == ['event: response.created\ndata: {"type":"response.created","a":1}\n\n',
                      'event: response.completed\ndata: {"type":"response.completed","b":"é"}\n\n']


def test_a_named_event_stream_ends_a_failure_with_its_sources_events_and_is_closed():
    source = NamedSource([{"type": "response.created"}],
                         fail_with=UpstreamError("worker_error", "boom", error_code=50001))
    events = decode(EventStream(generator_over(source), framing=NamedEvents(source)))
    assert [event.split("\n")[0] for event in events] == ["event: response.created", "event: response.failed",
                                                          "event: error"]
    assert json.loads(events[-1].split("\n")[1][len("data: "):])["message"] == "boom"
    assert source.closed


def test_a_named_event_stream_records_first_output_and_usage():
    record = RequestRecord(request_id="r", route="/v1/responses", method="POST", remote=None)
    source = NamedSource([{"type": "response.created"}, {"type": "response.output_text.delta"},
                          {"type": "response.completed"}])
    list(EventStream(source, record=record, framing=NamedEvents(source)))
    assert record.time_to_first_token is not None and record.usage == NamedSource.usage and record.stream


def test_a_named_event_stream_closes_its_source_when_the_client_leaves():
    source = NamedSource([{"type": "response.created"}, {"type": "response.in_progress"}])
    body = EventStream(generator_over(source), framing=NamedEvents(source))
    assert next(iter(body)).startswith(b"event: response.created")
    body.close()
    assert source.closed and list(body) == []


def test_interleave_yields_from_all_sources_concurrently():
    gate = threading.Event()

    def slow():
        yield "slow-1"
        gate.wait(5)
        yield "slow-2"

    def fast():
        yield "fast-1"
        yield "fast-2"
        gate.set()

    seen = list(interleave([slow(), fast()]))
    assert sorted(seen) == [(0, "slow-1"), (0, "slow-2"), (1, "fast-1"), (1, "fast-2")]
    assert seen[-1] == (0, "slow-2")  # the fast source did not wait for the slow one


def test_interleave_raises_the_first_failure():
    def broken():
        yield 1
        raise UpstreamError("bad_response", "cut")

    with pytest.raises(UpstreamError):
        list(interleave([iter([1, 2]), broken()]))


def test_interleave_stops_its_readers_when_closed():
    produced = []

    def endless(tag):
        for i in range(10_000):
            produced.append(tag)
            yield i

    merged = interleave([endless("a"), endless("b")])
    next(merged)
    merged.close()
    time.sleep(0.3)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count < 20_000
