"""What the per-key limiter costs the gateway per request, side by side in one run.

Two gateways (gunicorn.conf.py's defaults) in front of one fast simulated worker: one on the embedded store, one on
a redis-server of this host (REDIS_URL). Each gets non-streamed chat requests with a key without limits and with a
key that has all three (requests and tokens per minute, parallel requests; set high enough that nothing is refused,
so every request pays the whole check and settlement). The four slices run interleaved, round after round, and each
reports the gateway's CPU per request (user + system seconds of gunicorn's master and workers, psutil) and, for
Redis, the redis-server's. The figure: the limited key's extra CPU per request, as a share of the unlimited one's
(issue 16's target: under 5 % with Redis on the same host). Writes results/limiter_cost.json.

    .venv/bin/python -m bench.limiter_cost            # ~1 minute
    .venv/bin/python -m bench.limiter_cost --quick    # smoke run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import requests

from harness.gateway import Gateway, production_environ
from harness.redis import RedisServer
from harness.sampling import Group
from harness.simworkers import SimulatedWorker

BENCH = Path(__file__).resolve().parent
KEYS = '''
[[keys]]
name = "free"
key = "sk-free"

[[keys]]
name = "limited"
key = "sk-limited"
requests_per_minute = 100000000
tokens_per_minute = 1000000000
max_parallel_requests = 100000
'''
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}


def run_slice(url: str, key: str, requests_total: int, concurrency: int) -> int:
    """Send `requests_total` chat requests with `key` from `concurrency` keep-alive connections; the failures."""
    failures, lock, left = [0], threading.Lock(), [requests_total]

    def loop():
        with requests.Session() as session:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                response = session.post(f"{url}/v1/chat/completions", json=BODY, timeout=30,
                                        headers={"Authorization": f"Bearer {key}"})
                if response.status_code != 200:
                    with lock:
                        failures[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures[0]


def cpu_seconds(group: Group) -> float:
    return sum(group.cpu().values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, help="requests per slice (default 1500, quick 300)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default=str(BENCH / "results"))
    args = parser.parse_args(argv)
    per_slice = args.requests or (300 if args.quick else 1500)
    rounds = args.rounds or (1 if args.quick else 3)

    run_dir = Path(tempfile.mkdtemp(prefix="fastchat-gateway-limiter-bench-"))
    key_file = run_dir / "keys.toml"
    key_file.write_text(KEYS)
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "16", name="sim-limiter-bench")
        started.append(worker)
        redis_server = RedisServer(run_dir)
        started.append(redis_server)
        environ = {**production_environ(), "API_KEYS_FILE": str(key_file), "WORKER_ADDRESSES": worker.address}
        embedded = Gateway(run_dir, "gateway-embedded", environ=environ)
        started.append(embedded)
        redis_gateway = Gateway(run_dir, "gateway-redis", environ={**environ, "REDIS_URL": redis_server.url})
        started.append(redis_gateway)
        groups = {"embedded": Group("embedded", [embedded.proc.popen.pid], children=True),
                  "redis": Group("redis", [redis_gateway.proc.popen.pid], children=True)}
        redis_group = Group("redis-server", [redis_server.proc.popen.pid])
        slices = [(store, key) for store in ("embedded", "redis") for key in ("free", "limited")]
        urls = {"embedded": embedded.url, "redis": redis_gateway.url}
        for store, key in slices:  # warm-up: templates cached, connections open
            run_slice(urls[store], f"sk-{key}", 100, args.concurrency)
        totals = {slice_: {"cpu": 0.0, "redis_cpu": 0.0, "requests": 0, "failures": 0} for slice_ in slices}
        for round_ in range(rounds):
            for store, key in slices:
                before, redis_before = cpu_seconds(groups[store]), cpu_seconds(redis_group)
                failures = run_slice(urls[store], f"sk-{key}", per_slice, args.concurrency)
                total = totals[(store, key)]
                total["cpu"] += cpu_seconds(groups[store]) - before
                total["redis_cpu"] += cpu_seconds(redis_group) - redis_before
                total["requests"] += per_slice
                total["failures"] += failures
            print(f"round {round_ + 1}/{rounds} done", flush=True)
    finally:
        for process in reversed(started):
            process.stop()

    rows = {}
    for (store, key), total in totals.items():
        rows[f"{store}/{key}"] = {
            "gateway_cpu_us_per_request": round(total["cpu"] / total["requests"] * 1e6, 1),
            "redis_cpu_us_per_request": round(total["redis_cpu"] / total["requests"] * 1e6, 1),
            "requests": total["requests"], "failures": total["failures"]}
    figures = {}
    for store in ("embedded", "redis"):
        free = rows[f"{store}/free"]["gateway_cpu_us_per_request"]
        limited = rows[f"{store}/limited"]["gateway_cpu_us_per_request"]
        figures[store] = {"extra_us_per_request": round(limited - free, 1),
                          "extra_share": round((limited - free) / free, 4) if free else None}
    print(f"{'slice':<18} {'gateway CPU/request':>20} {'redis-server CPU/request':>25} {'failures':>9}")
    for name, row in rows.items():
        print(f"{name:<18} {row['gateway_cpu_us_per_request']:>17.1f} us {row['redis_cpu_us_per_request']:>22.1f} "
              f"us {row['failures']:>9}")
    for store, figure in figures.items():
        share = figure["extra_share"]
        print(f"limiter cost, {store}: {figure['extra_us_per_request']:+.1f} us of gateway CPU per request "
              f"({share * 100:+.1f} % of an unlimited key's){'  [target < 5 %]' if store == 'redis' else ''}")
    result = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "loadavg": list(os.getloadavg()), "requests_per_slice": per_slice, "rounds": rounds,
                       "concurrency": args.concurrency, "cpus": os.cpu_count()},
              "slices": rows, "limiter_cost": figures}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "limiter_cost-quick.json" if args.quick else "limiter_cost.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    failed = sum(row["failures"] for row in rows.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
