"""Soak (issue 7, part 4): SOAK_SECONDS (default 120) of mixed traffic from 16 client threads against a gateway
(2 gunicorn processes) in front of two simulated workers, with ~5% of requests carrying a random fault directive
and ~10% of streamed clients hanging up after the first chunk.

Passes when: no unexpected 5xx (a 5xx is expected only for a request that carried a fault directive, and only the
documented status for that fault), no other unexpected outcome (a normal request that fails, a stream that does
not end with [DONE], an error event where none is due), no client exception or hang (client read timeout 30 s),
no leaked upstream connection (after a quiet period every worker has open_streams == 0, active_requests == 0, and
no more connections open than the gateway has threads, each of which pools at most one keep-alive connection per
worker), and a flat gateway RSS (end < start x 1.5 + 20 MB, start measured after a warm-up).
"""
from __future__ import annotations

import collections
import glob
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from harness import sse
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
WARMUP_SECONDS = 5.0
QUIET_SECONDS = 2.0
CLIENTS = 16
FAULT_RATE = 0.05
HANGUP_RATE = 0.10
CLIENT_TIMEOUT = 30.0
READ_TIMEOUT = 3.0  # the soak gateway's WORKER_READ_TIMEOUT: how long a `hang` fault holds a request
WEB_CONCURRENCY = 2
GUNICORN_THREADS = 16
KEY = "sk-soak"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "soak-model"
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
# (endpoint, stream, weight)
KINDS = [("chat", False, 25), ("chat", True, 30), ("completions", False, 15), ("completions", True, 20),
         ("embeddings", False, 10)]
FAULTS = {
    "error": "[[fault:error]]",
    "oom": "[[fault:oom]]",
    "die": "[[fault:die]]",
    "hang": "[[fault:hang]]",
    "slow-first-token": "[[fault:slow-first-token delay=0.5]]",  # below the read timeout: a normal answer
    "http-500": "[[fault:http-500]]",
    "garbage": "[[fault:garbage]]",
}
# fault -> (status, error.code) of a whole response; None: a normal answer. README "Errors" and "Failover" (a
# worker that closes the connection after reading the request was reached: 502, not a retried 503).
WHOLE = {"error": (500, "worker_error"), "oom": (503, "worker_error"), "die": (502, "upstream_error"),
         "hang": (504, "upstream_timeout"), "slow-first-token": None, "http-500": (502, "upstream_error"),
         "garbage": (502, "upstream_error")}
# fault -> (status, error.code, in_stream) of a stream
STREAM = {"error": (200, "worker_error", True), "oom": (200, "worker_error", True),
          "die": (200, "upstream_error", True), "hang": (200, "upstream_timeout", True), "slow-first-token": None,
          "http-500": (502, "upstream_error", False), "garbage": (200, "upstream_error", True)}
WORDS = "alpha beta gamma delta river mountain cloud silver garden lantern harbor meadow".split()


# ------------------------------------------------------------------------------------------ measurements
def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc (children files, else a scan of every process's parent)."""
    found = [pid]
    if glob.glob(f"/proc/{pid}/task/*/children"):
        i = 0
        while i < len(found):
            for path in glob.glob(f"/proc/{found[i]}/task/*/children"):
                try:
                    with open(path) as f:
                        found.extend(int(child) for child in f.read().split())
                except OSError:
                    pass
            i += 1
        return found
    parents = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents.setdefault(int(fields[1]), []).append(int(path.split("/")[2]))
    i = 0
    while i < len(found):
        found.extend(parents.get(found[i], []))
        i += 1
    return found


def status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def gateway_rss_mb(pid: int) -> tuple[float, int]:
    """RSS of the gunicorn master and its workers summed (MB), and how many processes that is."""
    pids = process_tree(pid)
    return sum(status_field(p, "VmRSS") for p in pids) / 1024, len(pids)


def gateway_threads(pid: int) -> int:
    return sum(status_field(p, "Threads") for p in process_tree(pid))


# --------------------------------------------------------------------------------------------- traffic
@dataclass
class Tally:
    requests: collections.Counter = field(default_factory=collections.Counter)  # by kind
    statuses: collections.Counter = field(default_factory=collections.Counter)
    faults: collections.Counter = field(default_factory=collections.Counter)  # directives sent, by mode
    error_codes: collections.Counter = field(default_factory=collections.Counter)  # error.code seen
    exceptions: collections.Counter = field(default_factory=collections.Counter)
    unexpected: collections.Counter = field(default_factory=collections.Counter)  # by kind of problem
    samples: list = field(default_factory=list)  # a few unexpected outcomes, for the failure message
    total: int = 0
    streamed: int = 0
    hung_up: int = 0
    unexpected_5xx: int = 0
    hangs: int = 0
    slowest: float = 0.0

    def merge(self, other: "Tally") -> None:
        for name in ("requests", "statuses", "faults", "error_codes", "exceptions", "unexpected"):
            getattr(self, name).update(getattr(other, name))
        for name in ("total", "streamed", "hung_up", "unexpected_5xx", "hangs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.samples.extend(other.samples[:max(0, 20 - len(self.samples))])
        self.slowest = max(self.slowest, other.slowest)

    def flag(self, what: str, detail: str, status: int | None, fault: str | None) -> None:
        self.unexpected[what] += 1
        if status is not None and status >= 500:
            self.unexpected_5xx += 1
        if len(self.samples) < 20:
            self.samples.append(f"{what} (fault={fault}, HTTP {status}): {detail[:300]}")


def first_event(resp: requests.Response) -> bytes | None:
    """The payload of a stream's first event, read as it arrives; None if its framing is wrong or it never comes."""
    reader = sse.Reader()
    try:
        for piece in resp.iter_content(chunk_size=None):
            events = reader.feed(piece)
            if events:
                return events[0]
    except sse.SSEError:
        pass
    return None


def judge_whole(tally: Tally, endpoint: str, status: int, raw: bytes, fault: str | None) -> None:
    expected = WHOLE[fault] if fault else None
    try:
        body = json.loads(raw)
    except ValueError:
        tally.flag("body not JSON", repr(raw[:200]), status, fault)
        return
    if status != 200:
        tally.error_codes[(body.get("error") or {}).get("code")] += 1
    if expected is None:
        if status != 200:
            tally.flag(f"{endpoint} whole: HTTP {status}", repr(raw[:300]), status, fault)
        elif body.get("object") not in ("chat.completion", "text_completion", "list"):
            tally.flag(f"{endpoint} whole: not a result", repr(raw[:300]), status, fault)
        return
    code = (body.get("error") or {}).get("code")
    if (status, code) != expected:
        tally.flag(f"{endpoint} whole [[fault:{fault}]]: HTTP {status} {code}, expected {expected}",
                   repr(raw[:300]), status, fault)


def judge_stream(tally: Tally, endpoint: str, status: int, raw: bytes, fault: str | None) -> None:
    expected = STREAM[fault] if fault else None
    if status != 200:
        try:
            code = (json.loads(raw).get("error") or {}).get("code")
        except ValueError:
            code = None
        tally.error_codes[code] += 1
        if expected is None or expected[2] or (status, code) != expected[:2]:
            tally.flag(f"{endpoint} stream [[fault:{fault}]]: HTTP {status} {code}", repr(raw[:300]), status, fault)
        return
    try:
        events = sse.parse(raw)
    except sse.SSEError as exc:
        tally.flag(f"{endpoint} stream: bad framing or no [DONE]", f"{exc}; body ...{raw[-200:]!r}", status, fault)
        return
    try:
        payloads = [json.loads(e) for e in events[:-1]]
    except ValueError:
        tally.flag(f"{endpoint} stream: an event is not JSON", repr(raw[-300:]), status, fault)
        return
    errors = [p for p in payloads if "error" in p]
    for error in errors:
        tally.error_codes[error["error"]["code"]] += 1
    if expected is None or not expected[2]:
        if errors:
            tally.flag(f"{endpoint} stream [[fault:{fault}]]: unexpected error event {errors[0]['error']['code']}",
                       json.dumps(errors[0]), 200, fault)
        return
    if len(errors) != 1 or "error" not in payloads[-1]:
        tally.flag(f"{endpoint} stream [[fault:{fault}]]: {len(errors)} error events, expected 1 before [DONE]",
                   repr(raw[-300:]), 200, fault)
    elif errors[0]["error"]["code"] != expected[1]:
        tally.flag(f"{endpoint} stream [[fault:{fault}]]: error event {errors[0]['error']['code']}, expected "
                   f"{expected[1]}", json.dumps(errors[0]), 200, fault)


def one_request(session: requests.Session, base_url: str, rng: random.Random, tally: Tally, tag: str) -> None:
    endpoint, stream = rng.choices([(e, s) for e, s, _ in KINDS], weights=[w for _, _, w in KINDS])[0]
    fault = rng.choice(sorted(FAULTS)) if rng.random() < FAULT_RATE else None
    hang_up = stream and rng.random() < HANGUP_RATE
    text = f"{tag} " + " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))
    if fault:
        text += " " + FAULTS[fault]
        tally.faults[fault] += 1
    if endpoint == "chat":
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    elif endpoint == "completions":
        body = {"model": MODEL, "prompt": text, "max_tokens": 16}
    else:
        body = {"model": MODEL, "input": [text, f"{tag} second input"]}
    if stream:
        body["stream"] = True
        tally.streamed += 1
    kind = f"{endpoint}-{'stream' if stream else 'whole'}"
    tally.requests[kind] += 1
    tally.total += 1
    started = time.monotonic()
    try:
        with session.post(base_url + PATHS[endpoint], json=body, headers=AUTH, stream=True,
                          timeout=(5, CLIENT_TIMEOUT)) as resp:
            status = resp.status_code
            tally.statuses[status] += 1
            if hang_up and status == 200:
                first = first_event(resp)
                tally.hung_up += 1
                if first is None or not first.startswith(b"{"):
                    tally.flag(f"{kind}: first chunk is not an event", repr(first)[:200], status, fault)
                return  # leaving the `with` closes the connection mid-stream
            raw = b"".join(resp.iter_content(chunk_size=None))
    except requests.Timeout as exc:
        tally.hangs += 1
        tally.exceptions[type(exc).__name__] += 1
        tally.flag(f"{kind}: client timeout ({CLIENT_TIMEOUT}s)", repr(exc), None, fault)
        return
    except requests.RequestException as exc:
        tally.exceptions[type(exc).__name__] += 1
        tally.flag(f"{kind}: {type(exc).__name__}", repr(exc), None, fault)
        return
    finally:
        tally.slowest = max(tally.slowest, time.monotonic() - started)
    (judge_stream if stream else judge_whole)(tally, endpoint, status, raw, fault)


def run_clients(base_url: str, seconds: float, seed: int) -> Tally:
    """CLIENTS threads sending requests back to back for `seconds`; their merged tally."""
    stop_at = time.monotonic() + seconds
    tallies = [Tally() for _ in range(CLIENTS)]
    crashes = []

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with requests.Session() as session:
            i = 0
            while time.monotonic() < stop_at:
                try:
                    one_request(session, base_url, rng, tallies[index], f"c{index}-{i}")
                except Exception as exc:  # a bug in the test itself: report it, keep the load going
                    crashes.append(repr(exc))
                    tallies[index].exceptions[type(exc).__name__] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(i,), name=f"soak-client-{i}", daemon=True)
               for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + CLIENT_TIMEOUT + 10)
    assert not any(thread.is_alive() for thread in threads), "soak client threads did not finish"
    assert not crashes, f"the soak client crashed: {crashes[:5]}"
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


def idle_workers(workers, timeout: float) -> list[dict]:
    """The workers' stats once none has an open stream or active request (or when `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = [worker.stats() for worker in workers]
        if all(s["open_streams"] == 0 and s["active_requests"] == 0 for s in stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ the test
@pytest.fixture(scope="module")
def soak_stack(run_dir):
    started = []
    try:
        workers = []
        for name in ("sim-soak-1", "sim-soak-2"):
            workers.append(SimulatedWorker(run_dir, "--tokens", "16", "--token-delay", "0.003",
                                           "--context-length", "2048", model=MODEL, name=name))
            started.append(workers[-1])
        gateway = Gateway(run_dir, name="gateway-soak", WORKER_ADDRESSES=",".join(w.address for w in workers),
                          API_KEYS=KEY, WORKER_READ_TIMEOUT=str(READ_TIMEOUT), WORKER_STATUS_INTERVAL="0.5",
                          WEB_CONCURRENCY=str(WEB_CONCURRENCY), GUNICORN_THREADS=str(GUNICORN_THREADS))
        started.append(gateway)
        yield gateway, workers
    finally:
        for proc in reversed(started):
            proc.stop()


def test_soak(soak_stack, report):
    began = time.monotonic()
    gateway, workers = soak_stack
    pid = gateway.proc.pid

    warmup = run_clients(gateway.url, WARMUP_SECONDS, seed=1)
    time.sleep(QUIET_SECONDS)
    idle_workers(workers, READ_TIMEOUT + 1)
    rss_start, processes = gateway_rss_mb(pid)
    conns_start = [w.stats()["connections_open"] for w in workers]
    faults_start = [sum(w.stats()["faults_injected"].values()) for w in workers]

    soak_started = time.monotonic()
    tally = run_clients(gateway.url, SOAK_SECONDS, seed=2)
    traffic_seconds = time.monotonic() - soak_started

    # Quiet period, then: nothing open upstream. A stream whose client hung up while its worker was silent (a hang
    # fault) is only noticed at the next write, i.e. when the read timeout fires: allow that much more.
    time.sleep(QUIET_SECONDS)
    end_stats = idle_workers(workers, READ_TIMEOUT + 1)
    threads = gateway_threads(pid)
    rss_end, _ = gateway_rss_mb(pid)
    conns_end = [s["connections_open"] for s in end_stats]
    open_streams = [s["open_streams"] for s in end_stats]
    active = [s["active_requests"] for s in end_stats]
    # Each gateway thread pools at most one keep-alive connection per worker; more is a leak. (+1: the worker
    # counts the connection that asks for its stats.)
    leaked = sum(open_streams) + sum(active) + sum(max(0, c - threads - 1) for c in conns_end)
    faults_worker_side = sum(sum(s["faults_injected"].values()) for s in end_stats) - sum(faults_start)
    rss_limit = rss_start * 1.5 + 20
    duration = time.monotonic() - began

    report.add("soak", requests=tally.total, streamed=tally.streamed, hung_up=tally.hung_up,
               faults_injected=sum(tally.faults.values()), faults_seen_by_workers=faults_worker_side,
               unexpected_5xx=tally.unexpected_5xx, unexpected_other=sum(tally.unexpected.values())
               - tally.unexpected_5xx, exceptions=sum(tally.exceptions.values()), hangs=tally.hangs,
               leaked_connections=leaked, rss_start_mb=round(rss_start, 1), rss_end_mb=round(rss_end, 1),
               rss_limit_mb=round(rss_limit, 1), gateway_processes=processes, gateway_threads=threads,
               connections_open_after_warmup=conns_start, connections_open_end=conns_end,
               duration_s=round(traffic_seconds, 1), test_duration_s=round(duration, 1),
               requests_per_s=round(tally.total / traffic_seconds, 1), slowest_request_s=round(tally.slowest, 2),
               clients=CLIENTS, warmup_requests=warmup.total, by_kind=dict(tally.requests),
               statuses={str(k): v for k, v in sorted(tally.statuses.items())},
               faults_by_mode=dict(tally.faults), error_codes={str(k): v for k, v in tally.error_codes.items()},
               unexpected_by_kind=dict(tally.unexpected))

    problems = []
    if tally.unexpected_5xx:
        problems.append(f"{tally.unexpected_5xx} unexpected 5xx")
    if tally.unexpected:
        problems.append("unexpected outcomes: " + json.dumps(dict(tally.unexpected.most_common(15)), indent=1))
    if tally.exceptions:
        problems.append(f"client exceptions: {dict(tally.exceptions)} ({tally.hangs} timeouts)")
    if leaked:
        problems.append(f"leaked upstream: open_streams={open_streams} active_requests={active} "
                        f"connections_open={conns_end} (after warm-up {conns_start}, gateway threads {threads})")
    if rss_end >= rss_limit:
        problems.append(f"gateway RSS grew from {rss_start:.1f} MB to {rss_end:.1f} MB (limit {rss_limit:.1f} MB)")
    if processes != 1 + WEB_CONCURRENCY:
        problems.append(f"found {processes} gateway processes, expected {1 + WEB_CONCURRENCY}")
    if duration > SOAK_SECONDS + 30:
        problems.append(f"the soak took {duration:.0f}s, more than SOAK_SECONDS + 30")
    if tally.total < CLIENTS * 10 or not tally.faults or not tally.hung_up:
        problems.append(f"too little traffic to mean anything: {tally.total} requests, {dict(tally.faults)} "
                        f"faults, {tally.hung_up} hang-ups")
    summary = (f"{tally.total} requests in {traffic_seconds:.0f}s ({tally.streamed} streamed, {tally.hung_up} hung "
               f"up, {sum(tally.faults.values())} with faults), statuses {dict(tally.statuses)}, RSS "
               f"{rss_start:.1f} -> {rss_end:.1f} MB")
    assert not problems, summary + "\n" + "\n".join(problems) + "\nexamples:\n" + "\n".join(tally.samples)
