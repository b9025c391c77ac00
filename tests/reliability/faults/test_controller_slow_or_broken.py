"""A controller that is slow or answers garbage: a fake one (stdlib HTTP server) routing to one simulated worker."""
from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from fault_checks import (KEY, MODEL, READ_TIMEOUT, Expect, model_requests, ready_status, unavailable_problems,
                          wait_idle, wait_success)
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


class FakeController:
    """A stdlib HTTP server speaking the two controller calls the gateway makes, with a settable delay per path
    and a settable failure mode ("ok", "http-500", "garbage")."""

    def __init__(self, worker_address: str, model: str):
        self.delays: dict[str, float] = {}
        self.mode = "ok"
        self.calls: collections.Counter = collections.Counter()
        owner = self
        replies = {"/list_models": {"models": [model]}, "/get_worker_address": {"address": worker_address},
                   "/refresh_all_workers": {}}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                owner.calls[path] += 1
                delay = owner.delays.get(path, owner.delays.get("*", 0.0))
                if delay:
                    time.sleep(delay)
                if path not in replies:
                    status, body, ctype = 404, b'{"detail": "Not Found"}', "application/json"
                elif owner.mode == "http-500":
                    status, body, ctype = 500, b"Internal Server Error", "text/plain"
                elif owner.mode == "garbage":
                    status, body, ctype = 200, b"<html>not json</html>", "text/html"
                else:
                    status, body, ctype = 200, json.dumps(replies[path]).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the gateway gave up waiting: fine
                    self.close_connection = True

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-controller", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def faked(run_dir):
    """A gateway (CONTROLLER_READ_TIMEOUT=1, model list and worker picks not cached) in front of a fake controller
    that routes to one simulated worker. Without the pick cache every request meets the controller's fault; a
    request right after a good pick would otherwise reuse it (the cache's own tests are in test_controller.py)."""
    started = []
    worker = fake = None
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "8", name="sim-faults-fake-controller", model=MODEL)
        started.append(worker)
        fake = FakeController(worker.address, MODEL)
        gw = Gateway(run_dir, name="gateway-faults-fake-controller", CONTROLLER_ADDRESS=fake.address, API_KEYS=KEY,
                     CONTROLLER_READ_TIMEOUT="1", MODEL_LIST_TTL="0", WORKER_PICK_INTERVAL="0",
                     WORKER_READ_TIMEOUT=str(READ_TIMEOUT))
        started.append(gw)
        yield SimpleNamespace(fake=fake, worker=worker, gateway=gw)
    finally:
        for proc in reversed(started):
            proc.stop()
        if fake is not None:
            fake.stop()


CONTROLLER_FAULTS = [
    # (id, delays, mode, expected)
    pytest.param({"*": 2.5}, "ok", Expect(504, "upstream_timeout", 50006, max_seconds=5.0), id="slow-all"),
    pytest.param({"/get_worker_address": 2.5}, "ok", Expect(504, "upstream_timeout", 50006, max_seconds=5.0),
                 id="slow-get-worker-address"),
    pytest.param({}, "http-500", Expect(502, "upstream_error", 50001, max_seconds=5.0), id="http-500"),
    pytest.param({}, "garbage", Expect(502, "upstream_error", 50001, max_seconds=5.0), id="garbage"),
]


@pytest.mark.parametrize("delays, mode, expect", CONTROLLER_FAULTS)
def test_controller_slow_or_broken(delays, mode, expect, faked, tally):
    url = faked.gateway.url
    faked.fake.delays, faked.fake.mode = {}, "ok"
    problems = wait_success(url, MODEL, timeout=5)
    assert not problems, "\n".join(problems)
    faked.fake.delays, faked.fake.mode = dict(delays), mode
    outs = []
    try:
        outs = model_requests(url, MODEL, "faulty controller")
        if set(delays) == {"/get_worker_address"}:
            outs = outs[:3]  # GET /v1/models does not ask for a worker
        problems += unavailable_problems(outs, expect, f"controller {mode} {delays}")
        if set(delays) != {"/get_worker_address"} and ready_status(url) != 503:
            problems.append("/ready not 503 with the controller failing")
    finally:
        faked.fake.delays, faked.fake.mode = {}, "ok"
    problems += wait_success(url, MODEL, timeout=10)
    problems += wait_idle(faked.worker)
    tally.case(f"controller:{mode}:{','.join(delays) or '-'}", requests=len(outs) + 4, faults=1, errors=len(outs))
    assert not problems, "\n".join(problems)
    tally.passed()
