"""Where the gateway's CPU goes: py-spy samples of one gunicorn worker under the benchmark's load.

    make profile                                         # = .venv/bin/python -m bench.profile_gateway
    make profile PROFILE_ARGS="--stream --concurrency 64"

Starts the benchmark's FastChat controller and workers (--workers: fastchat-code, the default, or simulated) and the
gateway with its default settings (no FastChat API server), runs one closed-loop load against the gateway while
py-spy records one of its gunicorn workers (the load is spread evenly over them), and prints the share of the
samples by package (the frame that was running) and by function (frames below it included). `--gil` (the default) samples only while a thread holds
the GIL, which is the Python half of the cost; the kernel's half (thread switches, system calls) needs `perf`.
The collapsed stacks are kept (`--out`) for flame graph tools. py-spy must be allowed to ptrace the worker.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench import benchmark, loadgen
from bench.report import log
from bench.stack import Stack

_LINE_NUMBER = re.compile(r":\d+\)$")
_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def summarize(collapsed: list[str]) -> dict:
    """Shares (%) of py-spy's raw collapsed stacks ("frame;frame;... count" lines, frames "function (file:line)"):
    by package of the running frame, and by function with everything it called (each function once per stack)."""
    total = 0
    by_package: collections.Counter = collections.Counter()
    by_function: collections.Counter = collections.Counter()
    for line in collapsed:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        for function in set(frames):
            by_function[function] += samples
        by_package[package(frames[-1])] += samples
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {"samples": total,
            "by_package": {name: share(n) for name, n in by_package.most_common()},
            "by_function": {name: share(n) for name, n in by_function.most_common()}}


def package(frame: str) -> str:
    """py-spy names files relative to site-packages, the standard library or the working directory: the first
    part of that path is the package ("flask/app.py" -> "flask", "threading.py" -> "threading")."""
    match = _FILE.search(frame)
    path = match.group(1) if match else frame
    return path.split("/", 1)[0].removesuffix(".py")


def print_summary(summary: dict, top: int) -> None:
    print(f"\n{summary['samples']} samples")
    print("\n== by package (the running frame)")
    for name, pct in list(summary["by_package"].items())[:top]:
        print(f"  {pct:5.1f} %  {name}")
    print("\n== by function (with what it called)")
    shown = 0
    for name, pct in summary["by_function"].items():
        if package(name) in ("threading", "concurrent") or name.startswith("<module>"):
            continue  # every thread's entry frames: 100 % and no information
        print(f"  {pct:5.1f} %  {name}")
        shown += 1
        if shown == top:
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="store_true", help="streamed chat (64 tokens at 1 ms/token)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", choices=("fastchat-code", "simulated"), default="fastchat-code",
                        help="the worker kind behind the gateway (bench/stack.py)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to load and sample")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--all-threads", action="store_true",
                        help="sample every thread, not only the one holding the GIL (idle threads included)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the gateway on top of its defaults (repeatable)")
    parser.add_argument("--top", type=int, default=30, help="lines per table")
    parser.add_argument("--out", help="where to keep the collapsed stacks (default bench/results/profile-*.txt)")
    args = parser.parse_args(argv)

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    scenario = f"{'stream' if args.stream else 'chat'}-c{args.concurrency}"
    out = Path(args.out or benchmark.BENCH / "results" / f"profile-{scenario}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)

    loadgen.raise_nofile_limit()
    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-profile-"))
    stack = Stack(run_dir, dict(benchmark.PROFILES["full"]), benchmark.parse_env(args.gateway_env),
                  with_fastchat=False, kinds=(args.workers,))
    try:
        stack.start()
        pool = "stream" if args.stream else "chat"
        target = benchmark.make_target(stack, "gateway", args.workers, pool, args.stream, {})
        loadgen.run_load(target, args.concurrency, 10 * args.concurrency, 2.0)  # warm: connections, caches
        worker = psutil.Process(stack.gateway.proc.pid).children()[0].pid
        command = [py_spy, "record", "--format", "raw", "--output", str(out), "--rate", str(args.rate),
                   "--duration", str(max(1, round(args.seconds))), "--pid", str(worker), "--nonblocking"]
        if not args.all_threads:
            command.append("--gil")
        log(f"profiling gateway worker {worker}: {scenario}, {args.seconds:.0f} s")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = loadgen.run_load(target, args.concurrency, 10**6, args.seconds)
        _, errors = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0 or not out.exists():
            raise SystemExit(f"py-spy failed ({spy.returncode}): {errors.strip()[-500:]}")
        log(f"load: {result['rps']:.0f} {'streams' if args.stream else 'requests'}/s, "
                      f"{result['errors']} errors")
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    print_summary(summarize(out.read_text().splitlines()), args.top)
    log(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
