"""FastChat's worker stream framing: JSON objects each followed by one NUL byte, arriving in arbitrary chunks."""
from __future__ import annotations

from collections.abc import Iterable, Iterator


class TruncatedFrameError(ValueError):
    """The stream ended inside a frame (bytes after the last NUL)."""


def iter_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield each non-empty NUL-terminated frame, whatever the chunk boundaries.

    Pending pieces are joined only when their frame completes, so the work is linear in the bytes received.
    Raises TruncatedFrameError when non-blank bytes follow the last NUL at the end of the stream.
    """
    pending: list[bytes] = []
    for chunk in chunks:
        if b"\0" not in chunk:
            if chunk:
                pending.append(chunk)
            continue
        parts = chunk.split(b"\0")
        pending.append(parts[0])
        first = b"".join(pending)
        if first:
            yield first
        for part in parts[1:-1]:
            if part:
                yield part
        pending = [parts[-1]] if parts[-1] else []
    rest = b"".join(pending)
    if rest.strip():
        raise TruncatedFrameError(f"stream ended inside a frame ({len(rest)} bytes after the last NUL)")
