"""Operations under real gunicorn with two processes: metrics summed over processes, readiness, request ids,
header limits, API keys from a file."""
import re
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


def test_metrics_ready_request_ids_header_limits_and_key_file(run_dir, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nsk-from-file\n")
    worker = SimulatedWorker(run_dir, "--tokens", "3", "--token-delay", "0.1", name="sim-ops")
    gateway = None
    try:
        gateway = Gateway(run_dir, name="gateway-ops", WORKER_ADDRESSES=worker.address, WEB_CONCURRENCY="2",
                          GUNICORN_THREADS="4", GUNICORN_WORKER_CONNECTIONS="4", API_KEYS_FILE=str(keys),
                          WORKER_STATUS_INTERVAL="0.5")
        headers = {"Authorization": "Bearer sk-from-file"}
        session = requests.Session()

        def ask(i: int) -> None:
            response = requests.post(f"{gateway.url}/v1/chat/completions", headers={**headers, "X-Request-Id": f"r{i}"},
                                     json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
                                     timeout=10)
            assert response.status_code == 200 and response.headers["X-Request-Id"] == f"r{i}"

        # 12 at once on fresh connections, more than one process takes (4): both processes serve some
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(ask, range(12)))
        assert requests.get(f"{gateway.url}/v1/models", timeout=10).status_code == 401

        text = session.get(f"{gateway.url}/metrics", timeout=10).text
        served = re.search(r'fastchat_gateway_requests_total\{model="sim-model",route="/v1/chat/completions",'
                           r'status="200"\} (\d+)', text)
        assert served and float(served.group(1)) == 12
        assert re.search(r'fastchat_gateway_completion_tokens_total\{model="sim-model"\} 36', text)
        assert "fastchat_gateway_streams_in_flight 0.0" in text

        assert session.get(f"{gateway.url}/ready", timeout=10).json() == {"status": "ready"}
        too_big = session.get(f"{gateway.url}/health", headers={"X-Junk": "x" * 10000}, timeout=10)
        assert too_big.status_code in (400, 431)
        assert session.get(f"{gateway.url}/health", timeout=10).status_code == 200  # still serving

        log = gateway.proc.log_text()
        assert "request_id=r5 " in log and "route=/v1/chat/completions" in log and "sk-from-file" not in log
        assert '"POST /v1/chat/completions HTTP/1.1"' not in log  # gunicorn's own access line: off by default
        pids = set(re.findall(r"\[(\d+)\] \[INFO\] request_id=r\d+ ", log))
        assert len(pids) == 2, "both gunicorn processes should have served requests"

        worker.stop()
        deadline = time.monotonic() + 5  # both processes notice at their next status poll (every 0.5 s)
        statuses = []
        while time.monotonic() < deadline and statuses[-4:] != [503] * 4:
            statuses.append(requests.get(f"{gateway.url}/ready", timeout=10).status_code)
            time.sleep(0.1)
        assert statuses[-4:] == [503] * 4
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()
