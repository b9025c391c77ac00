"""The `fastchat-gateway` console script (app/cli.py) as a real process: FastChat's API server flags in, the app
under gunicorn out (the script runs gunicorn in its own process, so its PID is gunicorn's master)."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import requests

from app import cli
from harness import procs
from harness.fastchat import wait_registered
from harness.gateway import BIN
from harness.simworkers import SimulatedWorker

SCRIPT = BIN / "fastchat-gateway"
CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "Tell me something"}], "max_tokens": 8}


def clean_env() -> dict[str, str]:
    """The test runner's environment without any gateway variable, so only the flags configure the gateway."""
    return {name: value for name, value in os.environ.items() if name not in cli.gateway_variables(os.environ)}


class CliGateway:
    """`fastchat-gateway --host 127.0.0.1 --port <free> ARGS`, started from `run_dir` (not the repo)."""

    def __init__(self, run_dir: Path, *args: str, name: str = "cli-gateway"):
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = procs.Proc([str(SCRIPT), "--host", "127.0.0.1", "--port", str(self.port), *args],
                               log_dir=run_dir, name=name, env=clean_env(), cwd=run_dir)
        try:
            self.proc.wait_http(f"{self.url}/health", timeout=30, ok=lambda r: r.status_code == 200)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def static_stack(run_dir):
    """A simulated worker and the CLI-started gateway dispatching to it directly (--worker-addresses)."""
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "8", name="cli-sim")
        started.append(worker)
        gateway = CliGateway(run_dir, "--worker-addresses", worker.address, "--api-keys", "k1,k2", "--workers", "1")
        started.append(gateway)
        yield gateway
    finally:
        for proc in reversed(started):
            proc.stop()


def test_console_script_is_installed():
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), "run: .venv/bin/pip install -e '.[tokens,test]'"


def children(pid: int) -> list[int]:
    """PIDs of the processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_script_is_gunicorns_master_in_the_repo(static_stack):
    pid = static_stack.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(SCRIPT).encode() in cmdline  # the script itself, not a gunicorn it started or became
    assert os.readlink(f"/proc/{pid}/cwd") == str(cli.REPO_ROOT)  # as --chdir, although started from run_dir
    log = static_stack.proc.log_text()
    assert f"Listening at: http://127.0.0.1:{static_stack.port} ({pid})" in log  # gunicorn's master is this PID
    assert log.count("Booting worker with pid") == 1  # --workers 1
    [worker] = children(pid)
    assert f"Booting worker with pid: {worker}" in log


def test_models_need_one_of_the_keys(static_stack):
    url = f"{static_stack.url}/v1/models"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers=auth("k3"), timeout=10).status_code == 401
    # The static worker list is polled in the background; the model appears once the worker has answered.
    resp = static_stack.proc.wait_http(url, timeout=15, headers=auth("k2"),
                                       ok=lambda r: r.status_code == 200 and r.json()["data"])
    assert [model["id"] for model in resp.json()["data"]] == ["sim-model"]


def test_chat_completion(static_stack):
    resp = requests.post(f"{static_stack.url}/v1/chat/completions", json=CHAT, headers=auth("k1"), timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert len(body["choices"][0]["message"]["content"].split()) == 8
    assert body["usage"]["completion_tokens"] == 8


def test_controller_address(fastchat_controller, run_dir):
    """--controller-address: FastChat's real controller routes to a registered simulated worker."""
    ctl = fastchat_controller.address
    model = "cli-ctl-model"  # unique: the controller is shared by the session
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "5", controller=ctl, model=model, name="cli-sim-ctl")
        started.append(worker)
        wait_registered(ctl, model)
        gateway = CliGateway(run_dir, "--controller-address", ctl, "--workers", "1", "--threads", "4",
                             name="cli-gateway-ctl")
        started.append(gateway)
        resp = requests.get(f"{gateway.url}/v1/models", timeout=10)  # no --api-keys: no auth
        assert resp.status_code == 200 and model in [m["id"] for m in resp.json()["data"]]
        resp = requests.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": model}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["choices"][0]["message"]["content"].split()) == 5
    finally:
        for proc in reversed(started):
            proc.stop()
        # Leave the shared controller as we found it: a refresh drops workers that no longer answer.
        deadline = time.monotonic() + 15
        while model in fastchat_controller.list_models() and time.monotonic() < deadline:
            fastchat_controller.post("/refresh_all_workers")
            time.sleep(0.2)
    assert model not in fastchat_controller.list_models()


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=clean_env() if env is None else env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_print_env_carries_cors_variables():
    done = run_script("--print-env", "--allowed-origins", '["https://a.example", "https://b.example"]',
                      "--allowed-headers", '["Authorization", "Content-Type"]', "--allow-credentials")
    assert done.returncode == 0, done.stderr
    printed = dict(line.split("=", 1) for line in shlex.split(done.stdout))
    assert printed == {"BIND": "localhost:8000", "CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example",
                       "CORS_ALLOWED_METHODS": "*", "CORS_ALLOWED_HEADERS": "Authorization,Content-Type",
                       "CORS_ALLOW_CREDENTIALS": "true"}


def test_usage_errors_exit_2_without_starting_gunicorn():
    done = run_script("--ssl")
    assert done.returncode == 2 and "SSL_KEYFILE" in done.stderr
    done = run_script("--allowed-origins", "[*]")
    assert done.returncode == 2 and "argument --allowed-origins: invalid JSON" in done.stderr


def test_sigterm_stops_it_as_it_stops_gunicorn(run_dir):
    """SIGTERM reaches gunicorn's own handler in the script's process: a graceful stop with exit status 0."""
    gateway = CliGateway(run_dir, "--workers", "1", name="cli-gateway-term")
    assert gateway.proc.stop(grace=15) == 0
    assert "Shutting down: Master" in gateway.proc.log_text()
