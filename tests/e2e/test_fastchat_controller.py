"""Smoke tests: the real FastChat 0.2.36 controller runs from its venv and the
fixtures that start/stop it work.  No model worker is needed: a fake worker is
registered with an explicit status and heart-beat checking off."""

from __future__ import annotations

import os

from harness import fastchat, procs


def _is_zombie_free(pid: int) -> bool:
    """True when /proc/PID no longer belongs to our (reaped) child.

    A reaped PID may in principle be reused by an unrelated process; that
    process is not a child of ours, so its parent differs from us."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except FileNotFoundError:
        return True
    return int(fields["PPid"].strip()) != os.getpid()


def test_controller_answers_list_models(fastchat_controller):
    assert fastchat_controller.proc.alive()
    assert fastchat_controller.address.startswith("http://127.0.0.1:")
    resp = fastchat_controller.post("/list_models")
    assert resp.status_code == 200
    # The session controller is shared with other e2e tests, which may have
    # registered workers already; a fresh one is checked below.
    assert isinstance(resp.json()["models"], list)


def test_fresh_controller_is_empty_and_stops(fastchat_venv, run_dir):
    with fastchat.FastChatController(
        fastchat_venv / "bin" / "python", run_dir, name="fresh-controller"
    ) as ctl:
        resp = ctl.post("/list_models")
        assert resp.status_code == 200
        assert resp.json() == {"models": []}
    # Stopped by PID (TERM, then KILL after the grace period) and reaped.
    assert ctl.proc.returncode is not None
    assert not os.path.exists(f"/proc/{ctl.proc.pid}/status") or _is_zombie_free(ctl.proc.pid)


def test_register_fake_worker(fastchat_controller):
    fake_address = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens there
    status = {"model_names": ["fake-model-a", "fake-model-b"], "speed": 1, "queue_length": 0}
    resp = fastchat_controller.post(
        "/register_worker",
        {"worker_name": fake_address, "check_heart_beat": False, "worker_status": status},
    )
    assert resp.status_code == 200

    # other tests share this controller and register their own models
    assert {"fake-model-a", "fake-model-b"} <= set(fastchat_controller.list_models())
    for model in ("fake-model-a", "fake-model-b"):
        resp = fastchat_controller.post("/get_worker_address", {"model": model})
        assert resp.status_code == 200
        assert resp.json() == {"address": fake_address}
    # An unknown model gets the empty address (FastChat's "no worker" answer).
    resp = fastchat_controller.post("/get_worker_address", {"model": "no-such-model"})
    assert resp.json() == {"address": ""}


# --- the harness itself (harness/procs.py) -----------------------------------

def test_proc_kills_a_process_that_ignores_sigterm(run_dir):
    import sys
    import time

    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring', 'TERM', flush=True)\n"  # the log's first line echoes the command
        "time.sleep(600)\n"
    )
    with procs.Proc([sys.executable, "-c", code], log_dir=run_dir, name="ignores-term") as p:
        deadline = time.monotonic() + 10
        while "\nignoring TERM" not in p.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        rc = p.stop(grace=0.5)
        assert rc == -9  # TERM ignored, KILLed after the grace period
        assert 0.4 < time.monotonic() - t0 < 5
    assert p.returncode == -9


def test_proc_wait_http_fails_fast_with_log_tail(run_dir):
    import sys
    import time

    import pytest

    code = "print('line-one'); print('about to die'); raise SystemExit(7)"
    with procs.Proc([sys.executable, "-c", code], log_dir=run_dir, name="dies") as p:
        t0 = time.monotonic()
        with pytest.raises(procs.ProcError) as info:
            p.wait_http(f"http://127.0.0.1:{procs.free_port()}/", timeout=30)
        assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "exited with code 7" in msg
    assert "about to die" in msg
