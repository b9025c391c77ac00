"""FastChat's worker stream framing: JSON objects each followed by one NUL byte, arriving in arbitrary chunks."""
from __future__ import annotations

from collections.abc import Iterable, Iterator


FRAME_LIMIT = 16 * 1024 * 1024  # one frame longer than this is no generation state: refused, not buffered


class TruncatedFrameError(ValueError):
    """The stream ended inside a frame (bytes after the last NUL)."""


class FrameTooLongError(ValueError):
    """A frame grew past FRAME_LIMIT without its NUL."""


def iter_frame_batches(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Yield, for each chunk that completes frames, the non-empty frames it completes.

    Pending pieces are joined only when their frame completes, so the work is linear in the bytes received.
    Raises TruncatedFrameError when non-blank bytes follow the last NUL at the end of the stream, FrameTooLongError
    when a frame grows past FRAME_LIMIT.
    """
    pending: list[bytes] = []
    size = 0  # of the pending pieces
    for chunk in chunks:
        if b"\0" not in chunk:
            if chunk:
                pending.append(chunk)
                size += len(chunk)
                if size > FRAME_LIMIT:
                    raise FrameTooLongError(f"a frame longer than {FRAME_LIMIT} bytes")
            continue
        parts = chunk.split(b"\0")
        pending.append(parts[0])
        parts[0] = b"".join(pending)
        pending = [parts.pop()] if parts[-1] else []
        size = len(pending[0]) if pending else 0
        batch = [part for part in parts if part]
        if batch:
            yield batch
    rest = b"".join(pending)
    if rest.strip():
        raise TruncatedFrameError(f"stream ended inside a frame ({len(rest)} bytes after the last NUL)")


class ChunkedBodyError(ValueError):
    """The bytes are not an HTTP/1.1 chunked body."""


class ChunkedBody:
    """Decodes an HTTP/1.1 chunked body (RFC 9112 section 7.1) fed in arbitrary pieces: feed() returns the data
    bytes the piece completes, however many chunks that is, and `done` turns true after the last chunk and its
    trailer section. Chunk extensions and trailer fields are read past, as http.client does."""

    _MAX_LINE = 4096  # a size line or trailer field longer than this is no chunked body

    def __init__(self) -> None:
        self._rest = b""  # received bytes not decoded yet
        self._left = 0  # data bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk's data is due
        self._trailer = False  # after the last chunk: trailer fields until an empty line
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data if self._rest else data
        out = []
        pos, end = 0, len(buf)
        while not self.done:
            if self._left:
                take = min(self._left, end - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ChunkedBodyError("no CRLF after a chunk's data")
                pos += 2
                self._crlf = False
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                if end - pos > self._MAX_LINE:
                    raise ChunkedBodyError("a chunk size line or trailer field too long")
                break
            line = buf[pos:line_end]
            pos = line_end + 2
            if self._trailer:
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ChunkedBodyError(f"invalid chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ChunkedBodyError(f"invalid chunk size line {line[:40]!r}")
            self._left = size
            self._trailer = size == 0
        self._rest = buf[pos:] if pos < end and not self.done else b""
        return b"".join(out) if len(out) != 1 else out[0]
