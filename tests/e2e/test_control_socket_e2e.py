"""Two gateways on one machine (real gunicorn, gunicorn.conf.py): neither takes over the other's control socket.

gunicorn's own default is one socket path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl): a
second instance replaced the first's, and `gunicornc` then steered the wrong server. gunicorn.conf.py turns it off
unless GUNICORN_CONTROL_SOCKET gives the instance a path of its own.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import requests
from gunicorn.ctl.client import ControlClient

from harness.gateway import Gateway


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path must stay under ~100 bytes."""
    with tempfile.TemporaryDirectory(prefix="gw-ctl-") as path:
        yield Path(path)


def start_two(run_dir: Path, name: str, first_env: dict, second_env: dict) -> list[Gateway]:
    started = []
    try:
        started.append(Gateway(run_dir, name=f"{name}-a", WEB_CONCURRENCY="1", **first_env))
        started.append(Gateway(run_dir, name=f"{name}-b", WEB_CONCURRENCY="1", **second_env))
    except BaseException:
        for gateway in started:
            gateway.stop()
        raise
    return started


def healthy(gateway: Gateway) -> bool:
    return gateway.proc.alive and requests.get(f"{gateway.url}/health", timeout=5).status_code == 200


def master_pid(socket_path: Path, timeout: float = 10) -> int:
    """The pid of the gunicorn master that answers on `socket_path` (`gunicornc show stats`)."""
    deadline = time.monotonic() + timeout
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with ControlClient(str(socket_path), timeout=5) as client:
        return client.send_command("show stats")["pid"]


def test_by_default_no_instance_makes_the_shared_socket(run_dir, short_dir):
    home, runtime = short_dir / "home", short_dir / "run"
    home.mkdir()
    runtime.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}  # where gunicorn's default path would be
    gateways = start_two(run_dir, "gateway-no-ctl", env, env)
    try:
        assert all(healthy(gateway) for gateway in gateways)
        assert list(runtime.iterdir()) == [] and list(home.iterdir()) == []
        gateways[1].stop()
        assert healthy(gateways[0])
    finally:
        for gateway in gateways:
            gateway.stop()


def test_each_instance_answers_on_its_own_socket(run_dir, short_dir):
    first_socket, second_socket = short_dir / "a.ctl", short_dir / "b.ctl"
    first, second = start_two(run_dir, "gateway-ctl", {"GUNICORN_CONTROL_SOCKET": str(first_socket)},
                              {"GUNICORN_CONTROL_SOCKET": str(second_socket)})
    try:
        assert master_pid(first_socket) == first.proc.pid
        assert master_pid(second_socket) == second.proc.pid
        assert healthy(first) and healthy(second)
        second.stop()
        assert not second_socket.exists()
        assert master_pid(first_socket) == first.proc.pid and healthy(first)  # the first's socket is untouched
    finally:
        first.stop()
        second.stop()
