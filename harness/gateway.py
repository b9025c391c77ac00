"""The gateway as it runs in production: ``gunicorn -c gunicorn.conf.py wsgi:app`` from the repository, configured
by environment variables, on a free port of 127.0.0.1."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from app import cli
from harness.procs import REPO_ROOT, Proc, free_port
from harness.simworkers import SimulatedWorker

BIN = Path(sys.executable).parent  # the virtualenv's scripts: gunicorn, fastchat-gateway
# What the test tiers run with unless a test says otherwise: two processes, so that every test also sees the
# state the processes do not share.
TEST_SETTINGS = {"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "16"}


def production_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` without any variable the gateway reads, so that what gunicorn.conf.py and the app default to
    is what runs (the benchmark measures the defaults, not the caller's shell)."""
    settings = cli.gateway_variables(environ)
    return {name: value for name, value in environ.items() if name not in settings}


class Gateway:
    """fastchat-gateway under real gunicorn, listening on ``url``; ready once /health answers 200.

    The environment is ``environ`` (default: this process's plus TEST_SETTINGS), then BIND, then ``settings``.
    ``config`` is the gunicorn config file, relative to the repository or absolute.
    """

    def __init__(self, run_dir: Path, name: str = "gateway", *, environ: Mapping[str, str] | None = None,
                 config: str | os.PathLike = "gunicorn.conf.py", **settings: str):
        self.run_dir = Path(run_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = str(config)
        base = {**os.environ, **TEST_SETTINGS} if environ is None else dict(environ)
        self.env = {**base, "BIND": f"127.0.0.1:{self.port}", **settings}
        self.proc = Proc([str(BIN / "gunicorn"), "-c", self.config, "wsgi:app"], log_dir=run_dir, name=name,
                         env=self.env, cwd=REPO_ROOT)
        try:
            self.proc.wait_http(f"{self.url}/health", timeout=30, ok=lambda r: r.status_code == 200)
        except BaseException:
            self.proc.stop()
            raise

    def print_config(self, names: Iterable[str]) -> dict[str, str]:
        """gunicorn's own view of the settings ``names`` with this gateway's config and environment
        (``gunicorn --print-config``); empty when it cannot tell."""
        # A metrics folder in the run dir: else gunicorn.conf.py makes a temporary one that --print-config,
        # which never runs the server's exit hook, would leave behind.
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "print-config-metrics")}
        try:
            out = subprocess.run([str(BIN / "gunicorn"), "-c", self.config, "--print-config", "wsgi:app"],
                                 cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        wanted = set(names)
        settings = {}
        for line in out.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in wanted:
                settings[name.strip()] = value.strip()
        return settings

    def stop(self) -> None:
        self.proc.stop()


@contextmanager
def over_simulated_worker(run_dir: Path, name: str, *worker_args: str,
                          **settings: str) -> Iterator[tuple[Gateway, SimulatedWorker]]:
    """A gateway with no controller (WORKER_ADDRESSES) in front of one simulated worker started with
    ``worker_args``: the smallest real stack. Both are named after ``name`` and stopped on exit."""
    worker = SimulatedWorker(run_dir, *worker_args, name=f"sim-{name}")
    try:
        gateway = Gateway(run_dir, name=f"gateway-{name}", WORKER_ADDRESSES=worker.address, **settings)
        try:
            yield gateway, worker
        finally:
            gateway.stop()
    finally:
        worker.stop()
