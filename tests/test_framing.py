import json

import pytest

from app.upstream.framing import (ChunkedBody, ChunkedBodyError, FrameTooLongError, TruncatedFrameError,
                                 iter_frame_batches)


def iter_frames(chunks):
    """Every frame, whatever batch a chunk completed it in."""
    for batch in iter_frame_batches(chunks):
        yield from batch

BODY = b'{"text": "He", "error_code": 0}\0{"text": "Hello", "error_code": 0}\0{"text": "Hello!", "error_code": 0}\0'


def test_frames_split_on_nul():
    assert [json.loads(f)["text"] for f in iter_frames([BODY])] == ["He", "Hello", "Hello!"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 31, 64])
def test_frames_are_the_same_whatever_the_chunk_boundaries(size):
    chunks = [BODY[i:i + size] for i in range(0, len(BODY), size)]
    assert list(iter_frames(chunks)) == list(iter_frames([BODY]))


def test_every_split_position_gives_the_same_frames():
    expected = list(iter_frames([BODY]))
    for cut in range(len(BODY) + 1):
        assert list(iter_frames([BODY[:cut], BODY[cut:]])) == expected


def test_empty_frames_are_skipped():
    assert list(iter_frames([b"\0\0a\0\0\0b\0"])) == [b"a", b"b"]


def test_bytes_after_the_last_nul_are_an_error_not_silently_dropped():
    with pytest.raises(TruncatedFrameError):
        list(iter_frames([b'{"text": "a"}\0{"text": "ab']))


def test_a_non_200_body_without_nul_is_an_error():
    with pytest.raises(TruncatedFrameError):
        list(iter_frames([b"Internal Server Error"]))


def test_trailing_whitespace_is_not_a_frame():
    assert list(iter_frames([b'{"a": 1}\0\n'])) == [b'{"a": 1}']


def test_frames_are_yielded_as_soon_as_complete():
    seen = []

    def chunks():
        yield b'{"a": 1}\0{"b"'
        seen.append("second chunk requested")
        yield b': 2}\0'

    frames = iter_frames(chunks())
    assert next(frames) == b'{"a": 1}'
    assert seen == []
    assert next(frames) == b'{"b": 2}'


def test_frames_completed_by_one_chunk_come_as_one_batch():
    assert list(iter_frame_batches([b"a\0b", b"c\0d\0", b"e"[:0]])) == [[b"a"], [b"bc", b"d"]]


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


CHUNKED = chunked(b'{"text": "He"}\0', b'{"text": "Hello"}\0', b'{"text": "Hello!"}\0')


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 1000])
def test_a_chunked_body_decodes_the_same_whatever_the_pieces(size):
    body = ChunkedBody()
    data = b"".join(body.feed(CHUNKED[i:i + size]) for i in range(0, len(CHUNKED), size))
    assert data == b'{"text": "He"}\0{"text": "Hello"}\0{"text": "Hello!"}\0'
    assert body.done


def test_a_chunked_body_is_done_only_after_its_last_chunk_and_trailer():
    body = ChunkedBody()
    whole = chunked(b"abc", trailer=b"X-Trailer: 1\r\n")
    assert body.feed(whole[:-2]) == b"abc"
    assert not body.done
    body.feed(whole[-2:])
    assert body.done


def test_chunk_extensions_are_read_past():
    body = ChunkedBody()
    assert body.feed(b"3;name=value\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert body.done


@pytest.mark.parametrize("data", [b"zz\r\nabc\r\n", b"-3\r\nabc\r\n", b"3\r\nabcXY", b"1" * 5000])
def test_what_is_no_chunked_body_raises(data):
    with pytest.raises(ChunkedBodyError):
        ChunkedBody().feed(data)


def test_a_frame_growing_past_the_limit_is_refused_before_it_is_buffered(monkeypatch):
    monkeypatch.setattr("app.upstream.framing.FRAME_LIMIT", 10)
    assert list(iter_frame_batches([b"12345", b"67890\0", b"1234567890\0"])) == [[b"1234567890"], [b"1234567890"]]
    frames = iter_frame_batches([b"123\0" + b"456789", b"01234"])
    assert next(frames) == [b"123"]
    with pytest.raises(FrameTooLongError):
        next(frames)
