"""fastchat-gateway next to LiteLLM's proxy, in front of the same minimal OpenAI-compatible upstream (issue 17).

One run starts, on 127.0.0.1:

  direct    bench/upstream_server.py (stdlib asyncio, deterministic, cached replies): the limit
  litellm   LiteLLM's proxy (litellm[proxy]==1.106.12 from .venv-litellm) with its production best practices
            (PRODUCTION below): --num_workers = the gateway's process count, no database, LITELLM_LOG=ERROR,
            set_verbose False, json_logs, spend and error logs off
  gateway   fastchat-gateway under gunicorn with gunicorn.conf.py's defaults (harness.gateway.production_environ)
            and a ROUTES_FILE relaying the model to the upstream

and measures, in interleaved rounds (direct, litellm, gateway; litellm, gateway, direct; ...): non-streamed chat
(16 tokens) at c=1, 16 and 64, streamed chat (64 chunks) at c=1 and 16: latency, requests/s, TTFT, chunks/s and
each server's CPU seconds (psutil, its whole process tree) per 1,000 requests and per 1,000 chunks. It prints the
table and the targets (PASS/MISS, judged as ratios within the run) and writes results/litellm_compare.json and .png
(--quick: litellm_compare-quick.*). Every process it starts is stopped by PID (harness/procs.py).

    .venv/bin/python -m bench.litellm_compare            # about 90 s
    .venv/bin/python -m bench.litellm_compare --quick    # smoke run, under a minute
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import loadgen
from bench.benchmark import loadavg, parse_env, versions
from bench.litellm_report import HEADER, LABELS, TARGETS, evaluate, format_check, format_row, headline
from bench.report import log, write_results
from bench.stack import GUNICORN_SETTINGS, MESSAGE
from harness import litellm
from harness.gateway import Gateway, production_environ
from harness.procs import REPO_ROOT, Proc, free_port
from harness.sampling import CpuMeter, Group

MODEL = "bench-chat"              # what clients ask for, on all three
UPSTREAM_MODEL = "bench-upstream"  # what the proxies ask the upstream for
UPSTREAM_KEY = "sk-bench-upstream"
CHAT_TOKENS, STREAM_TOKENS = 16, 64

PROFILES = {
    # scenario -> (max requests, max seconds) per target, split over the rounds; warm-up (requests, seconds)
    "full": {"scenarios": {("chat", 1): (1500, 6.0), ("chat", 16): (8000, 6.0), ("chat", 64): (8000, 6.0),
                           ("stream", 1): (400, 4.5), ("stream", 16): (3000, 6.0)},
             "warmup": (150, 1.5), "rounds": 3},
    "quick": {"scenarios": {("chat", 1): (150, 1.0), ("chat", 16): (800, 1.0), ("chat", 64): (800, 1.0),
                            ("stream", 1): (50, 1.0), ("stream", 16): (300, 1.0)},
              "warmup": (30, 0.5), "rounds": 1},
}

# LiteLLM's "Best Practices for Production" (docs.litellm.ai/docs/proxy/prod), the parts that apply to a proxy
# with no database and no Slack: see bench/README.md for each and why.
PRODUCTION_ENV = {"LITELLM_LOG": "ERROR"}  # "Turn off FASTAPI's default info logs"
PRODUCTION_GENERAL = {"disable_spend_logs": True, "disable_error_logs": True}
PRODUCTION_LITELLM = {"request_timeout": 600, "set_verbose": False, "json_logs": True}


def litellm_config(upstream_url: str, master_key: str) -> str:
    """The proxy's config.yaml (JSON is YAML): MODEL relayed to the upstream as an OpenAI model."""
    config = {
        "model_list": [{"model_name": MODEL,
                        "litellm_params": {"model": f"openai/{UPSTREAM_MODEL}", "api_base": f"{upstream_url}/v1",
                                           "api_key": UPSTREAM_KEY}}],
        "general_settings": {"master_key": master_key, **PRODUCTION_GENERAL},
        "litellm_settings": {**PRODUCTION_LITELLM, "telemetry": False},
    }
    return json.dumps(config, indent=2) + "\n"


def routes_file(upstream_url: str) -> str:
    return (f'[[routes]]\nmodel = "{MODEL}"\nbase_url = "{upstream_url}/v1"\napi_key = "{UPSTREAM_KEY}"\n'
            f'upstream_model = "{UPSTREAM_MODEL}"\n')


class CompareStack:
    """The upstream, the gateway (its defaults + ROUTES_FILE) and LiteLLM's proxy with as many workers as the
    gateway has processes; ``groups``: each one's whole process tree, for CpuMeter."""

    def __init__(self, run_dir: Path, gateway_env: dict[str, str], litellm_workers: int | None = None):
        self.run_dir = run_dir
        self.gateway_env = gateway_env
        self.litellm_workers = litellm_workers
        self.started: list = []

    def start(self) -> None:
        port = free_port()
        self.upstream_url = f"http://127.0.0.1:{port}"
        self.upstream = self._started(Proc(
            [sys.executable, "-m", "bench.upstream_server", "--port", str(port), "--models", UPSTREAM_MODEL,
             "--tokens", str(CHAT_TOKENS)], log_dir=self.run_dir, name="upstream", cwd=REPO_ROOT))
        self.upstream.wait_http(f"{self.upstream_url}/health", timeout=15)

        routes = self.run_dir / "routes.toml"
        routes.write_text(routes_file(self.upstream_url))
        # No controller: CONTROLLER_ADDRESS points at a port nobody listens on; only the routed model is served.
        self.gateway = self._started(Gateway(
            self.run_dir, environ=production_environ(), **{
                "CONTROLLER_ADDRESS": f"http://127.0.0.1:{free_port()}", **self.gateway_env,
                "ROUTES_FILE": str(routes)}))
        self.gateway.proc.wait_http(f"{self.gateway.url}/v1/models",
                                    ok=lambda r: MODEL in {m["id"] for m in r.json()["data"]})
        self.gateway_settings = self.gateway.print_config(GUNICORN_SETTINGS)
        workers = self.litellm_workers or int(self.gateway_settings.get("workers") or 1)

        log(f"setup: LiteLLM venv ({litellm.venv_path()}, litellm[proxy]==1.106.12)")
        venv = litellm.ensure_litellm_venv()
        self.litellm_settings = {"num_workers": workers, "env": PRODUCTION_ENV,
                                 "config": json.loads(litellm_config(self.upstream_url, litellm.MASTER_KEY))}
        self.litellm_settings["config"]["general_settings"]["master_key"] = "(the master key)"
        self.litellm = self._started(litellm.LiteLLMProxy(
            venv, self.run_dir, litellm_config(self.upstream_url, litellm.MASTER_KEY), models=(MODEL,),
            num_workers=workers, env=PRODUCTION_ENV, timeout=180))
        log(f"setup: upstream {self.upstream_url}; gateway {self.gateway.url} (workers="
            f"{self.gateway_settings.get('workers')}, worker_class={self.gateway_settings.get('worker_class')}, "
            f"threads={self.gateway_settings.get('threads')}); LiteLLM {self.litellm.url} (--num_workers {workers}, "
            f"ready after {self.litellm.start_seconds:.0f} s)")
        self.groups = {
            "upstream": Group("upstream", [self.upstream.pid], recursive=True),
            "litellm": Group("litellm", [self.litellm.proc.pid], recursive=True),
            "gateway": Group("gateway", [self.gateway.proc.pid], recursive=True),
        }
        self.cpu = CpuMeter(list(self.groups.values()))

    def _started(self, process):
        self.started.append(process)
        return process

    def target(self, name: str, stream: bool) -> loadgen.Target:
        tokens = STREAM_TOKENS if stream else CHAT_TOKENS
        body = loadgen.chat_request(MODEL if name != "direct" else UPSTREAM_MODEL, MESSAGE, tokens, stream)
        url = {"direct": self.upstream_url, "litellm": self.litellm.url, "gateway": self.gateway.url}[name]
        port = int(url.rsplit(":", 1)[1])
        headers = {"Authorization": f"Bearer {litellm.MASTER_KEY}"} if name == "litellm" else None
        return loadgen.Target(name, "openai", [("127.0.0.1", port)], "/v1/chat/completions", body, stream,
                              headers=headers)

    def stop(self) -> None:
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others all the same
                log(f"warning: stopping {process!r}: {exc!r}")


SERVER_GROUP = {"direct": "upstream", "litellm": "litellm", "gateway": "gateway"}


def run_scenario(stack: CompareStack, kind: str, concurrency: int, bounds: tuple[int, float],
                 warmup: tuple[int, float], rounds: int) -> dict:
    stream = kind == "stream"
    max_requests, max_seconds = bounds
    scenario = {"name": f"{kind}-c{concurrency}", "stream": stream, "concurrency": concurrency,
                "tokens": STREAM_TOKENS if stream else CHAT_TOKENS, "max_requests": max_requests,
                "max_seconds": max_seconds, "rounds": rounds, "results": {}}
    log(f"\n== {'streamed' if stream else 'non-streamed'} chat, {scenario['tokens']} tokens, concurrency "
        f"{concurrency} ({max_requests} requests or {max_seconds:g} s per target, {rounds} interleaved rounds)")
    log(HEADER)
    acc = {name: {"records": [], "elapsed": 0.0, "cpu": {}} for name in TARGETS}
    failed: dict[str, str] = {}
    for r in range(rounds):
        for name in TARGETS[r % len(TARGETS):] + TARGETS[:r % len(TARGETS)]:
            if name in failed:
                continue
            marks: dict = {}
            try:
                records, elapsed = loadgen.run_load(
                    stack.target(name, stream), concurrency, max(1, max_requests // rounds), max_seconds / rounds,
                    warmup_requests=max(warmup[0] // rounds, 2 * concurrency), warmup_seconds=warmup[1] / rounds,
                    timeout=30.0, raw=True, on_measure_start=lambda: marks.setdefault("before", stack.cpu.snapshot()))
            except Exception as exc:  # noqa: BLE001 - report and go on
                failed[name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
                continue
            cpu = CpuMeter.delta(marks["before"], stack.cpu.snapshot())
            acc[name]["records"] += records
            acc[name]["elapsed"] += elapsed
            for k, v in cpu.items():
                acc[name]["cpu"][k] = acc[name]["cpu"].get(k, 0.0) + v
    for name in TARGETS:
        if name in failed:
            result = {"failed": failed[name]}
        else:
            a = acc[name]
            result = dict(loadgen.summarize(a["records"], a["elapsed"], stream))
            result["cpu_s"] = {k: round(v, 3) for k, v in a["cpu"].items()}
            result["server_cpu_s"] = result["cpu_s"].get(SERVER_GROUP[name])
        scenario["results"][name] = result
        log(format_row(name, result, stream))
    return scenario


def print_summary(result: dict) -> None:
    log("\n== results (latency and TTFT in ms; server cpu s = that target's server process tree during the "
        "measurement; per 1k req = CPU s per 1,000 requests; req/CPU-s = requests per CPU-second; µs/chunk = "
        "server CPU per streamed content chunk)")
    for s in result["scenarios"]:
        log(f"\n{s['name']:<10} " + HEADER)
        for name, r in s["results"].items():
            log(f"{'':>10} " + format_row(name, r, s["stream"]).replace("\n", "\n" + " " * 11))
    log("\n== targets (ratios within this run)")
    for check in result["targets"]:
        log(format_check(check))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (under a minute)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="gateway environment on top of its defaults (repeatable)")
    parser.add_argument("--litellm-workers", type=int, default=None,
                        help="LiteLLM's --num_workers (default: the gateway's process count)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    rounds = args.rounds or profile["rounds"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "litellm_compare-quick" if args.quick else "litellm_compare"

    nofile = loadgen.raise_nofile_limit()
    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-litellm-"))
    t0 = time.monotonic()
    log(f"fastchat-gateway vs LiteLLM ({'quick' if args.quick else 'full'}); logs in {run_dir}")
    stack = CompareStack(run_dir, parse_env(args.gateway_env), args.litellm_workers)
    ok = False
    loadavg_start = loadavg()
    try:
        stack.start()
        scenarios = [run_scenario(stack, kind, c, bounds, profile["warmup"], rounds)
                     for (kind, c), bounds in profile["scenarios"].items()]
        result = {
            "meta": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "profile": "quick" if args.quick else "full", "duration_s": None, "versions": versions(None),
                "rlimit_nofile": list(nofile), "loadavg": {"start": loadavg_start, "end": loadavg()},
                "gateway_settings": stack.gateway_settings, "gateway_env_overrides": stack.gateway_env,
                "litellm_settings": stack.litellm_settings, "labels": LABELS, "loopback_only": True,
                "message": MESSAGE, "chat_tokens": CHAT_TOKENS, "stream_tokens": STREAM_TOKENS,
                "notes": "All processes (upstream, both proxies, the load generator) share this machine's CPUs. "
                         "server_cpu_s = user+system CPU seconds of the target's whole process tree (psutil) between "
                         "the end of the warm-up and the last response. Content chunks = SSE events with non-empty "
                         "content received by the load generator. Added latency = target - direct, same "
                         "percentile.",
            },
            "scenarios": scenarios,
        }
        result["headline"] = headline(scenarios)
        result["targets"] = evaluate(scenarios)
        result["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
        print_summary(result)
        write_results(result, out_dir, stem, "litellm_chart")
        log(f"total {result['meta']['duration_s']:.0f} s")
        ok = True
        return 1 if args.strict and any(c["pass"] is False for c in result["targets"]) else 0
    finally:
        stack.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            log(f"logs kept in {run_dir}")


if __name__ == "__main__":
    raise SystemExit(main())
