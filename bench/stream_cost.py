"""The gateway's CPU per relayed stream chunk and its time to first token, this tree against a baseline, side by
side in one run.

    .venv/bin/python -m bench.stream_cost                       # this tree against HEAD
    .venv/bin/python -m bench.stream_cost --baseline d986461    # ... against any commit
    .venv/bin/python -m bench.stream_cost --baseline this --gateway-env GUNICORN_WORKER_CLASS=gevent
                                                               # this tree twice, the first with other settings

Starts the benchmark's FastChat controller and FastChat-code workers (bench/stack.py; streamed chat, 64 tokens at
1 ms/token) and two gateways with their default production settings: this tree's and the baseline's (a commit's
`git archive` in a temporary folder run by the same virtualenv, or `this`: this tree again, for comparing
settings). Then, in interleaved rounds (the order rotates, so load from other work on the machine falls on every
target alike), a closed-loop streamed load at each concurrency on each gateway and on the workers directly, reading
every gunicorn process's CPU counters (psutil user + system, the master included) after the warm-up and after the
last response. Prints per target and concurrency: streams/s, time to first token p50 (all rounds), the gateway's
CPU µs per relayed content chunk (all rounds, and the least disturbed round), and the machine's other load. On a
shared machine a single `make bench` moves by 20-30 %; this is how issue 15's streaming changes are measured one by
one (README, Performance).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import benchmark, loadgen
from bench.baseline import BaselineGateway
from bench.report import log
from bench.stack import Stack
from harness.sampling import CpuMeter, Group

KIND, POOL = "fastchat-code", "stream"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="commit to compare with (default HEAD; this: this tree "
                                                           "again; none: no baseline)")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated (default 16,64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for this tree's gateway on top of its defaults (repeatable)")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the baseline's gateway on top of its defaults (repeatable)")
    parser.add_argument("--no-direct", action="store_true", help="skip the workers-direct target")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c]

    loadgen.raise_nofile_limit()
    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-stream-cost-"))
    stack = Stack(run_dir, dict(benchmark.PROFILES["full"]), benchmark.parse_env(args.gateway_env),
                  with_fastchat=False, kinds=(KIND,))
    baseline = None
    try:
        stack.start()
        payload, _ = stack.gateway_payload(KIND, POOL, True)
        targets = {"this tree": benchmark.make_target(stack, "gateway", KIND, POOL, True, payload)}
        groups = {"this tree": Group("this tree", [stack.gateway.proc.pid], children=True)}
        if args.baseline != "none":
            baseline = BaselineGateway(run_dir, args.baseline, stack.controller_url,
                                       benchmark.parse_env(args.baseline_env))
            name = f"baseline {args.baseline}"
            targets[name] = loadgen.Target(name, "openai", [("127.0.0.1", baseline.port)], "/v1/chat/completions",
                                           targets["this tree"].body, True)
            groups[name] = Group(name, [baseline.proc.pid], children=True)
        if not args.no_direct:
            targets["direct"] = benchmark.make_target(stack, "direct", KIND, POOL, True, payload)
        # The controller and workers too, so that "other" is only what else ran on the machine.
        meter = CpuMeter([*groups.values(), stack.groups["controller"], stack.groups[f"workers:{KIND}"]])
        names = list(targets)
        rows = {(name, c): {"records": [], "seconds": 0.0, "cpu": 0.0, "chunks": 0, "other": 0.0, "per_chunk": []}
                for name in names for c in levels}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for concurrency in levels:
                for name in order:
                    marks: dict = {}
                    records, elapsed = loadgen.run_load(
                        targets[name], concurrency, 10**6, args.seconds, warmup_requests=2 * concurrency,
                        warmup_seconds=1.0, raw=True,
                        on_measure_start=lambda: marks.setdefault("before", meter.snapshot()))
                    cpu = CpuMeter.delta(marks["before"], meter.snapshot())
                    row = rows[(name, concurrency)]
                    chunks = sum(r[5] for r in records)
                    row["records"] += records
                    row["seconds"] += elapsed
                    row["chunks"] += chunks
                    row["other"] += cpu["other"]
                    if name in groups:
                        row["cpu"] += cpu[name]
                        row["per_chunk"].append(1e6 * cpu[name] / max(chunks, 1))
                    summary = loadgen.summarize(records, elapsed, True)
                    log(f"round {round_ + 1} c={concurrency} {name}: {summary['rps']:.1f} streams/s, TTFT p50 "
                        f"{summary['ttft_ms']['p50']} ms, "
                        + (f"{row['per_chunk'][-1]:.1f} µs CPU/chunk, " if name in groups else "")
                        + f"{summary['errors']} errors")
        print("\n| target | concurrency | streams/s | TTFT p50 | CPU per chunk (least disturbed round) | CPU per stream "
              "| chunks/stream | errors | other CPU (cores) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for concurrency in levels:
            for name in names:
                row = rows[(name, concurrency)]
                summary = loadgen.summarize(row["records"], row["seconds"], True)
                cpu = (f"{1e6 * row['cpu'] / max(row['chunks'], 1):.1f} µs ({min(row['per_chunk']):.1f}; median "
                       f"{statistics.median(row['per_chunk']):.1f})" if row["per_chunk"] else "-")
                per_stream = f"{1e3 * row['cpu'] / max(summary['ok'], 1):.2f} ms" if row["per_chunk"] else "-"
                errors = summary["errors"] and f"{summary['errors']} {summary['error_kinds']}"
                print(f"| {name} | {concurrency} | {summary['rps']:.1f} | {summary['ttft_ms']['p50']} ms | {cpu} | "
                      f"{per_stream} | {summary['content_chunks_per_stream']} | {errors} | "
                      f"{row['other'] / row['seconds']:.2f} |")
        print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if baseline is not None:
            baseline.stop()
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
