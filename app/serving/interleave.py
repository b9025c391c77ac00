"""Reading several worker streams at once, so n > 1 choices stream side by side instead of one after another."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def interleave(sources: list[Iterable[T]]) -> Iterator[tuple[int, T]]:
    """Yield (source index, item) in arrival order; the first exception from any source is raised.

    One reader thread per source (WSGI offers no event loop; under gevent these are greenlets). Closing this
    generator stops the readers from handing over more items; closing the sources themselves, which unblocks
    readers waiting on a socket, is the caller's job.
    """
    if len(sources) == 1:
        yield from ((0, item) for item in sources[0])
        return
    handoff: queue.Queue = queue.Queue(maxsize=64)
    stopped = threading.Event()

    def put(entry) -> bool:
        while not stopped.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(index: int, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not put((index, item, None)):
                    return
            put((index, _END, None))
        except BaseException as exc:  # handed to the consumer, which raises it in the request's thread
            put((index, None, exc))

    for index, source in enumerate(sources):
        threading.Thread(target=read, args=(index, source), daemon=True, name=f"stream-reader-{index}").start()
    remaining = len(sources)
    try:
        while remaining:
            index, item, exc = handoff.get()
            if exc is not None:
                raise exc
            if item is _END:
                remaining -= 1
                continue
            yield index, item
    finally:
        stopped.set()
