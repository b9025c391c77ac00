"""The benchmark's processes, all started through harness/ and stopped by PID: a real FastChat controller, two
workers per pool and worker kind registered with it, FastChat's own OpenAI API server and the gateway under
gunicorn with its production defaults.

Worker kinds: ``fastchat-code`` (bench/fastchat_worker.py: fschat 0.2.36's FastAPI worker app and BaseModelWorker
under uvicorn, run by FastChat's python, generation faked) and ``simulated`` (bench/simworker on aiohttp). Both
produce the same frames at the same pace; their models are named apart (``fcw-*``, ``bench-*``) so that one
controller, one FastChat server and one gateway serve both."""
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
    "chat": {"model": "chat", "tokens": 16, "token_delay": 0.0},
    "stream": {"model": "stream", "tokens": 64, "token_delay": 0.001},
    "hold": {"model": "hold", "tokens": 64, "token_delay": 0.1},
}
# Worker kind -> model name prefix. The first is the headline.
KINDS = {"fastchat-code": "fcw", "simulated": "bench"}
WORKERS_PER_POOL = 2
# What `gunicorn --print-config` reports into the results.
GUNICORN_SETTINGS = ("workers", "worker_class", "threads", "worker_connections", "backlog", "keepalive", "timeout",
                     "loglevel", "accesslog")


class Stack:
    """Controller, the workers of each kind in ``kinds``, FastChat's API server (``with_fastchat``) and the gateway.

    ``pools[kind][pool]`` and ``workers[kind][pool]``; the ``hold`` pool (the concurrent-stream test) only for
    ``hold_kind`` (None: no hold pool)."""

    def __init__(self, run_dir: Path, profile: dict, gateway_env: dict[str, str], heartbeat: float = 10.0,
                 gateway_config: str = "gunicorn.conf.py", with_fastchat: bool = True,
                 kinds: tuple[str, ...] = tuple(KINDS), hold_kind: str | None = None):
        self.run_dir = run_dir
        self.started: list = []  # whatever has a stop(), in start order
        self.kinds = kinds
        self.hold_kind = hold_kind
        base = {**POOLS, "hold": {**POOLS["hold"], "tokens": profile["hold_tokens"],
                                  "token_delay": profile["hold_token_delay"]}}
        self.pools = {kind: {pool: {**spec, "model": f"{KINDS[kind]}-{spec['model']}"}
                             for pool, spec in base.items() if pool != "hold" or kind == hold_kind}
                      for kind in kinds}
        self.workers: dict[str, dict[str, list]] = {kind: {} for kind in kinds}
        self.gateway_env_overrides = gateway_env
        self.heartbeat = heartbeat
        self.gateway_config = gateway_config
        self.with_fastchat = with_fastchat
        self.fastchat = None

    def _worker(self, python: Path, kind: str, pool: str, i: int):
        spec = self.pools[kind][pool]
        timing = ("--tokens", str(spec["tokens"]), "--token-delay", str(spec["token_delay"]),
                  "--limit-worker-concurrency", "100000")
        name = f"worker-{kind}-{pool}-{i}"
        if kind == "simulated":
            return SimulatedWorker(self.run_dir, *timing, "--heartbeat-interval", str(self.heartbeat),
                                   controller=self.controller_url, model=spec["model"], name=name, wait=False)
        # The held streams (a thousand per worker at 100 ms a token) cannot be paced by starlette's 40 threads:
        # those workers stream from an async generator, as FastChat's vllm_worker does.
        generator = ("--generator", "async" if pool == "hold" else "thread")
        return fastchat.FastChatCodeWorker(python, self.run_dir, *timing, *generator, controller=self.controller_url,
                                           model=spec["model"], name=name, heartbeat=self.heartbeat, wait=False)

    def start(self) -> None:
        log(f"setup: FastChat venv ({fastchat.venv_path('controller')}, fschat 0.2.36)")
        python = fastchat.ensure_fastchat_venv("controller")
        self.controller = self._started(fastchat.FastChatController(python, self.run_dir))
        self.controller_url = self.controller.address
        # All workers start at once, then each is waited for.
        for kind in self.kinds:
            for pool in self.pools[kind]:
                self.workers[kind][pool] = [self._started(self._worker(python, kind, pool, i))
                                            for i in range(WORKERS_PER_POOL)]
        every = self.every_worker()
        for worker in every:
            worker.wait_ready(timeout=60)
        addresses = {w.address for w in every}
        wait_until("every worker registered", lambda: self._registered() == addresses, self.controller.proc,
                   timeout=60)
        models = {spec["model"] for pools in self.pools.values() for spec in pools.values()}
        log(f"setup: controller {self.controller_url}, {len(addresses)} workers registered "
            f"({', '.join(f'{kind}: ' + ', '.join(p['model'] for p in self.pools[kind].values()) for kind in self.kinds)})")

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
            **{f"workers:{kind}": Group(f"workers:{kind}", [w.proc.pid for members in self.workers[kind].values()
                                                            for w in members]) for kind in self.kinds},
        }
        self.cpu = CpuMeter(list(self.groups.values()))

    def every_worker(self) -> list:
        return [w for pools in self.workers.values() for members in pools.values() for w in members]

    def _started(self, process):
        self.started.append(process)
        return process

    def _registered(self) -> set[str]:
        # POST /refresh_all_workers is what the gateway and FastChat call too; list_workers is not in 0.2.36,
        # so ask for each model's workers through /get_worker_address until both were returned.
        seen = set()
        for pools in self.pools.values():
            for spec in pools.values():
                for _ in range(3 * WORKERS_PER_POOL):
                    seen.add(self.controller.post("/get_worker_address", {"model": spec["model"]})
                             .json()["address"])
        seen.discard("")
        return seen

    def stop(self) -> None:
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others all the same
                log(f"warning: stopping {process.proc.name} (pid {process.proc.pid}): {exc!r}")

    def worker_stats(self, kind: str, pool: str) -> list[dict]:
        return [w.stats() for w in self.workers[kind][pool]]

    def reset_workers(self, kind: str, pool: str) -> None:
        for w in self.workers[kind][pool]:
            w.reset()

    def gateway_payload(self, kind: str, pool: str, stream: bool) -> tuple[dict, str]:
        """The exact worker payload the gateway sends for our chat request (read back from the workers), so the
        direct target gets the same work; a constructed equivalent if that fails."""
        model = self.pools[kind][pool]["model"]
        max_tokens = self.pools[kind][pool]["tokens"]
        try:
            self.reset_workers(kind, pool)
            body = loadgen.chat_request(model, MESSAGE, max_tokens, stream=False)
            requests.post(self.gateway_url + "/v1/chat/completions", json=body, timeout=30).raise_for_status()
            payloads = [p for s in self.worker_stats(kind, pool) for p in s.get("generate_payloads", [])]
            if payloads:
                return payloads[-1], "captured from the gateway"
        except Exception as exc:  # noqa: BLE001
            log(f"warning: could not capture the gateway's worker payload ({exc!r}); using a constructed one")
        prompt = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  f"helpful, detailed, and polite answers to the user's questions. USER: {MESSAGE} ASSISTANT:")
        return loadgen.worker_request(model, prompt, max_tokens), "constructed"
