"""Simulated FastChat workers (bench/simworker) as processes on free ports of 127.0.0.1."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from harness.procs import REPO_ROOT, Proc, free_port

SIMULATED_WORKER = [sys.executable, "-m", "bench.simworker"]  # run from REPO_ROOT


def command(port: int, model: str, *args: str, controller: str | None = None) -> list[str]:
    """The command line of a simulated worker, to run from REPO_ROOT: the only place that says how one starts.
    Registered with ``controller`` when one is given (heart-beating), else standalone (``--no-register``)."""
    cmd = [*SIMULATED_WORKER, "--host", "127.0.0.1", "--port", str(port), "--model-names", model,
           *args]
    return cmd + (["--controller-address", controller] if controller else ["--no-register"])


class SimulatedWorker:
    """A simulated worker serving ``model`` on a free port; ``start()`` again after ``stop()`` reuses that port.

    ``wait=False`` returns at once (start several, then ``wait_ready()`` on each). ``multimodal=True`` starts a
    vision worker (``--multimodal``: registered as multimodal, checks images like FastChat's sglang_worker and
    describes them in its reply); ``received()`` says what images and prompts reached it."""

    def __init__(self, run_dir: Path, *args: str, controller: str | None = None, model: str = "sim-model",
                 name: str = "sim-worker", wait: bool = True, multimodal: bool = False):
        self.run_dir = run_dir
        self.name = name
        self.model = model
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.cmd = command(self.port, model, *args, *(["--multimodal"] if multimodal else []), controller=controller)
        self.proc: Proc | None = None
        self.start(wait=wait)

    def start(self, wait: bool = True) -> None:
        self.proc = Proc(self.cmd, log_dir=self.run_dir, name=self.name, cwd=REPO_ROOT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15) -> None:
        try:
            self.proc.wait_http(f"{self.address}/worker_get_status", method="POST", timeout=timeout,
                                ok=lambda r: r.status_code == 200)
        except BaseException:
            self.proc.stop()
            raise

    def stats(self) -> dict:
        return requests.get(f"{self.address}/sim/stats", timeout=5).json()

    def payloads(self) -> list[dict]:
        """The last generation payloads it received (the gateway's exact worker payloads, images included)."""
        return self.stats()["generate_payloads"]

    def received(self) -> list[dict]:
        """Per logged generation payload: ``{"prompt", "placeholders", "has_images", "images": [{"form", "bytes",
        "type", "sha256"}]}`` (bench/simworker/vision.py report), oldest first."""
        return requests.get(f"{self.address}/sim/images", timeout=5).json()["generate"]

    def reset(self) -> None:
        requests.post(f"{self.address}/sim/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@contextmanager
def simulated_workers(run_dir: Path, templates: dict[str, str], *args: str,
                      name: str = "sim") -> Iterator[dict[str, SimulatedWorker]]:
    """One standalone simulated worker per model of ``templates`` (model -> conversation template), started
    together and stopped on exit; ``args`` go to each (e.g. a token delay)."""
    started = {model: SimulatedWorker(run_dir, "--conv-template", template, *args, model=model,
                                      name=f"{name}-{template}", wait=False)
               for model, template in templates.items()}
    try:
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.stop()
