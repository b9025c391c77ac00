"""The benchmark's processes, all started through harness/ and stopped by PID: a real FastChat controller, two
simulated workers per pool registered with it, FastChat's own OpenAI API server and the gateway under gunicorn
with its production defaults."""
from __future__ import annotations

from pathlib import Path

import requests

from bench import loadgen
from bench.report import log
from harness import fastchat
from harness.gateway import Gateway, production_environ
from harness.procs import wait_until
from harness.sampling import CpuMeter, Group
from harness.simworkers import SimulatedWorker

MESSAGE = "Tell me about the history of the printing press, briefly."
# Worker pools, one model each (a worker's token rate is fixed at start; all register with one controller).
POOLS = {
    "chat": {"model": "bench-chat", "tokens": 16, "token_delay": 0.0},
    "stream": {"model": "bench-stream", "tokens": 64, "token_delay": 0.001},
    "hold": {"model": "bench-hold", "tokens": 64, "token_delay": 0.1},
}
WORKERS_PER_POOL = 2
# What `gunicorn --print-config` reports into the results.
GUNICORN_SETTINGS = ("workers", "worker_class", "threads", "worker_connections", "backlog", "keepalive", "timeout",
                     "loglevel", "accesslog")


class Stack:
    """Controller, simulated workers, FastChat's API server (``with_fastchat``) and the gateway."""

    def __init__(self, run_dir: Path, profile: dict, gateway_env: dict[str, str], heartbeat: float = 10.0,
                 gateway_config: str = "gunicorn.conf.py", with_fastchat: bool = True):
        self.run_dir = run_dir
        self.started: list = []  # whatever has a stop(), in start order
        self.workers: dict[str, list[SimulatedWorker]] = {}
        self.pools = {**POOLS, "hold": {**POOLS["hold"], "tokens": profile["hold_tokens"],
                                        "token_delay": profile["hold_token_delay"]}}
        self.gateway_env_overrides = gateway_env
        self.heartbeat = heartbeat
        self.gateway_config = gateway_config
        self.with_fastchat = with_fastchat
        self.fastchat = None

    def start(self) -> None:
        log(f"setup: FastChat venv ({fastchat.venv_path('controller')}, fschat 0.2.36)")
        python = fastchat.ensure_fastchat_venv("controller")
        self.controller = self._started(fastchat.FastChatController(python, self.run_dir))
        self.controller_url = self.controller.address
        # All workers start at once, then each is waited for.
        for pool, spec in self.pools.items():
            self.workers[pool] = [self._started(SimulatedWorker(
                self.run_dir, "--tokens", str(spec["tokens"]), "--token-delay", str(spec["token_delay"]),
                "--limit-worker-concurrency", "100000", "--heartbeat-interval", str(self.heartbeat),
                controller=self.controller_url, model=spec["model"], name=f"worker-{pool}-{i}", wait=False))
                for i in range(WORKERS_PER_POOL)]
        for members in self.workers.values():
            for worker in members:
                worker.wait_ready(timeout=30)
        every_worker = {w.address for members in self.workers.values() for w in members}
        wait_until("every worker registered", lambda: self._registered() == every_worker, self.controller.proc,
                   timeout=30)
        models = {spec["model"] for spec in self.pools.values()}
        log(f"setup: controller {self.controller_url}, {len(every_worker)} simulated workers registered "
            f"({', '.join(sorted(models))})")

        if self.with_fastchat:
            self.fastchat = self._started(fastchat.FastChatApiServer(python, self.controller_url, self.run_dir,
                                                                     models=models))
            self.fastchat_url = self.fastchat.url
        self.gateway = self._started(Gateway(
            self.run_dir, environ=production_environ(), config=self.gateway_config,
            **{**self.gateway_env_overrides, "CONTROLLER_ADDRESS": self.controller_url}))
        self.gateway_url = self.gateway.url
        self.gateway.proc.wait_http(f"{self.gateway_url}/v1/models", ok=lambda r: models <= {
            m["id"] for m in r.json()["data"]})
        self.gateway_settings = self.gateway.print_config(GUNICORN_SETTINGS)
        settings = ", ".join(f"{k}={self.gateway_settings.get(k)}" for k in ("workers", "worker_class", "threads",
                                                                               "worker_connections"))
        server = f"FastChat server {self.fastchat_url}; " if self.fastchat else ""
        log(f"setup: {server}gateway {self.gateway_url} ({settings}"
            f"{'; overrides ' + str(self.gateway_env_overrides) if self.gateway_env_overrides else ''})")

        self.groups = {
            "gateway": Group("gateway", [self.gateway.proc.pid], children=True),
            "fastchat_server": Group("fastchat_server", [self.fastchat.proc.pid] if self.fastchat else []),
            "controller": Group("controller", [self.controller.proc.pid]),
            "workers": Group("workers", [w.proc.pid for members in self.workers.values() for w in members]),
        }
        self.cpu = CpuMeter(list(self.groups.values()))

    def _started(self, process):
        self.started.append(process)
        return process

    def _registered(self) -> set[str]:
        # POST /refresh_all_workers is what the gateway and FastChat call too; list_workers is not in 0.2.36,
        # so ask for each model's workers through /get_worker_address until both were returned.
        seen = set()
        for pool in self.workers:
            for _ in range(3 * WORKERS_PER_POOL):
                seen.add(self.controller.post("/get_worker_address", {"model": self.pools[pool]["model"]})
                         .json()["address"])
        seen.discard("")
        return seen

    def stop(self) -> None:
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others all the same
                log(f"warning: stopping {process.proc.name} (pid {process.proc.pid}): {exc!r}")

    def worker_stats(self, pool: str) -> list[dict]:
        return [w.stats() for w in self.workers[pool]]

    def reset_workers(self, pool: str) -> None:
        for w in self.workers[pool]:
            w.reset()

    def gateway_payload(self, pool: str, stream: bool) -> tuple[dict, str]:
        """The exact worker payload the gateway sends for our chat request (read back from the workers), so the
        direct target gets the same work; a constructed equivalent if that fails."""
        model = self.pools[pool]["model"]
        max_tokens = self.pools[pool]["tokens"]
        try:
            self.reset_workers(pool)
            body = loadgen.chat_request(model, MESSAGE, max_tokens, stream=False)
            requests.post(self.gateway_url + "/v1/chat/completions", json=body, timeout=30).raise_for_status()
            payloads = [p for s in self.worker_stats(pool) for p in s.get("generate_payloads", [])]
            if payloads:
                return payloads[-1], "captured from the gateway"
        except Exception as exc:  # noqa: BLE001
            log(f"warning: could not capture the gateway's worker payload ({exc!r}); using a constructed one")
        prompt = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  f"helpful, detailed, and polite answers to the user's questions. USER: {MESSAGE} ASSISTANT:")
        return loadgen.worker_request(model, prompt, max_tokens), "constructed"
