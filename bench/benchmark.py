"""fastchat-gateway benchmark: the gateway next to FastChat's own API server and the workers themselves.

One run on this machine starts a real FastChat controller (fschat 0.2.36 from .venv-fastchat) and two kinds of
workers once: workers built on FastChat's own worker code (bench/fastchat_worker.py, the headline) and simulated
workers (bench/simworker), with the same frames and timing. For each kind it measures three targets side by side:

  direct    the workers themselves (/worker_generate, /worker_generate_stream with the gateway's own payload): the limit
  fastchat  FastChat's `python -m fastchat.serve.openai_api_server` (fschat 0.2.36, pydantic 1, its own venv)
  gateway   fastchat-gateway under gunicorn with gunicorn.conf.py's defaults (override with --gateway-env KEY=VALUE)

for non-streaming chat (16 tokens) and streaming chat (64 tokens at 1 ms/token) at concurrency 1, 16 and 64, then
the most concurrent streams the gateway holds with zero errors (on the FastChat-code workers). It prints a table,
the gateway/FastChat and gateway/direct ratios, the servers' CPU per 1,000 relayed chunks and per 1,000 requests
and issue 15's targets (pass or fail), and writes results/benchmark.json and
results/benchmark.png (--quick: benchmark-quick.*). Everything listens on 127.0.0.1; every process it starts
(bench/stack.py, through harness/) is stopped by PID.

    .venv/bin/python -m bench.benchmark            # full run, ~6 minutes
    .venv/bin/python -m bench.benchmark --quick    # smoke run, about a minute
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

from bench import loadgen
from bench.report import (HEADER, HEADLINE, evaluate, evaluate_issue15, fmt_ms, format_ratios, format_row, log,
                          print_summary, server_cpu, write_results)
from bench.stack import KINDS, MESSAGE, Stack
from harness import fastchat
from harness.procs import REPO_ROOT, wait_until
from harness.sampling import CpuMeter

BENCH = Path(__file__).resolve().parent
TARGETS = ("direct", "fastchat", "gateway")

PROFILES = {
    # concurrency -> (max requests, max seconds); warm-up (requests, seconds) per run
    # Two worker kinds x 6 scenarios x 3 targets: 8 s per target keeps a full run under ~10 minutes.
    "full": {"concurrency": (1, 16, 64), "bounds": {1: (1000, 8.0), 16: (4000, 8.0), 64: (4000, 8.0)},
             "warmup": (100, 2.0), "hold_ramp": (250, 500, 1000, 1500, 2000), "hold_tokens": 64,
             "hold_token_delay": 0.1, "hold_timeout": 60.0, "rounds": 3},
    "quick": {"concurrency": (1, 16, 64), "bounds": {1: (100, 1.0), 16: (400, 1.0), 64: (400, 1.0)},
              "warmup": (20, 0.5), "hold_ramp": (100, 250), "hold_tokens": 16, "hold_token_delay": 0.05,
              "hold_timeout": 20.0, "rounds": 1},
}


# ---------------------------------------------------------------------------------------------- scenarios
def make_target(stack: Stack, name: str, kind: str, pool: str, stream: bool, payload: dict) -> loadgen.Target:
    spec = stack.pools[kind][pool]
    if name == "direct":
        return loadgen.Target("direct", "worker", [("127.0.0.1", w.port) for w in stack.workers[kind][pool]],
                              "/worker_generate_stream" if stream else "/worker_generate", payload, stream)
    server = stack.fastchat if name == "fastchat" else stack.gateway
    return loadgen.Target(name, "openai", [("127.0.0.1", server.port)], "/v1/chat/completions",
                          loadgen.chat_request(spec["model"], MESSAGE, spec["tokens"], stream), stream)


def kind_cpu(cpu: dict, kind: str) -> dict:
    """A CPU delta with ``workers`` = the measured kind's workers, ``idle_workers`` = the other kinds'."""
    out = {k: v for k, v in cpu.items() if not k.startswith("workers:")}
    out["workers"] = cpu.get(f"workers:{kind}", 0.0)
    out["idle_workers"] = round(sum(v for k, v in cpu.items() if k.startswith("workers:") and k != f"workers:{kind}"),
                                3)
    return out


def measure_slice(stack: Stack, target: loadgen.Target, kind: str, concurrency: int, max_requests: int,
                  max_seconds: float, warmup: tuple[int, float], timeout: float = 30.0) -> tuple[list, float, dict]:
    """One closed-loop measurement: (records, measured seconds, CPU seconds per process group). The CPU
    snapshots (psutil cpu_times of every process) are taken after the warm-up and after the last response."""
    marks: dict = {}
    records, elapsed = loadgen.run_load(
        target, concurrency, max_requests, max_seconds, warmup_requests=max(warmup[0], 2 * concurrency),
        warmup_seconds=warmup[1], timeout=timeout, raw=True,
        on_measure_start=lambda: marks.setdefault("before", stack.cpu.snapshot()))
    return records, elapsed, kind_cpu(CpuMeter.delta(marks["before"], stack.cpu.snapshot()), kind)


def summarize_target(name: str, stream: bool, concurrency: int, records: list, elapsed: float,
                     cpu: dict, tokens: int | None = None) -> dict:
    result = dict(loadgen.summarize(records, elapsed, stream))
    result["concurrency"] = concurrency
    result["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
    result.update(server_cpu(name, cpu, result["ok"], result.get("content_chunks"), stream, tokens))
    per_1000 = result.get("server_cpu_s_per_1000_requests")
    result["server_cpu_ms_per_request"] = None if per_1000 is None else round(per_1000, 3)
    return result


def run_scenarios(stack: Stack, profile: dict, targets: tuple[str, ...], rounds: int,
                  kinds_of_chat: tuple[str, ...] = ("chat", "stream")) -> list[dict]:
    """Each scenario runs on each worker kind in turn (the same scenario on both kinds minutes apart at most).
    kinds_of_chat: "chat" (non-streamed), "stream" or both.
    Its budget is split into ``rounds`` slices per target, run in rotating order (direct, fastchat, gateway;
    fastchat, gateway, direct; ...), so that load from anything else on the machine falls on all three alike;
    the slices' requests are summarized together."""
    scenarios = []
    for stream, pool in ((False, "chat"), (True, "stream")):
        if pool not in kinds_of_chat:
            continue
        payloads = {kind: stack.gateway_payload(kind, pool, stream) for kind in stack.kinds}
        for concurrency in profile["concurrency"]:
            for kind in stack.kinds:
                scenarios.append(run_scenario(stack, profile, targets, rounds, kind, pool, stream, concurrency,
                                              *payloads[kind]))
    return scenarios


def run_scenario(stack: Stack, profile: dict, targets: tuple[str, ...], rounds: int, kind: str, pool: str,
                 stream: bool, concurrency: int, payload: dict, how: str) -> dict:
    """One scenario on one worker kind: every target, in interleaved rounds."""
    max_requests, max_seconds = profile["bounds"][concurrency]
    spec = stack.pools[kind][pool]
    scenario = {
        "name": f"{'stream' if stream else 'chat'}-c{concurrency}", "workers": kind, "model": spec["model"],
        "stream": stream,
        "concurrency": concurrency, "tokens": spec["tokens"], "token_delay_s": spec["token_delay"],
        "max_requests": max_requests, "max_seconds": max_seconds, "rounds": rounds,
        "direct_payload": how, "results": {},
    }
    rate = f" at {spec['token_delay'] * 1000:g} ms/token" if spec["token_delay"] else ""
    log(f"\n== [{kind} workers] {'streaming' if stream else 'non-streaming'} chat, {spec['tokens']} tokens{rate}, "
        f"concurrency {concurrency} ({max_requests} requests or {max_seconds:g} s per target, in {rounds} "
        f"interleaved round{'s' if rounds > 1 else ''})")
    log(HEADER)
    acc = {name: {"records": [], "elapsed": 0.0, "cpu": {}} for name in targets}
    failed: dict[str, str] = {}
    warmup = (max(10, profile["warmup"][0] // rounds), profile["warmup"][1] / rounds)
    for r in range(rounds):
        for name in targets[r % len(targets):] + targets[:r % len(targets)]:
            if name in failed:
                continue
            target = make_target(stack, name, kind, pool, stream, payload)
            try:
                records, elapsed, cpu = measure_slice(
                    stack, target, kind, concurrency, max(1, max_requests // rounds), max_seconds / rounds,
                    warmup)
            except Exception as exc:  # noqa: BLE001 - report and go on
                failed[name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
                continue
            acc[name]["records"] += records
            acc[name]["elapsed"] += elapsed
            for k, v in cpu.items():
                acc[name]["cpu"][k] = acc[name]["cpu"].get(k, 0.0) + v
    for name in targets:
        if name in failed:
            result = {"failed": failed[name]}
        else:
            a = acc[name]
            result = summarize_target(name, stream, concurrency, a["records"], a["elapsed"], a["cpu"], spec["tokens"])
        scenario["results"][name] = result
        log(format_row(name, result, stream))
    log(format_ratios(scenario))
    return scenario


def run_hold(stack: Stack, profile: dict, ramp: tuple[int, ...], max_seconds: float) -> dict:
    """Open N streams at once on the gateway (long ones, so they overlap); ramp N until errors or not all held."""
    kind = stack.hold_kind
    spec = stack.pools[kind]["hold"]
    target = make_target(stack, "gateway", kind, "hold", True, {})
    group = stack.groups["gateway"]
    ideal_s = spec["tokens"] * spec["token_delay"]
    log(f"\n== concurrent streams on the gateway [{kind} workers]: {spec['tokens']} tokens at {spec['token_delay'] * 1000:g} ms/token "
        f"(~{ideal_s:.1f} s each), N = {', '.join(map(str, ramp))}")
    log(f"{'N':>6} {'ok':>6} {'errors':>6} {'held':>5} {'peak':>6} {'TTFT p50':>9} {'TTFT max':>9} "
        f"{'dur p50':>8} {'dur p99':>8} {'gw cpu s':>8} {'other':>6} {'gw RSS peak/process MB':>24}")
    steps = []
    started = time.monotonic()
    for n in ramp:
        if time.monotonic() - started > max_seconds:
            log(f"(stopped: the concurrent-stream test's bound of {max_seconds:g} s is used up)")
            break
        group.peak_rss_kib = {}
        before = stack.cpu.snapshot()
        try:
            result = dict(loadgen.run_hold(target, n, timeout=profile["hold_timeout"], sampler=group.sample_rss))
        except Exception as exc:  # noqa: BLE001
            result = {"streams": n, "ok": 0, "errors": n, "error_kinds": {f"exc:{type(exc).__name__}": n},
                      "all_held": False, "peak_concurrent": 0, "failed": repr(exc)}
            log(traceback.format_exc())
        result["cpu_s"] = kind_cpu(CpuMeter.delta(before, stack.cpu.snapshot()), kind)
        result["gateway_peak_rss_mb"] = {str(pid): round(kib / 1024, 1) for pid, kib in group.peak_rss_kib.items()}
        steps.append(result)
        rss = "/".join(f"{v:.0f}" for v in result["gateway_peak_rss_mb"].values())
        log(f"{n:>6} {result['ok']:>6} {result['errors']:>6} {'yes' if result['all_held'] else 'no':>5} "
            f"{result['peak_concurrent']:>6} {fmt_ms(result.get('ttft_ms', {}).get('p50')):>9} "
            f"{fmt_ms(result.get('ttft_ms', {}).get('max')):>9} {fmt_ms(result.get('duration_ms', {}).get('p50')):>8} "
            f"{fmt_ms(result.get('duration_ms', {}).get('p99')):>8} {result['cpu_s']['gateway']:>8.2f} "
            f"{result['cpu_s']['other']:>6.2f} {rss:>24}")
        if result["errors"]:
            log(f"       errors: {result['error_kinds']}")
        # Let the streams the gateway may still be closing end before the next step.
        wait_until("the hold workers to finish their streams",
                   lambda: all(s["open_streams"] == 0 for s in stack.worker_stats(kind, "hold")), timeout=30,
                   interval=0.2)
        if result["errors"] or not result["all_held"]:
            break
    held = [s["streams"] for s in steps if s["errors"] == 0 and s["all_held"]]
    zero_error = [s["streams"] for s in steps if s["errors"] == 0]
    return {"workers": kind, "tokens": spec["tokens"], "token_delay_s": spec["token_delay"], "ramp": list(ramp),
            "steps": steps,
            "max_held_zero_errors": max(held, default=0), "max_zero_errors": max(zero_error, default=0)}


# ------------------------------------------------------------------------------------------------ main
def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--gateway-env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return [f"{v:.2f}" for v in os.getloadavg()]


def versions(stack: Stack | None) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0))}
    try:
        info["gateway_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app", "gunicorn.conf.py", "wsgi.py"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        info["gateway_tree_modified"] = bool(dirty)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if stack is not None:
        try:
            freeze = (fastchat.venv_path("controller") / "fastchat-venv-freeze.txt").read_text().split()
            info["fastchat"] = [p for p in freeze if p.lower().startswith(("fschat", "pydantic=", "uvicorn",
                                                                             "fastapi"))]
        except OSError:
            pass
    from importlib import metadata
    for dist in ("gunicorn", "flask", "requests", "gevent"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 1 min)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="directory for the JSON and PNG results")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the gateway on top of its defaults (repeatable), e.g. "
                             "GUNICORN_WORKER_CLASS=gevent")
    parser.add_argument("--gateway-config", default="gunicorn.conf.py",
                        help="gunicorn config file for the gateway, relative to the repository (experiments only)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="which of direct,fastchat,gateway to measure")
    parser.add_argument("--workers", default=",".join(KINDS),
                        help="worker kinds, the first being the headline: fastchat-code (FastChat's own worker code, "
                             "generation faked), simulated (bench/simworker)")
    parser.add_argument("--hold-workers", choices=tuple(KINDS), default=HEADLINE,
                        help="the worker kind of the concurrent-stream test")
    parser.add_argument("--scenarios", default="chat,stream",
                        help="which scenarios: chat (non-streamed), stream, or both (default chat,stream); "
                             "experiments on one path run faster with one")
    parser.add_argument("--concurrency", help="comma-separated concurrencies (default 1,16,64)")
    parser.add_argument("--hold-ramp", help="comma-separated stream counts for the concurrent-stream test "
                                            "(default 250,500,1000,1500,2000; 'none' skips it)")
    parser.add_argument("--hold-token-delay", type=float, help="seconds per token of the held streams")
    parser.add_argument("--hold-max-seconds", type=float, default=None,
                        help="time bound of the whole concurrent-stream test (default 150, quick 20)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per scenario (default 3, quick 1)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (always kept on failure)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    profile = dict(PROFILES["quick" if args.quick else "full"])
    if args.concurrency:
        profile["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
        for c in profile["concurrency"]:
            profile["bounds"].setdefault(c, profile["bounds"][64])
    if args.hold_token_delay is not None:
        profile["hold_token_delay"] = args.hold_token_delay
    ramp = profile["hold_ramp"]
    if args.hold_ramp:
        ramp = () if args.hold_ramp == "none" else tuple(int(n) for n in args.hold_ramp.split(","))
    hold_max = args.hold_max_seconds or (20.0 if args.quick else 150.0)
    targets = tuple(t for t in args.targets.split(",") if t)
    scenario_kinds = tuple(k for k in args.scenarios.split(",") if k)
    if not scenario_kinds or set(scenario_kinds) - {"chat", "stream"}:
        raise SystemExit("--scenarios: choose among chat, stream")
    kinds = tuple(k for k in args.workers.split(",") if k)
    if set(kinds) - set(KINDS) or not kinds:
        raise SystemExit(f"--workers: choose among {', '.join(KINDS)}")
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets: {sorted(unknown)}")
    gateway_env = parse_env(args.gateway_env)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "benchmark-quick" if args.quick else "benchmark"

    nofile = loadgen.raise_nofile_limit()  # before starting anything: the servers inherit it
    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-bench-"))
    t0 = time.monotonic()
    log(f"fastchat-gateway benchmark ({'quick' if args.quick else 'full'}); logs in {run_dir}; "
        f"RLIMIT_NOFILE {nofile[0]}")
    stack = Stack(run_dir, profile, gateway_env, gateway_config=str(REPO_ROOT / args.gateway_config),
                  with_fastchat="fastchat" in targets, kinds=kinds,
                  hold_kind=(args.hold_workers if args.hold_workers in kinds else kinds[0])
                  if ramp and "gateway" in targets else None)
    ok = False
    loadavg_start = loadavg()
    try:
        stack.start()
        scenarios = run_scenarios(stack, profile, targets, args.rounds or profile["rounds"], scenario_kinds)
        hold = run_hold(stack, profile, ramp, hold_max) if ramp and "gateway" in targets else None
        memory = {name: group.memory() for name, group in stack.groups.items()}
        result = {
            "meta": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "profile": "quick" if args.quick else "full", "duration_s": None,
                "versions": versions(stack), "rlimit_nofile": list(nofile),
                "loadavg": {"start": loadavg_start, "end": loadavg()},
                "gateway_settings": stack.gateway_settings, "gateway_env_overrides": gateway_env,
                "gateway_config": args.gateway_config,
                "pools": stack.pools, "worker_kinds": list(kinds), "headline_workers": kinds[0],
                "hold_workers": stack.hold_kind, "message": MESSAGE, "loopback_only": True,
                "notes": "All processes share this machine's CPUs with the load generator; CPU seconds are "
                         "user+system time of each process during each measurement (gateway = gunicorn master + "
                         "workers). Server CPU per 1,000 chunks = its CPU seconds during a streamed measurement "
                         "x 1,000 / the content chunks (SSE events with non-empty content) the load generator "
                         "received. TTFT = send -> first content token. Held streams = every stream had its "
                         "first token before any of them ended, zero errors. fastchat-code workers = fschat's "
                         "FastAPI worker app (bench/fastchat_worker.py); simulated = bench/simworker.",
            },
            "scenarios": scenarios,
            "hold": hold,
            "memory": memory,
        }
        headline = [s for s in scenarios if s["workers"] == kinds[0]]
        result["targets"] = evaluate_issue15(headline, hold if stack.hold_kind == kinds[0] else None)
        if "simulated" in kinds:
            result["targets_issue6"] = evaluate([s for s in scenarios if s["workers"] == "simulated"], hold,
                                                {"gateway": memory["gateway"]})
        result["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
        print_summary(result)
        write_results(result, out_dir, stem, "chart")
        log(f"total {result['meta']['duration_s']:.0f} s")
        ok = True
        if args.strict and any(c["pass"] is False for c in result["targets"]):
            return 1
        return 0
    finally:
        stack.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            log(f"logs kept in {run_dir}")


if __name__ == "__main__":
    raise SystemExit(main())
