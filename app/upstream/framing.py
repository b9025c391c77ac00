"""FastChat's worker stream framing: JSON objects each followed by one NUL byte, arriving in arbitrary chunks."""
from __future__ import annotations

from collections.abc import Iterable, Iterator


class TruncatedFrameError(ValueError):
    """The stream ended inside a frame (bytes after the last NUL)."""


def iter_frame_batches(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Yield, for each chunk that completes frames, the non-empty frames it completes.

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
        parts[0] = b"".join(pending)
        pending = [parts.pop()] if parts[-1] else []
        batch = [part for part in parts if part]
        if batch:
            yield batch
    rest = b"".join(pending)
    if rest.strip():
        raise TruncatedFrameError(f"stream ended inside a frame ({len(rest)} bytes after the last NUL)")
