"""The key file under real gunicorn (two processes) while requests run: changed in place of a restart, and on
SIGHUP to the master (gunicorn's graceful reload, which starts new processes), with no request failing; a broken
file keeps the keys in use."""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from harness.gateway import over_simulated_worker


def keys(*names):
    return "".join(f'[[keys]]\nname = "{name}"\nkey = "sk-{name}"\n' for name in names)


def replace(path, text):
    """As an operator should: write a new file, then rename it over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def status(url, name):
    # A new connection each time (no keep-alive), so every request may land on either process.
    return requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer sk-{name}", "Connection": "close"},
                        timeout=30).status_code


def settled(url, name, expected, deadline=10.0):
    """Whether `name` gets `expected` 12 times in a row (so from both processes) within `deadline` seconds."""
    end, streak = time.monotonic() + deadline, 0
    while time.monotonic() < end and streak < 12:
        streak = streak + 1 if status(url, name) == expected else 0
    return streak >= 12


def test_the_key_file_changes_under_load_with_no_failed_request(run_dir, tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(keys("steady", "leaving"))
    with over_simulated_worker(run_dir, "keys", API_KEYS_FILE=str(path), WEB_CONCURRENCY="2",
                               WORKER_STATUS_INTERVAL="0.5") as (gateway, _):
        stop, results = threading.Event(), []

        def load():
            while not stop.is_set():
                results.append(status(gateway.url, "steady"))

        with ThreadPoolExecutor(4) as pool:
            loops = [pool.submit(load) for _ in range(4)]
            time.sleep(1)
            replace(path, keys("steady", "new"))
            assert settled(gateway.url, "new", 200), "the new key never worked in both processes"
            assert settled(gateway.url, "leaving", 401), "the removed key kept working"

            os.kill(gateway.proc.popen.pid, signal.SIGHUP)  # gunicorn: new processes, the old ones finish
            time.sleep(3)
            assert settled(gateway.url, "new", 200) and settled(gateway.url, "leaving", 401)

            path.write_text("[[keys]\n")  # broken: every process keeps its keys, then SIGHUP too
            time.sleep(2)
            os.kill(gateway.proc.popen.pid, signal.SIGHUP)
            time.sleep(3)
            assert settled(gateway.url, "new", 200) and settled(gateway.url, "leaving", 401)
            stop.set()
            for loop in loops:
                loop.result()
        assert len(results) > 100 and set(results) == {200}, {code: results.count(code) for code in set(results)}
        log = gateway.proc.log_text()
        assert "Expected ']]'" in log and "the keys in use are kept" in log and "the new processes keep" in log
        assert "sk-steady" not in log and "sk-new" not in log
        metrics = requests.get(f"{gateway.url}/metrics", timeout=10).text
        assert 'fastchat_gateway_key_file_reloads_total{result="error"}' in metrics
        assert 'fastchat_gateway_key_requests_total{key="steady",status="200"}' in metrics
