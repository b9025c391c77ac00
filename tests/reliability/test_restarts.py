"""Restarts and crashes under load (issue 18): real gunicorn (2 processes), simulated workers, a real FastChat
controller where one is restarted, and a mixed load running throughout (whole and streamed chat requests from
CLIENTS threads, each on a fresh connection, as a load balancer opens them).

- SIGHUP (reload) and a binary upgrade (USR2, then SIGTERM to the old master): no request fails, no stream is cut,
  and the streams in flight at the signal finish on the old workers, which are gone within the graceful timeout.
- SIGTERM (stop): new connections are refused at once, /ready answers 503 on a kept-alive connection, requests in
  flight finish, and a stream still open near the graceful timeout ends with the shutdown error event and [DONE].
- SIGKILL of one gunicorn worker: only requests in flight on it fail, the master replaces it, /metrics afterwards
  counts exactly the requests clients saw succeed with no stream left in flight, and the simulated worker saw the
  killed process's streams disconnect (none stays open).
- The FastChat controller restarted: every request meanwhile succeeds or gets 503 with Retry-After, none hangs, and
  requests succeed again within a heartbeat of its return.

Each adds its figures to the "restarts" section of reports/reliability.json.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import psutil
import pytest
import requests

from harness import fastchat, procs, sse
from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.procs import wait_until
from harness.simworkers import SimulatedWorker

CLIENTS = 6
PROCESSES = 2  # gunicorn processes (WEB_CONCURRENCY) of every gateway here
MODEL = "sim-model"
TOKEN_DELAY = 0.05  # the simulated workers' pace: max_tokens x this is a request's length
SHORT_TOKENS = 20  # the load's requests: ~1 s each
LONG_TOKENS = 300  # ~15 s: outlives a short graceful timeout
GRACEFUL = 10  # GUNICORN_GRACEFUL_TIMEOUT of the reload and upgrade gateways: far more than a load request needs
STOP_GRACEFUL = 4  # of the stopped gateway: streams are ended at 4 - 1 (lifecycle.margin) = 3 s
CLIENT_TIMEOUT = 30.0
HEARTBEAT = 1.0  # the controlled worker's heartbeat interval
CHAT = "/v1/chat/completions"


# ------------------------------------------------------------------------------------------------- the load
@dataclass
class Outcome:
    stream: bool
    started: float
    ended: float
    status: int | None = None  # None: no reply at all
    problem: str | None = None  # why it did not succeed; None: a normal answer, or [DONE] after only chunks
    error_code: str | None = None  # of the JSON error, or of the stream's error event
    retry_after: str | None = None
    cut: bool = False  # a 200 stream that ended without [DONE]


def one_request(url: str, stream: bool, max_tokens: int, text: str) -> Outcome:
    out = Outcome(stream, time.monotonic(), 0.0)
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "stream": stream}
    try:
        with requests.post(url + CHAT, json=body, headers={"Connection": "close"}, stream=True,
                           timeout=(5, CLIENT_TIMEOUT)) as resp:
            out.status = resp.status_code
            out.retry_after = resp.headers.get("Retry-After")
            raw = b""
            try:
                for piece in resp.iter_content(chunk_size=None):
                    raw += piece
            except requests.RequestException as exc:
                out.problem, out.cut = f"reply broken off: {type(exc).__name__}", stream and resp.status_code == 200
                return out
    except requests.RequestException as exc:
        out.problem = f"{type(exc).__name__}: {str(exc)[:160]}"
        return out
    finally:
        out.ended = time.monotonic()
    judge(out, raw)
    return out


def judge(out: Outcome, raw: bytes) -> None:
    if not out.stream or out.status != 200:
        try:
            reply = json.loads(raw)
        except ValueError:
            out.problem = f"HTTP {out.status}, not JSON: {raw[:120]!r}"
            return
        if out.status != 200:
            out.error_code = (reply.get("error") or {}).get("code")
            out.problem = f"HTTP {out.status} {out.error_code}"
        elif reply.get("object") != "chat.completion":
            out.problem = f"not a chat completion: {raw[:120]!r}"
        return
    try:
        events = sse.parse(raw)
    except sse.SSEError as exc:
        events = [f"bad framing: {exc}"]
    if not events or events[-1] != "[DONE]":
        out.cut, out.problem = True, f"no [DONE]: ...{raw[-120:]!r}"
        return
    errors = [json.loads(e)["error"] for e in events[:-1] if '"error"' in e]
    if errors:
        out.error_code = errors[0]["code"]
        out.problem = f"error event {out.error_code}"


class Load:
    """CLIENTS threads sending chat requests back to back, every other one streamed, until stop()."""

    def __init__(self, url: str, max_tokens: int = SHORT_TOKENS, pause_after_failure: float = 0.05):
        self.url = url
        self.max_tokens = max_tokens
        self.pause = pause_after_failure
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _client(self, index: int) -> None:
        i = 0
        deadline = time.monotonic() + 120  # bounded whatever the test does
        while not self._stop.is_set() and time.monotonic() < deadline:
            out = one_request(self.url, stream=(index + i) % 2 == 0, max_tokens=self.max_tokens, text=f"c{index}-{i}")
            with self._lock:
                self.outcomes.append(out)
            if out.problem:
                time.sleep(self.pause)  # a refused connection must not become a busy loop
            i += 1

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self._threads), "load clients did not finish"
        return self.outcomes


def succeeded(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.problem is None]


def in_flight_at(outcomes: list[Outcome], moment: float) -> list[Outcome]:
    return [o for o in outcomes if o.started < moment < o.ended]


def figures(outcomes: list[Outcome], **more) -> dict:
    """The section's figures; `more` adds to them or replaces them."""
    return {"requests": len(outcomes), "streamed": sum(o.stream for o in outcomes),
            "failed": sum(o.problem is not None for o in outcomes), "cut_streams": sum(o.cut for o in outcomes),
            **more}


def samples(outcomes: list[Outcome], n: int = 8) -> str:
    return "\n".join([f"{'stream' if o.stream else 'whole'}: {o.problem}" for o in outcomes if o.problem][:n])


# --------------------------------------------------------------------------------------------- processes
def children(pid: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(pid).children()}
    except psutil.NoSuchProcess:
        return set()


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a process we did not start is reaped by someone else)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def booted(gateway: Gateway, master: int, after: int = 0) -> bool:
    """`master` has all its processes, each logged as started since log offset `after` (until one accepts, new
    connections wait in the socket's queue: they are not refused)."""
    pids = children(master)
    log = gateway.proc.log_text()[after:]
    return len(pids) == PROCESSES and all(f"Booting worker with pid: {pid}" in log for pid in pids)


def wait_gone(pids: set[int], timeout: float) -> float:
    began = time.monotonic()
    wait_until(f"processes {sorted(pids)} gone", lambda: not any(running(p) for p in pids), timeout=timeout)
    return time.monotonic() - began


def client_connections(pid: int, port: int) -> int:
    """How many established connections to `port` (clients' requests, one a connection) process `pid` holds."""
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in connections)


def metric_sum(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


# ---------------------------------------------------------------------------------------------- the stacks
@pytest.fixture(scope="module")
def sim(run_dir):
    worker = SimulatedWorker(run_dir, "--tokens", str(LONG_TOKENS), "--token-delay", str(TOKEN_DELAY),
                             name="sim-restarts")
    yield worker
    worker.stop()


def start_gateway(run_dir, sim, name: str, **settings: str) -> Gateway:
    return procs.require(Gateway, run_dir, name=name, WORKER_ADDRESSES=sim.address, WORKER_STATUS_INTERVAL="0.5",
                         WEB_CONCURRENCY=str(PROCESSES), **settings)


def test_sighup_reloads_with_no_failed_request(run_dir, sim, report):
    gateway = start_gateway(run_dir, sim, "gateway-hup", GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL))
    try:
        master = gateway.proc.pid
        old = children(master)
        load = Load(gateway.url)
        time.sleep(2)
        log_at = len(gateway.proc.log_text())
        signalled = time.monotonic()
        os.kill(master, signal.SIGHUP)
        retired = wait_gone(old, GRACEFUL + 5)
        wait_until("the reloaded processes started",
                   lambda: booted(gateway, master, log_at) and not children(master) & old, gateway.proc, timeout=20)
        time.sleep(2)  # the load goes on against the new processes only
        outcomes = load.stop()
    finally:
        gateway.stop()
    overlapping = in_flight_at(outcomes, signalled)
    after = [o for o in outcomes if o.started > signalled + retired]
    report.add("restarts", **{"sighup": figures(outcomes, in_flight_at_signal=len(overlapping),
                                                old_workers_gone_s=round(retired, 2), graceful_timeout_s=GRACEFUL)})
    assert not [o for o in outcomes if o.problem], samples(outcomes)
    assert overlapping and sum(o.stream for o in overlapping), "no stream was in flight at SIGHUP: proves nothing"
    assert retired < GRACEFUL, f"the old workers took {retired:.1f}s to go, more than the graceful timeout"
    assert succeeded(after), "nothing was served after the reload"


def test_binary_upgrade_with_no_failed_request(run_dir, sim, report):
    pidfile = run_dir / "gateway-usr2.pid"
    gateway = start_gateway(run_dir, sim, "gateway-usr2", GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL),
                            GUNICORN_PIDFILE=str(pidfile))
    old_master = gateway.proc.pid
    new_master = None
    try:
        old_workers = children(old_master)
        load = Load(gateway.url)
        time.sleep(2)
        log_at = len(gateway.proc.log_text())
        os.kill(old_master, signal.SIGUSR2)

        # gunicorn's new master writes <pidfile>.2 while the old one runs, and takes <pidfile> once it is gone.
        second = pidfile.with_name(pidfile.name + ".2")

        def upgraded() -> int | None:  # the new master's pid once it and its processes run
            pid = int(second.read_text())
            return pid if int(pidfile.read_text()) == old_master and booted(gateway, pid, log_at) else None

        new_master = wait_until("the new master and its processes", upgraded, gateway.proc, timeout=30)
        time.sleep(1)  # both generations serve side by side
        signalled = time.monotonic()
        os.kill(old_master, signal.SIGTERM)
        gateway.proc.popen.wait(timeout=GRACEFUL + 5)
        retired = time.monotonic() - signalled
        wait_until("the new master's pid in the pidfile", lambda: int(pidfile.read_text()) == new_master, timeout=5)
        time.sleep(2)  # the load goes on against the new master's processes only
        outcomes = load.stop()
        served_by_new = requests.get(gateway.url + "/health", timeout=5).status_code
    finally:
        if new_master is not None and running(new_master):  # not our child: stopped by its pid, then waited for
            os.kill(new_master, signal.SIGTERM)
            try:
                wait_gone({new_master}, 15)
            except procs.ProcError:
                os.kill(new_master, signal.SIGKILL)
        gateway.stop()
    overlapping = in_flight_at(outcomes, signalled)
    report.add("restarts", **{"usr2_upgrade": figures(outcomes, in_flight_at_old_master_sigterm=len(overlapping),
                                                      old_master_gone_s=round(retired, 2),
                                                      graceful_timeout_s=GRACEFUL)})
    assert not [o for o in outcomes if o.problem], samples(outcomes)
    assert overlapping and sum(o.stream for o in overlapping), "no stream in flight at the old master's SIGTERM"
    assert retired < GRACEFUL, f"the old master took {retired:.1f}s to go, more than the graceful timeout"
    assert not any(running(p) for p in old_workers), "an old worker outlived its master"
    assert served_by_new == 200, "the port is not served after the upgrade"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_then_ends_open_streams_with_an_error_event(run_dir, sim, report):
    gateway = start_gateway(run_dir, sim, "gateway-term", GUNICORN_GRACEFUL_TIMEOUT=str(STOP_GRACEFUL))
    kept_alive = requests.Session()
    long_streams: list[Outcome] = []
    try:
        assert kept_alive.get(gateway.url + "/ready", timeout=5).status_code == 200
        longs = [threading.Thread(target=lambda i=i: long_streams.append(
            one_request(gateway.url, True, LONG_TOKENS, f"long-{i}")), daemon=True) for i in range(2)]
        for thread in longs:
            thread.start()
        load = Load(gateway.url)
        time.sleep(1.5)
        signalled = time.monotonic()
        os.kill(gateway.proc.pid, signal.SIGTERM)
        wait_until("new connections refused", lambda: refused(gateway.port), timeout=2)
        refused_after = time.monotonic() - signalled
        ready = kept_alive.get(gateway.url + "/ready", timeout=5)  # within gunicorn's 2 s keep-alive linger
        gateway.proc.popen.wait(timeout=STOP_GRACEFUL + 5)
        stopped_after = time.monotonic() - signalled
        outcomes = load.stop()
        for thread in longs:
            thread.join(timeout=CLIENT_TIMEOUT)
    finally:
        kept_alive.close()
        gateway.stop()
    before = [o for o in outcomes if o.started < signalled]
    later = [o for o in outcomes if o.started >= signalled]
    not_refused = [o for o in later if o.problem and "ConnectionError" not in (o.problem or "")]
    ends = [round(o.ended - signalled, 2) for o in long_streams]
    everything = outcomes + long_streams
    report.add("restarts", **{"sigterm_stop": {
        "requests": len(everything), "streamed": sum(o.stream for o in everything),
        "in_flight_at_signal": len(in_flight_at(outcomes, signalled)) + len(long_streams),
        "failed_in_flight": sum(o.problem is not None for o in before),
        "cut_streams": sum(o.cut for o in everything),
        "ended_with_shutdown_event": sum(o.error_code == "server_shutting_down" for o in everything),
        "refused_new": sum(o.problem is not None and "ConnectionError" in o.problem for o in later),
        "served_new": sum(o.problem is None for o in later), "refused_after_s": round(refused_after, 2),
        "ready_status_while_draining": ready.status_code, "long_streams_ended_after_s": ends,
        "master_gone_s": round(stopped_after, 2), "graceful_timeout_s": STOP_GRACEFUL}})
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "server_shutting_down", ready.text
    assert refused_after < 1, f"new connections still accepted {refused_after:.1f}s after SIGTERM"
    assert not [o for o in before if o.problem], "a request in flight at SIGTERM failed:\n" + samples(before)
    assert not not_refused, "a request after SIGTERM failed otherwise than refused:\n" + samples(not_refused)
    assert len(long_streams) == 2 and all(o.error_code == "server_shutting_down" and not o.cut
                                          for o in long_streams), [o.problem for o in long_streams]
    # Ended at the graceful timeout less its margin (3 s), before gunicorn would have killed them (4 s).
    assert all(STOP_GRACEFUL - 1.5 < end < STOP_GRACEFUL for end in ends), ends
    assert not [o for o in outcomes if o.cut], samples(outcomes)
    assert stopped_after < STOP_GRACEFUL + 1


def test_sigkill_of_one_worker_fails_only_its_requests(run_dir, sim, report):
    metrics_dir = run_dir / "metrics-kill"
    metrics_dir.mkdir()
    gateway = start_gateway(run_dir, sim, "gateway-kill", GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL),
                            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        master = gateway.proc.pid
        victim = min(children(master))
        disconnects = sim.stats()["stream_disconnects"]
        load = Load(gateway.url)
        time.sleep(2.5)
        # Killed while it holds a request: the kill of an idle process would prove nothing.
        on_victim = wait_until("a request on the process to kill", lambda: client_connections(victim, gateway.port),
                               gateway.proc, timeout=10, interval=0.01)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_until("a replacement worker",
                   lambda: len(children(master)) == PROCESSES and victim not in children(master), gateway.proc,
                   timeout=20)
        time.sleep(2.5)
        outcomes = load.stop()
        stats = wait_until("the simulated worker idle", lambda: (s := sim.stats())["open_streams"] == 0 and s,
                           timeout=5)
        counted = metric_sum(gateway.url, "fastchat_gateway_requests_total", route=CHAT, status="200")
        in_flight_gauge = metric_sum(gateway.url, "fastchat_gateway_streams_in_flight")
        victim_files = glob.glob(str(metrics_dir / f"*_{victim}.db"))
    finally:
        gateway.stop()
    overlapping = in_flight_at(outcomes, killed)
    failed = [o for o in outcomes if o.problem]
    ok = succeeded(outcomes)
    report.add("restarts", **{"sigkill_worker": figures(
        outcomes, in_flight_at_kill=len(overlapping), in_flight_on_killed_process=on_victim,
        counted_200=int(counted), client_successes=len(ok),
        streams_in_flight_gauge_after=in_flight_gauge,
        simworker_disconnects=stats["stream_disconnects"] - disconnects)})
    assert failed, "the kill failed no request: it hit an idle process, which proves nothing"
    assert all(o in overlapping for o in failed), "a request not in flight at the kill failed:\n" + samples(failed)
    # Its own in-flight requests, counted from its sockets just before the kill (one may finish or start between).
    assert len(failed) <= on_victim + 1, f"{len(failed)} requests failed, the killed process held {on_victim}"
    assert all(o.status in (None, 200) for o in failed), "a failure is an HTTP error, not a closed connection:\n" \
        + samples(failed)
    assert [o for o in ok if o.started > killed], "nothing served after the kill"
    # The killed process's counters stay counted (its files kept), its live gauge does not (child_exit).
    assert victim_files and not [f for f in victim_files if "gauge_live" in f], victim_files
    assert counted == len(ok), f"/metrics counts {counted:.0f} chat 200s, the clients got {len(ok)}"
    assert in_flight_gauge == 0, "a killed process's streams stay counted in flight"
    cut = sum(o.cut for o in failed)
    assert stats["stream_disconnects"] - disconnects >= cut, "the simulated worker did not see the streams go"


@pytest.fixture(scope="module")
def fastchat_python():
    return procs.require(fastchat.ensure_fastchat_venv, "controller")


def test_controller_restart_under_load(run_dir, fastchat_python, report):
    started = []
    try:
        ctl = procs.require(fastchat.FastChatController, fastchat_python, run_dir, name="fastchat-controller-restart")
        started.append(ctl)
        worker = SimulatedWorker(run_dir, "--tokens", str(LONG_TOKENS), "--token-delay", str(TOKEN_DELAY),
                                 "--heartbeat-interval", str(HEARTBEAT), controller=ctl.address, model=MODEL,
                                 name="sim-restart-controlled")
        started.append(worker)
        wait_registered(ctl.address, MODEL)
        gateway = procs.require(Gateway, run_dir, name="gateway-controller-restart", CONTROLLER_ADDRESS=ctl.address,
                                CONTROLLER_READ_TIMEOUT="1", WEB_CONCURRENCY=str(PROCESSES))
        started.append(gateway)
        load = Load(gateway.url)
        time.sleep(2)
        port = ctl.port
        ctl.stop()
        down = time.monotonic()
        time.sleep(3)
        ctl = procs.require(fastchat.FastChatController, fastchat_python, run_dir,
                            name="fastchat-controller-restarted", port=port)
        started[0] = ctl
        back = time.monotonic()
        wait_registered(ctl.address, MODEL, timeout=10)
        recovered = wait_until("a request succeeds again",
                               lambda: one_request(gateway.url, False, 2, "back?").problem is None, timeout=10)
        recovered_after = time.monotonic() - back
        time.sleep(1)
        outcomes = load.stop()
    finally:
        for proc in reversed(started):
            proc.stop()
    during = [o for o in outcomes if o.started >= down]
    refused_503 = [o for o in outcomes if o.status == 503]
    other = [o for o in outcomes if o.problem and not (o.status == 503 and o.retry_after)]
    report.add("restarts", **{"controller_restart": figures(
        outcomes, failed=len(other), gap_s=round(back - down, 2), answered_503_with_retry_after=len(refused_503),
        requests_during_gap_or_after=len(during), back_after_restart_s=round(recovered_after, 2),
        heartbeat_s=HEARTBEAT, slowest_s=round(max(o.ended - o.started for o in outcomes), 2))})
    assert recovered
    assert not other, "a request failed otherwise than 503 with Retry-After:\n" + samples(other)
    assert not [o for o in outcomes if o.cut], samples(outcomes)
    assert recovered_after <= HEARTBEAT + 1, f"service back {recovered_after:.1f}s after the controller"
    assert max(o.ended - o.started for o in outcomes) < 10, "a request hung"
