"""A simulated worker that a fault test can stop and start again on the same port."""
from __future__ import annotations

import sys

import requests

import procs
from fault_checks import MODEL
from stack import SIMULATED_WORKER


class Worker:
    """bench/simulated_worker.py on a fixed port, which can be stopped and started again on that port."""

    def __init__(self, run_dir, name: str, *args: str, controller: str | None = None, model: str = MODEL):
        self.run_dir = run_dir
        self.name = name
        self.model = model
        self.port = procs.free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, str(SIMULATED_WORKER), "--host", "127.0.0.1", "--port", str(self.port),
                    "--model-names", model, *args]
        self.cmd += ["--controller-address", controller] if controller else ["--no-register"]
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = procs.Proc(self.cmd, log_dir=self.run_dir, name=self.name)
        self.proc.wait_http(f"{self.address}/worker_get_status", method="POST", timeout=15,
                            ok=lambda r: r.status_code == 200)

    def stats(self) -> dict:
        return requests.get(f"{self.address}/sim/stats", timeout=5).json()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
