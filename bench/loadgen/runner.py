"""Running a load: closed-loop clients over their own connections, or many streams held open at once."""
from __future__ import annotations

import asyncio
import collections
import resource
import time
from collections.abc import Callable

from bench.loadgen.connection import Connection, ProtocolError
from bench.loadgen.stats import dist_ms, measured_seconds, summarize
from bench.loadgen.targets import Target


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (children inherit it); return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY or (want != resource.RLIM_INFINITY and soft >= want):
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return soft, hard
    return resource.getrlimit(resource.RLIMIT_NOFILE)



async def _one(conn: Connection, target: Target, timeout: float) -> tuple:
    handler = target.handler()
    t0 = time.perf_counter()
    error = None
    try:
        async with asyncio.timeout(timeout):
            status = await conn.request(target.raw, handler)
        if status != 200:
            error = f"http_{status}"
        else:
            error = handler.finish()
    except TimeoutError:
        error = "timeout"
        conn.close()
    except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
        error = f"conn:{type(exc).__name__}"
        conn.close()
    except asyncio.CancelledError:
        conn.close()
        raise
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        error = f"exc:{type(exc).__name__}"
        conn.close()
    return (t0, handler.ttft, time.perf_counter(), error, getattr(handler, "events", 0),
            getattr(handler, "chunks", 0))


async def _client(conn: Connection, target: Target, budget: list, deadline: float, timeout: float,
                  records: list | None) -> None:
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        record = await _one(conn, target, timeout)
        if records is not None:
            records.append(record)
        if record[3] is not None and record[3].startswith("conn:"):
            await asyncio.sleep(0.01)  # do not spin on a refused connection


async def run_load_async(target: Target, concurrency: int, max_requests: int, max_seconds: float, *,
                         warmup_requests: int = 0, warmup_seconds: float = 2.0, timeout: float = 30.0,
                         on_measure_start: Callable[[], None] | None = None, raw: bool = False):
    """Closed loop: ``concurrency`` clients on their own keep-alive connections, until ``max_requests`` have
    been sent or ``max_seconds`` have passed (requests in flight then still complete, bounded by ``timeout``).
    A warm-up on the same connections comes first and is not counted. Returns a LoadResult, or with ``raw``
    the (records, measured seconds) to summarize later with others."""
    conns = [Connection(*target.addresses[i % len(target.addresses)]) for i in range(concurrency)]
    try:
        await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
        if warmup_requests > 0:
            budget = [max(warmup_requests, concurrency)]
            deadline = time.perf_counter() + warmup_seconds
            await asyncio.gather(*(_client(c, target, budget, deadline, timeout, None) for c in conns))
        if on_measure_start is not None:
            on_measure_start()
        records: list[tuple] = []
        budget = [max_requests]
        started = time.perf_counter()
        deadline = started + max_seconds
        await asyncio.gather(*(_client(c, target, budget, deadline, timeout, records) for c in conns))
        if raw:
            return records, measured_seconds(records, started)
        result = summarize(records, measured_seconds(records, started), target.stream)
        result["concurrency"] = concurrency
        return result
    finally:
        for c in conns:
            c.close()


def run_load(target: Target, concurrency: int, max_requests: int, max_seconds: float, **kwargs):
    return asyncio.run(run_load_async(target, concurrency, max_requests, max_seconds, **kwargs))


class HoldResult(dict):
    """streams, ok, errors, error_kinds, peak_concurrent (streams between first token and end at once),
    all_held (every stream had its first token before any stream ended), ttft_ms, duration_ms, elapsed_s."""


async def run_hold_async(target: Target, streams: int, *, timeout: float = 120.0, connect_timeout: float = 30.0,
                         sampler: Callable[[], None] | None = None, sample_interval: float = 0.2,
                         connect_batch: int = 256) -> HoldResult:
    """Open ``streams`` connections, then start one stream on each at the same moment and read them all."""
    conns = [Connection(*target.addresses[i % len(target.addresses)]) for i in range(streams)]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            sampler()
            try:
                await asyncio.wait_for(stop.wait(), sample_interval)
            except TimeoutError:
                pass

    sampler_task = asyncio.create_task(sample()) if sampler is not None else None
    try:
        t_connect = time.perf_counter()
        connect_errors: collections.Counter = collections.Counter()
        for i in range(0, streams, connect_batch):
            batch = conns[i:i + connect_batch]
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(c.connect(), connect_timeout) for c in batch), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    connect_errors[f"connect:{type(outcome).__name__}"] += 1
        connect_s = time.perf_counter() - t_connect
        started = time.perf_counter()
        records = await asyncio.gather(*(_one(c, target, timeout) for c in conns if c.open))
        records = list(records) + [(started, None, started, kind, 0, 0)
                                   for kind, count in connect_errors.items() for _ in range(count)]
    finally:
        stop.set()
        if sampler_task is not None:
            await sampler_task
        for c in conns:
            c.close()
    ok = [r for r in records if r[3] is None]
    errors = collections.Counter(r[3] for r in records if r[3] is not None)
    # Streams open at once: +1 at the first token, -1 at the end.
    marks = sorted([(r[1], 1) for r in ok if r[1] is not None] + [(r[2], -1) for r in ok if r[1] is not None],
                   key=lambda m: (m[0], m[1]))
    running = peak = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    last_first_token = max((r[1] for r in ok if r[1] is not None), default=None)
    first_end = min((r[2] for r in ok), default=None)
    return HoldResult(
        streams=streams, ok=len(ok), errors=sum(errors.values()), error_kinds=dict(errors),
        peak_concurrent=peak,
        all_held=bool(ok) and len(ok) == streams and last_first_token is not None and last_first_token < first_end,
        connect_s=round(connect_s, 3),
        elapsed_s=round(max((r[2] for r in records), default=started) - started, 3),
        ttft_ms=dist_ms([r[1] - r[0] for r in ok if r[1] is not None]),
        duration_ms=dist_ms([r[2] - r[0] for r in ok]),
    )


def run_hold(target: Target, streams: int, **kwargs) -> HoldResult:
    return asyncio.run(run_hold_async(target, streams, **kwargs))
