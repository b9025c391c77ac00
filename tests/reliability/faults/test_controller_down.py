"""A real FastChat controller that goes down and comes back, and the only worker of a model that dies and
returns: one simulated worker registered with the controller, a gateway with CONTROLLER_READ_TIMEOUT=1."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from harness import fastchat, procs
from fault_checks import (KEY, READ_TIMEOUT, Expect, body_for, call, model_requests, normal_problems,
                          outcome_problems, ready_status, unavailable_problems, wait_idle, wait_success)
from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


@pytest.fixture(scope="module")
def fastchat_python():
    return procs.require(fastchat.ensure_fastchat_venv, "controller")


@pytest.fixture(scope="module")
def controlled(fastchat_python, run_dir):
    """A real FastChat controller, one simulated worker registered to it (heartbeat every 0.5 s), a gateway with
    CONTROLLER_READ_TIMEOUT=1."""
    started = []
    try:
        ctl = fastchat.FastChatController(fastchat_python, run_dir, name="fastchat-controller-faults")
        started.append(ctl)
        worker = SimulatedWorker(run_dir, "--tokens", "8", "--heartbeat-interval", "0.5", name="sim-faults-controlled",
                                 controller=ctl.address, model="ctl-model")
        started.append(worker)
        wait_registered(ctl.address, "ctl-model")
        gw = Gateway(run_dir, name="gateway-faults-controller", CONTROLLER_ADDRESS=ctl.address, API_KEYS=KEY,
                     CONTROLLER_READ_TIMEOUT="1", WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        stack = SimpleNamespace(controller=ctl, worker=worker, gateway=gw, python=fastchat_python, run_dir=run_dir)
        yield stack
        started[0] = stack.controller  # it may have been replaced by a restart
    finally:
        for proc in reversed(started):
            proc.stop()

def test_controller_down_then_back(controlled, tally):
    url = controlled.gateway.url
    problems = []
    for i, out in enumerate(model_requests(url, "ctl-model", "up")[:3]):
        endpoint, stream = (("chat", False), ("chat", True), ("completions", False))[i]
        problems += normal_problems(endpoint, out, stream, f"controller up ({endpoint})")
    assert not problems, "\n".join(problems)
    port = controlled.controller.port
    controlled.controller.stop()
    expect = Expect(503, "upstream_unavailable", 50005, max_seconds=5.0)
    # Twice: within the model-list cache TTL (5 s), and with it expired (has_model then asks the controller).
    problems += unavailable_problems(model_requests(url, "ctl-model", "down"), expect, "controller down")
    if ready_status(url) != 503:
        problems.append("/ready not 503 with the controller down")
    time.sleep(5.2)
    problems += unavailable_problems(model_requests(url, "ctl-model", "down"), expect,
                                     "controller down, model list expired")
    controlled.controller = fastchat.FastChatController(controlled.python, controlled.run_dir,
                                                     name="fastchat-controller-faults-restarted", port=port)
    wait_registered(controlled.controller.address, "ctl-model", timeout=15)  # re-registered on a heartbeat
    problems += wait_success(url, "ctl-model", timeout=10)
    problems += wait_idle(controlled.worker)
    tally.case("controller:down-and-back", requests=14, faults=1, errors=8)
    assert not problems, "\n".join(problems)
    tally.passed()


def test_registered_worker_dies_and_returns(controlled, tally):
    """With a controller: the only worker of a model gone -> 503 upstream_unavailable, quickly (failover to
    nothing); the worker back on the same address (it registers again) -> requests succeed."""
    url = controlled.gateway.url
    problems = wait_success(url, "ctl-model", timeout=10)
    controlled.worker.stop()
    out = call(url, "chat", body_for("chat", "anyone there") | {"model": "ctl-model"})
    problems += outcome_problems("chat", out, False, Expect(503, "upstream_unavailable", 50005, max_seconds=5.0))
    controlled.worker.start()
    wait_registered(controlled.controller.address, "ctl-model", timeout=15)
    problems += wait_success(url, "ctl-model", timeout=10)
    problems += wait_idle(controlled.worker)
    tally.case("controller:worker-dies-and-returns", requests=6, faults=1, errors=1)
    assert not problems, "\n".join(problems)
    tally.passed()
