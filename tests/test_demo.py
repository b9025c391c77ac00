"""`make demo` (bench/demo.py): on free ports it serves the gateway over two simulated workers and stops everything
it started on SIGTERM; a taken port ends it at once with a clear message and a non-zero exit."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e  # starts real processes on 127.0.0.1

ROOT = Path(__file__).resolve().parent.parent
KEY = "demo-test-key"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "API_KEYS": KEY}
    for name in ("CONTROLLER_ADDRESS", "DEMO_PORT", "DEMO_WORKER_PORTS"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "bench/demo.py", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_demo_serves_on_free_ports_and_stops_by_pid():
    port, workers = free_port(), [free_port(), free_port()]
    proc = demo("--port", str(port), "--worker-ports", ",".join(map(str, workers)))
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("demo is running at" in line for line in output):
            assert proc.poll() is None, f"demo exited with {proc.returncode}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no banner within 60 s"
            time.sleep(0.2)
        banner = "".join(output)
        assert f"http://127.0.0.1:{port}/v1" in banner and f"Bearer {KEY}" in banner
        reply = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                              headers={"Authorization": f"Bearer {KEY}"},
                              json={"model": "demo-model", "messages": [{"role": "user", "content": "Hello!"}]})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["choices"][0]["message"]["content"].split()) == 24
        # The printed tool-calling example, pasted: its payload gets a call.
        tools_payload = json.loads(re.findall(r"-d '(.*)'", banner)[-1])
        assert "tools" in tools_payload
        reply = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json=tools_payload,
                              headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["finish_reason"] == "tool_calls"
        assert reply.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert not any(refuses(p) for p in workers)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0
    assert all(refuses(p) for p in [port, *workers]), "the demo left a process listening"


@pytest.mark.parametrize("taken", ["gateway", "worker"])
def test_a_taken_port_fails_clearly(taken):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        port, workers = (busy_port, "auto") if taken == "gateway" else (free_port(), f"{free_port()},{busy_port}")
        proc = demo("--port", str(port), "--worker-ports", workers)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1
    setting = "DEMO_PORT" if taken == "gateway" else "DEMO_WORKER_PORTS"
    assert f"demo: port {busy_port} on 127.0.0.1 is in use" in err and setting in err
    assert "running" not in out
