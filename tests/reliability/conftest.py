"""Fixtures for the reliability suite (`make reliability`): a real stack on 127.0.0.1 and a report file.

Every test here is bounded in requests and time; every process is stopped by PID.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.gateway import Gateway
from harness.procs import REPO_ROOT
from harness.simworkers import SimulatedWorker

REPORT = Path(os.environ.get("RELIABILITY_REPORT", REPO_ROOT / "reports" / "reliability.json"))
KEY = "sk-reliability"


class Report:
    """Counts gathered by the tests, written as JSON at the end of the session."""

    def __init__(self) -> None:
        self.sections: dict[str, dict] = {}

    def add(self, section: str, **counts) -> None:
        """Merge counts into a section: numbers are added up, anything else replaced."""
        entry = self.sections.setdefault(section, {})
        for name, value in counts.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name in entry:
                entry[name] += value
            else:
                entry[name] = value

    def write(self) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      "sections": self.sections}, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def report():
    collected = Report()
    yield collected
    collected.write()


@pytest.fixture(scope="session")
def sim_worker(run_dir):
    """A simulated worker (no controller) with a small context, so overflow paths are reachable."""
    worker = SimulatedWorker(run_dir, "--tokens", "8", "--context-length", "512", name="sim-reliability")
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def gateway(run_dir, sim_worker):
    """The gateway under gunicorn (2 processes) in front of `sim_worker`, keys required, short worker timeout."""
    gateway = Gateway(run_dir, name="gateway-reliability", WORKER_ADDRESSES=sim_worker.address, API_KEYS=KEY,
                      WORKER_READ_TIMEOUT="3", WORKER_STATUS_INTERVAL="1", MAX_REQUEST_BODY_BYTES=str(1024 * 1024))
    yield gateway
    gateway.stop()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {KEY}"}
