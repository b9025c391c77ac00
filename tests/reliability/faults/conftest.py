"""Fault injection (issue 7, part 3), one file per setup: every simulated-worker fault on the shared stack
(test_worker_faults.py), workers that disappear and come back with no controller (test_workers_come_and_go.py), a
real FastChat controller that goes down (test_controller_down.py), a controller that is slow or answers garbage
(test_controller_slow_or_broken.py). What each fault must produce, and the checks, are in fault_checks.py.

All four add to one report section, "faults", through the session's `tally`.
"""
from __future__ import annotations

import collections

import pytest


class Tally:
    """Counts for report section "faults"."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.scenarios: set[str] = set()
        self.failed: list[str] = []

    def case(self, scenario: str, *, requests: int = 0, faults: int = 0, errors: int = 0) -> None:
        self.counts["cases"] += 1
        self.counts["requests"] += requests
        self.counts["faults_injected"] += faults
        self.counts["error_replies"] += errors
        self.scenarios.add(scenario)

    def passed(self) -> None:
        self.counts["passed"] += 1


@pytest.fixture(scope="session")
def tally(report):
    collected = Tally()
    yield collected
    counts = dict(collected.counts)
    counts.setdefault("passed", 0)
    report.add("faults", **counts, failed=counts.get("cases", 0) - counts["passed"],
               scenarios=sorted(collected.scenarios))
