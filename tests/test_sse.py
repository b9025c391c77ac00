"""harness/sse.py: the one SSE reader of the tests and the load generator."""
import re

import pytest

from harness import sse
from harness.sse import DONE, Reader, SSEError

BODY = b'data: {"a":1}\n\ndata: {"b":"\xc3\xa9"}\n\ndata: [DONE]\n\n'


def read(chunks, lenient=False) -> list[bytes]:
    """Feed `chunks` one by one, then close; every payload returned."""
    reader = Reader(lenient)
    payloads = [payload for chunk in chunks for payload in reader.feed(chunk)]
    reader.close()
    return payloads


def every_split(body: bytes):
    """`body` cut in two at every position, and in single bytes."""
    for i in range(len(body) + 1):
        yield [body[:i], body[i:]]
    yield [body[i:i + 1] for i in range(len(body))]


# --- whole bodies -----------------------------------------------------------------------------------------------

def test_parse_returns_the_payloads_as_text_the_last_one_done():
    assert sse.parse(BODY) == ['{"a":1}', '{"b":"é"}', "[DONE]"]


def test_parse_json_decodes_every_event_but_the_sentinel():
    assert sse.parse_json(BODY) == [{"a": 1}, {"b": "é"}, "[DONE]"]


def test_only_done_is_a_valid_stream():
    assert sse.parse(b"data: [DONE]\n\n") == ["[DONE]"]


def test_a_payload_keeps_its_spaces_after_the_one_after_the_colon():
    assert sse.parse(b"data:  x \n\ndata: [DONE]\n\n") == [" x ", "[DONE]"]


@pytest.mark.parametrize("body, message", [
    (b"", "does not end with data: [DONE]"),
    (b'data: {"a":1}\n\n', "does not end with data: [DONE]"),
    (b'data: {"a":1}\n\ndata: [DONE]', "does not end with a blank line"),
    (b'data: {"a":1}\n\ndata: [DONE]\n', "does not end with a blank line"),
    (b'data: {"a":1}\n\ndata: [DONE]\n\n\n', "does not end with a blank line"),
    (b'data: {"a":1}\n\ndata: [DONE]\n\ndata: {"b":2}\n\n', "an event after data: [DONE]"),
    (b"data: [DONE]\n\ndata: [DONE]\n\n", "data: [DONE] sent more than once"),
    (b"data: [DONE]\n\ntrailing", "does not end with a blank line"),
    (b'data: {"a":\ndata: 1}\n\ndata: [DONE]\n\n', "not a single-line `data: ` event"),
    (b'data:{"a":1}\n\ndata: [DONE]\n\n', "not a single-line `data: ` event"),
    (b'event: x\ndata: {"a":1}\n\ndata: [DONE]\n\n', "not a single-line `data: ` event"),
    (b': keep-alive\n\ndata: [DONE]\n\n', "not a single-line `data: ` event"),
    (b'data: {"a":1}\n\n\n\ndata: [DONE]\n\n', "not a single-line `data: ` event"),
    (b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n', "CR in the stream"),
    (b"data: \xff\n\ndata: [DONE]\n\n", "not UTF-8"),
], ids=["empty", "no-done", "no-final-blank-line", "one-newline-only", "three-newlines", "data-after-done",
        "two-dones", "bytes-after-done", "multi-line-event", "no-space", "event-field", "comment", "empty-event",
        "crlf", "not-utf8"])
def test_strict_mode_refuses_with_a_message(body, message):
    with pytest.raises(SSEError, match=re.escape(message)):
        sse.parse(body)


def test_parse_json_refuses_an_event_that_is_not_json():
    with pytest.raises(SSEError, match="not JSON: '{nope'"):
        sse.parse_json(b"data: {nope\n\ndata: [DONE]\n\n")


def test_sse_error_is_a_value_error():
    assert issubclass(SSEError, ValueError)


# --- lenient mode ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n',
    b'data: {"a":1}\r\rdata: [DONE]\r\r',
    b'data:{"a":1}\n\ndata:[DONE]\n\n',
    b': a comment\ndata: {"a":1}\n: another\n\n: only a comment\n\ndata: [DONE]\n\n',
    b'\n\ndata: {"a":1}\n\n\n\n\ndata: [DONE]\n\n\n',
], ids=["crlf", "cr", "no-space", "comments", "extra-blank-lines"])
def test_lenient_mode_accepts_any_sse_framing(body):
    assert sse.parse(body, lenient=True) == ['{"a":1}', "[DONE]"]


def test_lenient_mode_joins_the_lines_of_a_multi_line_event():
    body = b'data: {"a":\ndata:  1}\ndata\n\ndata: [DONE]\n\n'
    assert sse.parse(body, lenient=True) == ['{"a":\n 1}\n', "[DONE]"]
    assert sse.parse_json(body, lenient=True) == [{"a": 1}, "[DONE]"]


@pytest.mark.parametrize("body, message", [
    (b'data: {"a":1}\n\n', "does not end with data: [DONE]"),
    (b'data: {"a":1}\r\n\r\ndata: [DONE]', "does not end with a blank line"),
    (b"data: [DONE]\n\ndata: [DONE]\n\n", "sent more than once"),
    (b'data: [DONE]\r\n\r\ndata: {"a":1}\r\n\r\n', "an event after data: [DONE]"),
    (b'event: x\ndata: {"a":1}\n\ndata: [DONE]\n\n', "not a data line: b'event: x'"),
    (b"id: 1\n\ndata: [DONE]\n\n", "not a data line"),
], ids=["no-done", "no-final-blank-line", "two-dones", "data-after-done", "event-field", "id-field"])
def test_lenient_mode_keeps_the_done_rules_and_refuses_other_fields(body, message):
    with pytest.raises(SSEError, match=re.escape(message)):
        sse.parse(body, lenient=True)


def test_lenient_mode_accepts_a_comment_after_done_and_an_unfinished_comment():
    assert sse.parse(b"data: [DONE]\n\n: bye\n\n: and", lenient=True) == ["[DONE]"]


# --- incremental reading ---------------------------------------------------------------------------------------

def test_feed_returns_each_event_when_its_blank_line_arrives():
    reader = Reader()
    assert reader.feed(b'data: {"a"') == []
    assert reader.feed(b":1}\n") == []
    assert reader.feed(b"\n") == [b'{"a":1}']
    assert not reader.done
    assert reader.feed(b'data: {"b":2}\n\ndata: [DO') == [b'{"b":2}']
    assert reader.feed(b"NE]\n\n") == [DONE]
    assert reader.done and reader.last == DONE
    reader.close()


@pytest.mark.parametrize("chunks", list(every_split(BODY)))
def test_events_split_anywhere_across_reads(chunks):
    assert read(chunks) == [b'{"a":1}', b'{"b":"\xc3\xa9"}', DONE]


CRLF_BODY = b'data: {"a":1}\r\n\r\n: c\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata: [DONE]\r\n\r\n'


@pytest.mark.parametrize("chunks", list(every_split(CRLF_BODY)))
def test_lenient_events_split_anywhere_even_inside_a_crlf(chunks):
    assert read(chunks, lenient=True) == [b'{"a":1}', b'{"b":\n2}', DONE]


def test_a_cr_at_the_end_of_a_read_is_a_line_end_in_lenient_mode():
    reader = Reader(lenient=True)
    assert reader.feed(b"data: [DONE]\r") == []
    assert reader.feed(b"\r") == [DONE]  # CR CR: two line ends, not one CRLF
    reader.close()


def test_close_refuses_an_unfinished_event_or_a_missing_done():
    reader = Reader()
    reader.feed(b'data: {"a":1}\n\ndata: [DONE]\n')
    with pytest.raises(SSEError, match="does not end with a blank line"):
        reader.close()
    reader = Reader()
    reader.feed(b'data: {"a":1}\n\n')
    with pytest.raises(SSEError, match=re.escape("""does not end with data: [DONE]; last event b'{"a":1}'""")):
        reader.close()


def test_feed_refuses_bad_framing_as_soon_as_the_event_is_complete():
    reader = Reader()
    assert reader.feed(b"event: x\n") == []
    with pytest.raises(SSEError, match="not a single-line"):
        reader.feed(b"\n")
    with pytest.raises(SSEError, match="CR in the stream"):
        Reader().feed(b"data: x\r\n")
