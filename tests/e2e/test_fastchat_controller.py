"""Smoke tests: the real FastChat 0.2.36 controller runs from its venv and the
fixtures that start/stop it work.  No model worker is needed: a fake worker is
registered with an explicit status and heart-beat checking off."""

from __future__ import annotations

import os

import procs


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
    with procs.FastChatController(
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

    assert sorted(fastchat_controller.list_models()) == ["fake-model-a", "fake-model-b"]
    for model in ("fake-model-a", "fake-model-b"):
        resp = fastchat_controller.post("/get_worker_address", {"model": model})
        assert resp.status_code == 200
        assert resp.json() == {"address": fake_address}
    # An unknown model gets the empty address (FastChat's "no worker" answer).
    resp = fastchat_controller.post("/get_worker_address", {"model": "no-such-model"})
    assert resp.json() == {"address": ""}
