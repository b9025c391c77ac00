"""CPU seconds and memory of the processes under measurement, read through psutil.

psutil has no peak resident set size on Linux (giampaolo/psutil#383), so that one figure, the kernel's own
high-water mark VmHWM, is read from /proc/<pid>/status: a sampled maximum would miss short spikes.
"""
from __future__ import annotations

import os
import time

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)  # ZombieProcess is a NoSuchProcess


def rss_kib(pid: int) -> int | None:
    """Resident set size of one process (KiB); None when it is gone."""
    try:
        return _rss_kib(psutil.Process(pid))
    except _GONE:
        return None


def tree_rss_kib(pid: int) -> int:
    """Resident set size of a process and all its descendants (a gunicorn master and its workers), KiB."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except _GONE:
        return 0
    return sum(rss for rss in (_rss_kib(p) for p in tree) if rss is not None)


def peak_rss_kib(pid: int) -> int | None:
    """The kernel's high-water mark of the process's resident set (VmHWM, KiB); None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except OSError:
        return None


def _rss_kib(process: psutil.Process) -> int | None:
    try:
        return process.memory_info().rss // 1024
    except _GONE:
        return None


class Group:
    """Processes measured together: root PIDs, optionally with their direct children (gunicorn's workers), or
    with ``recursive`` every descendant (a process tree such as uvicorn's supervisor and its spawned workers)."""

    def __init__(self, name: str, pids: list[int], children: bool = False, recursive: bool = False):
        self.name = name
        self.roots = [psutil.Process(pid) for pid in pids]
        self.with_children = children or recursive
        self.recursive = recursive
        self.peak_rss_kib: dict[int, int] = {}

    def processes(self) -> list[psutil.Process]:
        found = list(self.roots)
        if self.with_children:
            for root in self.roots:
                try:
                    found += root.children(recursive=self.recursive)
                except _GONE:
                    pass
        return found

    def cpu(self) -> dict[int, float]:
        """PID -> CPU seconds (user + system) so far, of every process of the group that is still there."""
        out = {}
        for process in self.processes():
            try:
                times = process.cpu_times()
            except _GONE:
                continue
            out[process.pid] = times.user + times.system
        return out

    def sample_rss(self) -> None:
        """Remember each process's largest resident set seen so far (``peak_rss_kib``)."""
        for process in self.processes():
            rss = _rss_kib(process)
            if rss is not None and rss > self.peak_rss_kib.get(process.pid, 0):
                self.peak_rss_kib[process.pid] = rss

    def memory(self) -> list[dict]:
        """One row per process: pid, role (master/worker of a gunicorn, or process), current and peak RSS in MB."""
        root_pids = {p.pid for p in self.roots}
        rows = []
        for process in self.processes():
            rss, hwm = _rss_kib(process), peak_rss_kib(process.pid)
            if rss is None:
                continue
            role = "process" if not self.with_children else "master" if process.pid in root_pids else "worker"
            rows.append({"pid": process.pid, "role": role, "rss_mb": round(rss / 1024, 1),
                         "hwm_mb": round((hwm or 0) / 1024, 1)})
        return rows


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all CPUs): everything but idle and iowait."""
    times = psutil.cpu_times()
    # guest time is inside user already, so it is not added again
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """Snapshots of the groups' CPU seconds, this process's (the load generator's) and the machine's."""

    def __init__(self, groups: list[Group]):
        self.groups = groups

    def snapshot(self) -> dict:
        return {"groups": {g.name: g.cpu() for g in self.groups}, "loadgen": self_cpu(), "machine": machine_cpu(),
                "time": time.monotonic()}

    @staticmethod
    def delta(before: dict, after: dict) -> dict[str, float]:
        out = {}
        for name, now in after["groups"].items():
            then = before["groups"].get(name, {})
            # A process that appeared in between (a restarted gunicorn worker) counts from zero.
            out[name] = round(sum(v - then.get(pid, 0.0) for pid, v in now.items()), 3)
        out["loadgen"] = round(after["loadgen"] - before["loadgen"], 3)
        # CPU used by processes that are not ours (other work on the machine): noise in the numbers.
        ours = sum(out.values())
        out["other"] = round(max(0.0, after["machine"] - before["machine"] - ours), 3)
        out["machine_capacity"] = round((after["time"] - before["time"]) * len(os.sched_getaffinity(0)), 3)
        return out
