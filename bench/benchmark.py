"""fastchat-gateway benchmark: the gateway next to FastChat's own API server and the workers themselves.

One run on this machine starts a real FastChat controller (fschat 0.2.36 from .venv-fastchat) and simulated workers
(bench/simworker) once, then measures three targets side by side on the same workers:

  direct    the workers themselves (/worker_generate, /worker_generate_stream with the gateway's own payload): the limit
  fastchat  FastChat's `python -m fastchat.serve.openai_api_server` (fschat 0.2.36, pydantic 1, its own venv)
  gateway   fastchat-gateway under gunicorn with gunicorn.conf.py's defaults (override with --gateway-env KEY=VALUE)

for non-streaming chat (16 tokens) and streaming chat (64 tokens at 1 ms/token) at concurrency 1, 16 and 64, then
the most concurrent streams the gateway holds with zero errors. It prints a table, the gateway/FastChat and
gateway/direct ratios and the issue's targets (pass or fail), and writes results/benchmark.json and
results/benchmark.png (--quick: benchmark-quick.*). Everything listens on 127.0.0.1; every process it starts is
stopped by PID (tests/e2e/procs.py).

    .venv/bin/python bench/benchmark.py            # full run, a few minutes
    .venv/bin/python bench/benchmark.py --quick    # smoke run, under a minute
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import procs  # noqa: E402  (tests/e2e/procs.py: Proc, free_port, FastChat venv and controller)

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ("direct", "fastchat", "gateway")
MESSAGE = "Tell me about the history of the printing press, briefly."

# Worker pools, one model each (a worker's token rate is fixed at start; all register with one controller).
POOLS = {
    "chat": {"model": "bench-chat", "tokens": 16, "token_delay": 0.0},
    "stream": {"model": "bench-stream", "tokens": 64, "token_delay": 0.001},
    "hold": {"model": "bench-hold", "tokens": 64, "token_delay": 0.1},
}

PROFILES = {
    # concurrency -> (max requests, max seconds); warm-up (requests, seconds) per run
    "full": {"concurrency": (1, 16, 64), "bounds": {1: (1000, 10.0), 16: (4000, 10.0), 64: (4000, 10.0)},
             "warmup": (100, 2.0), "hold_ramp": (250, 500, 1000, 1500, 2000), "hold_tokens": 64,
             "hold_token_delay": 0.1, "hold_timeout": 60.0, "rounds": 3},
    "quick": {"concurrency": (1, 16, 64), "bounds": {1: (100, 1.0), 16: (400, 1.0), 64: (400, 1.0)},
              "warmup": (20, 0.5), "hold_ramp": (100, 250), "hold_tokens": 16, "hold_token_delay": 0.05,
              "hold_timeout": 20.0, "rounds": 1},
}

# The targets.
TARGET_NONSTREAM_VS_FASTCHAT = 3.0   # x FastChat's throughput, non-stream, c=16
TARGET_TTFT_DELTA_MS = 5.0           # gateway TTFT p50 - direct TTFT p50
TARGET_STREAM_VS_DIRECT = 0.8        # x the direct workers' stream throughput
TARGET_ADDED_LATENCY_MS = 1.5        # gateway p50 - direct p50, non-stream, c=1
TARGET_HELD_STREAMS = 1000
TARGET_RSS_MB = 100.0                # per gateway process


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------- processes
def _read_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) from /proc/<pid>/stat, None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _read_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids.extend(int(k) for k in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


class Group:
    """Processes measured together: root PIDs, optionally with their direct children (gunicorn's workers)."""

    def __init__(self, name: str, pids: list[int], children: bool = False):
        self.name = name
        self.roots = list(pids)
        self.with_children = children
        self.peak_rss_kib: dict[int, int] = {}

    def pids(self) -> list[int]:
        pids = list(self.roots)
        if self.with_children:
            for root in self.roots:
                pids.extend(_children(root))
        return pids

    def cpu(self) -> dict[int, float]:
        out = {}
        for pid in self.pids():
            stat = _read_stat(pid)
            if stat is not None:
                out[pid] = stat[1]
        return out

    def sample_rss(self) -> None:
        for pid in self.pids():
            rss = _read_status(pid).get("VmRSS")
            if rss is not None and rss > self.peak_rss_kib.get(pid, 0):
                self.peak_rss_kib[pid] = rss

    def memory(self) -> list[dict]:
        rows = []
        for pid in self.pids():
            status = _read_status(pid)
            if status:
                role = "master" if pid in self.roots and self.with_children else "process"
                if self.with_children and pid not in self.roots:
                    role = "worker"
                rows.append({"pid": pid, "role": role, "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
                             "hwm_mb": round(status.get("VmHWM", 0) / 1024, 1)})
        return rows


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all CPUs) from /proc/stat: everything but idle and iowait."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - fields[3] - fields[4]) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    def __init__(self, groups: list[Group]):
        self.groups = groups

    def snapshot(self) -> dict:
        return {"groups": {g.name: g.cpu() for g in self.groups}, "loadgen": self_cpu(), "machine": machine_cpu(),
                "time": time.monotonic()}

    @staticmethod
    def delta(before: dict, after: dict) -> dict[str, float]:
        out = {}
        for name, now in after["groups"].items():
            then = before["groups"].get(name, {})
            # A process that appeared in between (a restarted gunicorn worker) counts from zero.
            out[name] = round(sum(v - then.get(pid, 0.0) for pid, v in now.items()), 3)
        out["loadgen"] = round(after["loadgen"] - before["loadgen"], 3)
        # CPU used by processes that are not ours (other work on the machine): noise in the numbers.
        ours = sum(out.values())
        out["other"] = round(max(0.0, after["machine"] - before["machine"] - ours), 3)
        out["machine_capacity"] = round((after["time"] - before["time"]) * len(os.sched_getaffinity(0)), 3)
        return out


def http_json(method: str, url: str, body: object | None = None, timeout: float = 10) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def wait_for(what: str, check, proc: procs.Proc | None = None, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.returncode}) before {what}:\n{proc.log_tail(30)}")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last = exc
        time.sleep(interval)
    tail = f"\n{proc.log_tail(30)}" if proc is not None else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r}){tail}")


# Settings the gateway reads from the environment, found in its source so none leaks in from the caller's shell.
def gateway_setting_names() -> set[str]:
    names = {"BIND", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "CONTROLLER_ADDRESS", "WORKER_ADDRESSES",
             "API_KEYS", "API_KEYS_FILE", "LOG_LEVEL"}
    sources = [ROOT / "gunicorn.conf.py", *sorted((ROOT / "app").rglob("*.py"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        names.update(re.findall(r"""["']([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{4,})["']""", text))
    return {n for n in names if n not in ("PATH", "HOME", "POST", "GET", "HEAD", "NONE", "TRUE", "FALSE")}


class Stack:
    """Controller, simulated workers, FastChat's API server and the gateway; stopped by PID."""

    def __init__(self, run_dir: Path, profile: dict, gateway_env: dict[str, str], heartbeat: float = 10.0,
                 gateway_config: str = "gunicorn.conf.py", with_fastchat: bool = True):
        self.run_dir = run_dir
        self.procs: list[procs.Proc] = []
        self.workers: dict[str, list[dict]] = {}
        self.profile = profile
        self.gateway_env_overrides = gateway_env
        self.heartbeat = heartbeat
        self.gateway_config = gateway_config
        self.with_fastchat = with_fastchat

    def _start(self, proc: procs.Proc) -> procs.Proc:
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        log("setup: FastChat venv (.venv-fastchat, fschat 0.2.36)")
        self.fastchat_python = procs.ensure_fastchat_venv("controller", ROOT / ".venv-fastchat")
        fc_env = procs.fastchat_env(self.run_dir)
        port = procs.free_port()
        self.controller_url = f"http://127.0.0.1:{port}"
        self.controller = self._start(procs.Proc(
            [self.fastchat_python, "-m", "fastchat.serve.controller", "--host", "127.0.0.1", "--port", str(port)],
            log_dir=self.run_dir, name="fastchat-controller", env=fc_env, cwd=self.run_dir))
        # Workers first (they retry registration until the controller answers): all start in parallel.
        pools = dict(POOLS)
        pools["hold"] = {**POOLS["hold"], "tokens": self.profile["hold_tokens"],
                         "token_delay": self.profile["hold_token_delay"]}
        self.pools = pools
        for pool, spec in pools.items():
            self.workers[pool] = []
            for i in range(2):
                wport = procs.free_port()
                cmd = [sys.executable, "-m", "bench.simworker", "--host", "127.0.0.1", "--port",
                       str(wport), "--model-names", spec["model"], "--tokens", str(spec["tokens"]),
                       "--token-delay", str(spec["token_delay"]), "--limit-worker-concurrency", "100000",
                       "--controller-address", self.controller_url, "--heartbeat-interval", str(self.heartbeat)]
                proc = self._start(procs.Proc(cmd, log_dir=self.run_dir, name=f"worker-{pool}-{i}", cwd=ROOT))
                self.workers[pool].append({"port": wport, "url": f"http://127.0.0.1:{wport}", "proc": proc})
        wait_for("the FastChat controller", lambda: "models" in http_json("POST", self.controller_url
                                                                          + "/list_models"), self.controller)
        for pool, members in self.workers.items():
            for w in members:
                wait_for(f"{w['proc'].name}", lambda w=w: http_json("POST", w["url"] + "/worker_get_status"),
                         w["proc"], timeout=30)
        models = {spec["model"] for spec in pools.values()}
        wait_for("every worker registered",
                 lambda: self._registered() == {w["url"] for m in self.workers.values() for w in m},
                 self.controller, timeout=30)
        log(f"setup: controller {self.controller_url}, 6 simulated workers registered ({', '.join(sorted(models))})")

        # FastChat's own OpenAI API server.
        self.fastchat = None
        if self.with_fastchat:
            port = procs.free_port()
            self.fastchat_url = f"http://127.0.0.1:{port}"
            self.fastchat = self._start(procs.Proc(
                [self.fastchat_python, "-m", "fastchat.serve.openai_api_server", "--host", "127.0.0.1", "--port",
                 str(port), "--controller-address", self.controller_url],
                log_dir=self.run_dir, name="fastchat-openai-api-server", env=fc_env, cwd=self.run_dir))
            wait_for("FastChat's openai_api_server", lambda: models <= {
                m["id"] for m in http_json("GET", self.fastchat_url + "/v1/models")["data"]}, self.fastchat)

        # The gateway under gunicorn with its production defaults.
        port = procs.free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        strip = gateway_setting_names()
        env = {k: v for k, v in os.environ.items() if k not in strip}
        env.update(self.gateway_env_overrides)
        env["BIND"] = f"127.0.0.1:{port}"
        env["CONTROLLER_ADDRESS"] = self.controller_url
        self.gateway_env = env
        gunicorn = Path(sys.executable).parent / "gunicorn"
        cmd = [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]
        self.gateway_settings = self._gunicorn_settings(cmd, env)
        self.gateway = self._start(procs.Proc([*cmd, "-c", self.gateway_config, "wsgi:app"], log_dir=self.run_dir,
                                              name="gateway", env=env, cwd=ROOT))
        wait_for("the gateway's /health", lambda: http_json("GET", self.gateway_url + "/health"), self.gateway)
        wait_for("the gateway's model list", lambda: models <= {
            m["id"] for m in http_json("GET", self.gateway_url + "/v1/models")["data"]}, self.gateway)
        settings = ", ".join(f"{k}={self.gateway_settings.get(k)}" for k in ("workers", "worker_class", "threads",
                                                                               "worker_connections"))
        fastchat = f"FastChat server {self.fastchat_url}; " if self.fastchat else ""
        log(f"setup: {fastchat}gateway {self.gateway_url} ({settings}"
            f"{'; overrides ' + str(self.gateway_env_overrides) if self.gateway_env_overrides else ''})")

        self.groups = {
            "gateway": Group("gateway", [self.gateway.pid], children=True),
            "fastchat_server": Group("fastchat_server", [self.fastchat.pid] if self.fastchat else []),
            "controller": Group("controller", [self.controller.pid]),
            "workers": Group("workers", [w["proc"].pid for m in self.workers.values() for w in m]),
        }
        self.cpu = CpuMeter(list(self.groups.values()))

    def _registered(self) -> set[str]:
        # POST /refresh_all_workers is what the gateway and FastChat call too; list_workers is not in 0.2.36,
        # so ask for each model's workers through /get_worker_address until both were returned.
        seen = set()
        for pool, members in self.workers.items():
            model = self.pools[pool]["model"]
            for _ in range(6):
                addr = http_json("POST", self.controller_url + "/get_worker_address", {"model": model})["address"]
                if addr:
                    seen.add(addr)
        return seen

    def _gunicorn_settings(self, cmd: list[str], env: dict[str, str]) -> dict:
        env = dict(env)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.run_dir / "print-config-metrics")  # not the default temp dir
        try:
            out = subprocess.run([*cmd, "-c", self.gateway_config, "--print-config", "wsgi:app"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        settings = {}
        for line in out.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in ("workers", "worker_class", "threads", "worker_connections", "backlog",
                                        "keepalive", "timeout", "loglevel", "accesslog"):
                settings[name.strip()] = value.strip()
        return settings

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001
                log(f"warning: stopping {proc.name} (pid {proc.pid}): {exc!r}")

    def worker_stats(self, pool: str) -> list[dict]:
        return [http_json("GET", w["url"] + "/sim/stats") for w in self.workers[pool]]

    def reset_workers(self, pool: str) -> None:
        for w in self.workers[pool]:
            http_json("POST", w["url"] + "/sim/reset")

    def gateway_payload(self, pool: str, stream: bool) -> tuple[dict, str]:
        """The exact worker payload the gateway sends for our chat request (read back from the workers), so the
        direct target gets the same work; a constructed equivalent if that fails."""
        model = self.pools[pool]["model"]
        max_tokens = self.pools[pool]["tokens"]
        try:
            self.reset_workers(pool)
            body = loadgen.chat_request(model, MESSAGE, max_tokens, stream=False)
            http_json("POST", self.gateway_url + "/v1/chat/completions", body, timeout=30)
            payloads = [p for s in self.worker_stats(pool) for p in s.get("generate_payloads", [])]
            if payloads:
                return payloads[-1], "captured from the gateway"
        except Exception as exc:  # noqa: BLE001
            log(f"warning: could not capture the gateway's worker payload ({exc!r}); using a constructed one")
        prompt = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  f"helpful, detailed, and polite answers to the user's questions. USER: {MESSAGE} ASSISTANT:")
        return loadgen.worker_request(model, prompt, max_tokens), "constructed"


# ---------------------------------------------------------------------------------------------- scenarios
def make_target(stack: Stack, name: str, pool: str, stream: bool, payload: dict) -> loadgen.Target:
    spec = stack.pools[pool]
    if name == "direct":
        return loadgen.Target("direct", "worker", [("127.0.0.1", w["port"]) for w in stack.workers[pool]],
                              "/worker_generate_stream" if stream else "/worker_generate", payload, stream)
    url = stack.fastchat_url if name == "fastchat" else stack.gateway_url
    port = int(url.rsplit(":", 1)[1])
    return loadgen.Target(name, "openai", [("127.0.0.1", port)], "/v1/chat/completions",
                          loadgen.chat_request(spec["model"], MESSAGE, spec["tokens"], stream), stream)


def measure_slice(stack: Stack, target: loadgen.Target, concurrency: int, max_requests: int, max_seconds: float,
                  warmup: tuple[int, float], timeout: float = 30.0) -> tuple[list, float, dict]:
    """One closed-loop measurement: (records, measured seconds, CPU seconds per process group)."""
    marks: dict = {}
    records, elapsed = loadgen.run_load(
        target, concurrency, max_requests, max_seconds, warmup_requests=max(warmup[0], 2 * concurrency),
        warmup_seconds=warmup[1], timeout=timeout, raw=True,
        on_measure_start=lambda: marks.setdefault("before", stack.cpu.snapshot()))
    return records, elapsed, CpuMeter.delta(marks["before"], stack.cpu.snapshot())


def summarize_target(name: str, stream: bool, concurrency: int, records: list, elapsed: float,
                     cpu: dict) -> dict:
    result = dict(loadgen.summarize(records, elapsed, stream))
    result["concurrency"] = concurrency
    result["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
    server = {"gateway": "gateway", "fastchat": "fastchat_server"}.get(name)
    result["server_cpu_ms_per_request"] = (round(cpu[server] * 1000 / result["ok"], 3)
                                           if server and result["ok"] else None)
    return result


def run_scenarios(stack: Stack, profile: dict, targets: tuple[str, ...], rounds: int) -> list[dict]:
    """Each scenario's budget is split into ``rounds`` slices per target, run in rotating order
    (direct, fastchat, gateway; fastchat, gateway, direct; ...), so that load from anything else on the
    machine falls on all three alike; the slices' requests are summarized together."""
    scenarios = []
    for stream, pool in ((False, "chat"), (True, "stream")):
        payload, how = stack.gateway_payload(pool, stream)
        for concurrency in profile["concurrency"]:
            max_requests, max_seconds = profile["bounds"][concurrency]
            spec = stack.pools[pool]
            scenario = {
                "name": f"{'stream' if stream else 'chat'}-c{concurrency}", "stream": stream,
                "concurrency": concurrency, "tokens": spec["tokens"], "token_delay_s": spec["token_delay"],
                "max_requests": max_requests, "max_seconds": max_seconds, "rounds": rounds,
                "direct_payload": how, "results": {},
            }
            rate = f" at {spec['token_delay'] * 1000:g} ms/token" if spec["token_delay"] else ""
            log(f"\n== {'streaming' if stream else 'non-streaming'} chat, {spec['tokens']} tokens{rate}, concurrency "
                f"{concurrency} ({max_requests} requests or {max_seconds:g} s per target, in {rounds} "
                f"interleaved round{'s' if rounds > 1 else ''})")
            log(HEADER)
            acc = {name: {"records": [], "elapsed": 0.0, "cpu": {}} for name in targets}
            failed: dict[str, str] = {}
            warmup = (max(10, profile["warmup"][0] // rounds), profile["warmup"][1] / rounds)
            for r in range(rounds):
                for name in targets[r % len(targets):] + targets[:r % len(targets)]:
                    if name in failed:
                        continue
                    target = make_target(stack, name, pool, stream, payload)
                    try:
                        records, elapsed, cpu = measure_slice(
                            stack, target, concurrency, max(1, max_requests // rounds), max_seconds / rounds,
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
                    result = summarize_target(name, stream, concurrency, a["records"], a["elapsed"], a["cpu"])
                scenario["results"][name] = result
                log(format_row(name, result, stream))
            log(format_ratios(scenario))
            scenarios.append(scenario)
    return scenarios


def run_hold(stack: Stack, profile: dict, ramp: tuple[int, ...], max_seconds: float) -> dict:
    """Open N streams at once on the gateway (long ones, so they overlap); ramp N until errors or not all held."""
    spec = stack.pools["hold"]
    target = make_target(stack, "gateway", "hold", True, {})
    group = stack.groups["gateway"]
    ideal_s = spec["tokens"] * spec["token_delay"]
    log(f"\n== concurrent streams on the gateway: {spec['tokens']} tokens at {spec['token_delay'] * 1000:g} ms/token "
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
        result["cpu_s"] = CpuMeter.delta(before, stack.cpu.snapshot())
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
        wait_for("the hold workers to finish their streams",
                 lambda: all(s["open_streams"] == 0 for s in stack.worker_stats("hold")), timeout=30, interval=0.2)
        if result["errors"] or not result["all_held"]:
            break
    held = [s["streams"] for s in steps if s["errors"] == 0 and s["all_held"]]
    zero_error = [s["streams"] for s in steps if s["errors"] == 0]
    return {"tokens": spec["tokens"], "token_delay_s": spec["token_delay"], "ramp": list(ramp), "steps": steps,
            "max_held_zero_errors": max(held, default=0), "max_zero_errors": max(zero_error, default=0)}


# ---------------------------------------------------------------------------------------------- reporting
def fmt_ms(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}")


HEADER = (f"{'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'TTFT50':>7} {'TTFT99':>7} {'errors':>6} "
          f"{'n':>5} | cpu s: {'server':>6} {'ctrl':>5} {'workers':>7} {'loadgen':>7} {'other':>6} | {'srv ms/req':>10}")


def format_row(name: str, r: dict, stream: bool) -> str:
    if "failed" in r:
        return f"{name:<9} FAILED: {r['failed']}"
    cpu = r["cpu_s"]
    server = {"gateway": cpu["gateway"], "fastchat": cpu["fastchat_server"]}.get(name)
    ttft = r.get("ttft_ms") or {}
    row = (f"{name:<9} {r['rps']:>8.1f} {fmt_ms(r['latency_ms']['p50']):>8} {fmt_ms(r['latency_ms']['p99']):>8} "
           f"{fmt_ms(ttft.get('p50')):>7} {fmt_ms(ttft.get('p99')):>7} {r['errors']:>6} {r['requests']:>5} | "
           f"{'':>6} {'-' if server is None else f'{server:.2f}':>6} {cpu['controller']:>5.2f} {cpu['workers']:>7.2f} "
           f"{cpu['loadgen']:>7.2f} {cpu['other']:>6.2f} | {fmt_ms(r['server_cpu_ms_per_request']):>10}")
    if r["errors"]:
        row += f"\n{'':<9} errors: {r['error_kinds']}"
    return row


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def _get(scenario: dict, target: str, *keys):
    value = scenario["results"].get(target)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def scenario_ratios(s: dict) -> dict:
    out = {}
    for other in ("fastchat", "direct"):
        out[f"gateway_{other}_rps_ratio"] = ratio(_get(s, "gateway", "rps"), _get(s, other, "rps"))
        gp50, op50 = _get(s, "gateway", "latency_ms", "p50"), _get(s, other, "latency_ms", "p50")
        out[f"gateway_{other}_p50_ratio"] = ratio(gp50, op50)
        out[f"gateway_minus_{other}_p50_ms"] = None if gp50 is None or op50 is None else gp50 - op50
        if s["stream"]:
            gt, ot = _get(s, "gateway", "ttft_ms", "p50"), _get(s, other, "ttft_ms", "p50")
            out[f"gateway_minus_{other}_ttft_p50_ms"] = None if gt is None or ot is None else gt - ot
    return {k: (None if v is None else round(v, 3)) for k, v in out.items()}


def format_ratios(s: dict) -> str:
    r = scenario_ratios(s)
    s["ratios"] = r

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    def d(v):
        return "-" if v is None else f"{v:+.2f} ms"

    text = (f"  gateway/fastchat: throughput {x(r['gateway_fastchat_rps_ratio'])}, p50 latency "
            f"{x(r['gateway_fastchat_p50_ratio'])} | gateway/direct: throughput {x(r['gateway_direct_rps_ratio'])}, "
            f"p50 latency {x(r['gateway_direct_p50_ratio'])} ({d(r['gateway_minus_direct_p50_ms'])})")
    if s["stream"]:
        text += (f"\n  TTFT p50: gateway - direct {d(r['gateway_minus_direct_ttft_p50_ms'])}, gateway - fastchat "
                 f"{d(r['gateway_minus_fastchat_ttft_p50_ms'])}")
    return text


def evaluate(scenarios: list[dict], hold: dict | None, memory: dict) -> list[dict]:
    by = {s["name"]: s for s in scenarios}
    checks = []

    def add(name, value, limit, passed, unit="", detail=""):
        # pass is None when this run did not measure what the target needs (--targets, --hold-ramp none).
        checks.append({"target": name, "measured": None if value is None else round(value, 3), "limit": limit,
                       "unit": unit, "pass": bool(passed) if value is not None else None, "detail": detail})

    s = by.get("chat-c16")
    v = s and ratio(_get(s, "gateway", "rps"), _get(s, "fastchat", "rps"))
    add("non-stream throughput at c=16, gateway / FastChat", v, f">= {TARGET_NONSTREAM_VS_FASTCHAT}",
        v is not None and v >= TARGET_NONSTREAM_VS_FASTCHAT, "x")
    for c in (1, 16, 64):
        s = by.get(f"stream-c{c}")
        if not s:
            continue
        g, d = _get(s, "gateway", "ttft_ms", "p50"), _get(s, "direct", "ttft_ms", "p50")
        v = None if g is None or d is None else g - d
        add(f"stream TTFT p50 at c={c}, gateway - direct", v, f"<= {TARGET_TTFT_DELTA_MS} ms",
            v is not None and v <= TARGET_TTFT_DELTA_MS, "ms", f"gateway {fmt_ms(g)} ms, direct {fmt_ms(d)} ms")
    for c in (1, 16, 64):
        s = by.get(f"stream-c{c}")
        if not s:
            continue
        v = ratio(_get(s, "gateway", "rps"), _get(s, "direct", "rps"))
        add(f"stream throughput at c={c}, gateway / direct", v, f">= {TARGET_STREAM_VS_DIRECT}",
            v is not None and v >= TARGET_STREAM_VS_DIRECT, "x")
    s = by.get("chat-c1")
    if s:
        g, d = _get(s, "gateway", "latency_ms", "p50"), _get(s, "direct", "latency_ms", "p50")
        v = None if g is None or d is None else g - d
        add("added latency at c=1 (non-stream p50, gateway - direct)", v, f"<= {TARGET_ADDED_LATENCY_MS} ms",
            v is not None and v <= TARGET_ADDED_LATENCY_MS, "ms", f"gateway {fmt_ms(g)} ms, direct {fmt_ms(d)} ms")
    if hold is not None:
        v = hold["max_held_zero_errors"]
        add("concurrent open streams held with zero errors", v, f">= {TARGET_HELD_STREAMS}",
            v >= TARGET_HELD_STREAMS, "streams",
            f"ramp {hold['ramp']} stopped at {hold['steps'][-1]['streams'] if hold['steps'] else '-'}")
    rows = memory.get("gateway", [])
    if rows:
        v = max(r["hwm_mb"] for r in rows)
        add("gateway peak RSS per process (VmHWM)", v, f"< {TARGET_RSS_MB:g} MB", v < TARGET_RSS_MB, "MB",
            ", ".join(f"{r['role']} {r['hwm_mb']:.0f}" for r in rows))
    return checks


def print_summary(result: dict) -> None:
    log("\n== results (requests/s; latency and TTFT in ms; CPU seconds during each measurement)")
    for s in result["scenarios"]:
        kind = "stream" if s["stream"] else "chat  "
        log(f"\n{kind} c={s['concurrency']:<3} " + HEADER)
        for name, r in s["results"].items():
            log(f"{'':>11} " + format_row(name, r, s["stream"]).replace("\n", "\n" + " " * 12))
    log("\n== memory at the end of the run (MB: current RSS / peak VmHWM)")
    for group, rows in result["memory"].items():
        if not rows:
            continue
        log(f"  {group:<16} " + ", ".join(f"{r['role']} {r['pid']}: {r['rss_mb']:.0f} / {r['hwm_mb']:.0f}"
                                          for r in rows))
    log("\n== ratios")
    for s in result["scenarios"]:
        log(f"  {s['name']:<10} {format_ratios(s).strip()}".replace("\n", "\n" + " " * 13))
    other = sum(r["cpu_s"]["other"] for s in result["scenarios"] for r in s["results"].values() if "cpu_s" in r)
    capacity = sum(r["cpu_s"]["machine_capacity"] for s in result["scenarios"] for r in s["results"].values()
                   if "cpu_s" in r)
    result["meta"]["other_cpu_share"] = round(other / capacity, 3) if capacity else None
    log(f"\n== noise: processes that are not part of this benchmark used {other:.1f} CPU s during the measurements "
        f"({100 * other / max(capacity, 1e-9):.0f}% of the machine); load average {result['meta']['loadavg']}")
    quick = " (quick run: short bounds, indicative only)" if result["meta"]["profile"] == "quick" else ""
    log(f"\n== targets (issue 6){quick}")
    for c in result["targets"]:
        status = "n/a " if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
        log(f"  [{status}] {c['target']}: {c['measured']} {c['unit']} "
            f"(target {c['limit']}){'; ' + c['detail'] if c['detail'] else ''}")


# ------------------------------------------------------------------------------------------------ main
def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--gateway-env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def versions(stack: Stack | None) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0))}
    try:
        info["gateway_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app", "gunicorn.conf.py", "wsgi.py"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["gateway_tree_modified"] = bool(dirty)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if stack is not None:
        try:
            freeze = (ROOT / ".venv-fastchat" / "fastchat-venv-freeze.txt").read_text().split()
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
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 1 min)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="directory for the JSON and PNG results")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the gateway on top of its defaults (repeatable), e.g. "
                             "GUNICORN_WORKER_CLASS=gevent")
    parser.add_argument("--gateway-config", default="gunicorn.conf.py",
                        help="gunicorn config file for the gateway, relative to the repository (experiments only)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="which of direct,fastchat,gateway to measure")
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
    stack = Stack(run_dir, profile, gateway_env, gateway_config=str(ROOT / args.gateway_config),
                  with_fastchat="fastchat" in targets)
    ok = False
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    try:
        stack.start()
        scenarios = run_scenarios(stack, profile, targets, args.rounds or profile["rounds"])
        hold = run_hold(stack, profile, ramp, hold_max) if ramp and "gateway" in targets else None
        memory = {name: stack.groups[name].memory() for name in ("gateway", "fastchat_server", "controller",
                                                                  "workers")}
        result = {
            "meta": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "profile": "quick" if args.quick else "full", "duration_s": None,
                "versions": versions(stack), "rlimit_nofile": list(nofile),
                "loadavg": {"start": loadavg_start, "end": Path("/proc/loadavg").read_text().split()[:3]},
                "gateway_settings": stack.gateway_settings, "gateway_env_overrides": gateway_env,
                "gateway_config": args.gateway_config,
                "pools": stack.pools, "message": MESSAGE, "loopback_only": True,
                "notes": "All processes share this machine's CPUs with the load generator; CPU seconds are "
                         "utime+stime from /proc/<pid>/stat during each measurement (gateway = gunicorn master + "
                         "workers). TTFT = send -> first content token. Held streams = every stream had its "
                         "first token before any of them ended, zero errors.",
            },
            "scenarios": scenarios,
            "hold": hold,
            "memory": memory,
        }
        result["targets"] = evaluate(scenarios, hold, memory)
        result["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
        print_summary(result)
        json_path = out_dir / f"{stem}.json"
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        log(f"\nwrote {json_path}")
        try:
            import chart
            png = out_dir / f"{stem}.png"
            chart.make_chart(result, png)
            log(f"wrote {png}")
        except ImportError as exc:
            log(f"no chart: {exc} (pip install -e '.[bench]')")
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
