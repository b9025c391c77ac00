"""Starting the gateway (real gunicorn) and simulated workers as processes, for the end-to-end tests."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

import procs

BIN = Path(sys.executable).parent
SIMULATED_WORKER = [sys.executable, "-m", "bench.simworker"]  # run in procs.REPO_ROOT


class SimulatedWorker:
    """bench/simworker on a free port; registered with `controller` when one is given."""

    def __init__(self, run_dir: Path, *args: str, controller: str | None = None, model: str = "sim-model",
                 name: str = "sim-worker"):
        self.port = procs.free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.model = model
        cmd = [*SIMULATED_WORKER, "--host", "127.0.0.1", "--port", str(self.port),
               "--model-names", model, *args]
        cmd += ["--controller-address", controller] if controller else ["--no-register"]
        self.proc = procs.Proc(cmd, log_dir=run_dir, name=name, cwd=procs.REPO_ROOT)
        self.proc.wait_http(f"{self.address}/worker_get_status", method="POST", timeout=15,
                            ok=lambda r: r.status_code == 200)

    def stats(self) -> dict:
        return requests.get(f"{self.address}/sim/stats", timeout=5).json()

    def reset(self) -> None:
        requests.post(f"{self.address}/sim/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        self.proc.stop()


class Gateway:
    """fastchat-gateway under real gunicorn (`gunicorn -c gunicorn.conf.py wsgi:app`), configured by env."""

    def __init__(self, run_dir: Path, name: str = "gateway", **settings: str):
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "16", **settings}
        self.proc = procs.Proc([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], log_dir=run_dir,
                               name=name, extra_env=env, cwd=procs.REPO_ROOT)
        self.proc.wait_http(f"{self.url}/health", timeout=30, ok=lambda r: r.status_code == 200)

    def stop(self) -> None:
        self.proc.stop()


def wait_registered(controller_address: str, model: str, timeout: float = 15) -> None:
    """Until the controller lists `model`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = requests.post(f"{controller_address}/list_models", timeout=5).json()["models"]
        if model in models:
            return
        time.sleep(0.1)
    raise AssertionError(f"{model} never registered with the controller at {controller_address}")
