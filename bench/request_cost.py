"""The gateway's CPU per non-streamed chat request, this tree against an earlier commit, side by side in one run.

    .venv/bin/python -m bench.request_cost                      # this tree against HEAD
    .venv/bin/python -m bench.request_cost --baseline d986461   # ... against any commit
    .venv/bin/python -m bench.request_cost --baseline none --fastchat   # this tree next to FastChat's server

Starts the benchmark's FastChat controller and FastChat-code workers (bench/stack.py, no streams measured) and two
gateways with their default production settings: this tree's and the baseline commit's (`git archive` into a
temporary folder, run by the same virtualenv), and with `--fastchat` FastChat's own API server. Then, in
interleaved rounds (the order rotates, so load from other work on the machine falls on every target alike), a
closed-loop non-streamed chat load (16 tokens) at each concurrency on each target, reading every gunicorn
process's CPU counters (psutil user + system, the master included) after the warm-up and after the last
response. Prints, per target and concurrency, requests/s and server CPU ms per request over all rounds, and the
machine's other load. Then each tree's app alone, called in one thread by bench/request_probe.py over the same
workers (no gunicorn, no thread handoffs, no GIL waits), the trees taking turns: its Python CPU per request, the
figure that moves least when other work shares the machine. Issue 15's per-request changes are measured with it (README, Performance).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import benchmark, loadgen
from bench.baseline import BaselineGateway
from bench.report import log
from bench.stack import MESSAGE, Stack
from harness.gateway import production_environ
from harness.procs import REPO_ROOT
from harness.sampling import CpuMeter, Group

KIND, POOL = "fastchat-code", "chat"


def probe(trees: dict[str, Path], controller: str, body: dict, rounds: int, requests: int) -> None:
    """Each tree's app alone in one thread (bench/request_probe.py), the trees taking turns: the Python cost."""
    figures: dict[str, list[float]] = {name: [] for name in trees}
    opcodes: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name, source in trees.items():
            out = subprocess.run(
                [sys.executable, str(Path(__file__).with_name("request_probe.py")), "--controller", controller,
                 "--body", json.dumps(body), "--requests", str(requests), "--rounds", "8"],
                env={**production_environ(), "PYTHONPATH": str(source)}, cwd=source, capture_output=True,
                text=True, timeout=600)
            if out.returncode != 0:
                raise SystemExit(f"probe of {name} failed: {out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if not result["app"].startswith(str(source)):
                raise SystemExit(f"probe of {name} imported {result['app']}, not the tree's app")
            figures[name] += result["cpu_ms_per_request"]
            opcodes[name].append(result["opcodes_per_request"])
            log(f"probe round {round_ + 1} {name}: {result['cpu_ms_per_request']} ms CPU/request, "
                f"{result['opcodes_per_request']} opcodes/request")
    # The least disturbed slice (min) is the steadiest figure on a shared machine; the median shows the spread.
    print("\n| app alone, one thread (request_probe) | CPU per request, min | median | max | Python opcodes per "
          "request |")
    print("|---|---|---|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {min(values):.3f} ms | {statistics.median(values):.3f} ms | {max(values):.3f} ms | "
              f"{statistics.median(opcodes[name]):,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="commit to compare with (default HEAD; none: no baseline)")
    parser.add_argument("--fastchat", action="store_true", help="measure FastChat's own API server too")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated (default 1,16; none: only the probe)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--probe-requests", type=int, default=400,
                        help="requests per probe round (bench/request_probe.py; 0: no probe)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for this tree's gateway on top of its defaults (repeatable)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c and c != "none"]

    loadgen.raise_nofile_limit()
    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-request-cost-"))
    stack = Stack(run_dir, dict(benchmark.PROFILES["full"]), benchmark.parse_env(args.gateway_env),
                  with_fastchat=args.fastchat, kinds=(KIND,))
    baseline = None
    try:
        stack.start()
        ports = {"this tree": stack.gateway.port}
        groups = {"this tree": Group("this tree", [stack.gateway.proc.pid], children=True)}
        if args.baseline != "none":
            baseline = BaselineGateway(run_dir, args.baseline, stack.controller_url)
            name = f"baseline {args.baseline}"
            ports[name] = baseline.port
            groups[name] = Group(name, [baseline.proc.pid], children=True)
        if args.fastchat:
            ports["fastchat"] = stack.fastchat.port
            groups["fastchat"] = Group("fastchat", [stack.fastchat.proc.pid])
        # The controller and workers too, so that "other" is only what else ran on the machine.
        meter = CpuMeter([*groups.values(), stack.groups["controller"], stack.groups[f"workers:{KIND}"]])
        spec = stack.pools[KIND][POOL]
        body = loadgen.chat_request(spec["model"], MESSAGE, spec["tokens"], False)
        names = list(ports)
        totals = {(name, c): {"ok": 0, "errors": 0, "seconds": 0.0, "cpu": 0.0, "other": 0.0,
                                  "best": float("inf")}
                  for name in names for c in levels}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for concurrency in levels:
                for name in order:
                    target = loadgen.Target(name, "openai", [("127.0.0.1", ports[name])], "/v1/chat/completions",
                                            body, False)
                    marks: dict = {}
                    records, elapsed = loadgen.run_load(
                        target, concurrency, 10**6, args.seconds, warmup_requests=max(100, 4 * concurrency),
                        warmup_seconds=1.0, raw=True,
                        on_measure_start=lambda: marks.setdefault("before", meter.snapshot()))
                    cpu = CpuMeter.delta(marks["before"], meter.snapshot())
                    row = totals[(name, concurrency)]
                    ok = sum(1 for r in records if r[3] is None)
                    row["ok"] += ok
                    row["errors"] += len(records) - ok
                    row["seconds"] += elapsed
                    row["cpu"] += cpu[name]
                    row["other"] += cpu["other"]
                    row["best"] = min(row["best"], 1000 * cpu[name] / max(ok, 1))
                    log(f"round {round_ + 1} c={concurrency} {name}: {ok / elapsed:.0f} req/s, "
                        f"{1000 * cpu[name] / max(ok, 1):.3f} ms CPU/request, {len(records) - ok} errors")
        print("\n| target | concurrency | requests/s | server CPU per request (best round) | errors | other CPU "
              "(cores) |")
        print("|---|---|---|---|---|---|")
        for concurrency in levels:
            for name in names:
                row = totals[(name, concurrency)]
                print(f"| {name} | {concurrency} | {row['ok'] / row['seconds']:.0f} | "
                      f"{1000 * row['cpu'] / max(row['ok'], 1):.3f} ms ({row['best']:.3f}) | {row['errors']} | "
                      f"{row['other'] / row['seconds']:.2f} |")
        if args.probe_requests:
            trees = {"this tree": REPO_ROOT, **({f"baseline {args.baseline}": baseline.source} if baseline else {})}
            probe(trees, stack.controller_url, body, args.rounds, args.probe_requests)
        print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if baseline is not None:
            baseline.stop()
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
