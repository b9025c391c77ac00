"""The status page in a real headless Chromium, over real gunicorn (two processes) and two simulated workers: it
loads without console errors, shows the models and workers, marks a killed worker unhealthy within the status
interval. Its screenshots are kept in the run directory, and the first also at $STATUS_SCREENSHOT when set (how
docs/status-page.png, shown in the README, is made)."""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness import chromium, procs
from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker

ADMIN = "admin-e2e-secret"
REQUESTS = 12


@pytest.fixture(scope="module")
def browser(run_dir):
    binary = procs.require(chromium.ensure_chromium)
    started = procs.require(chromium.Chromium, run_dir, binary)
    try:
        yield started
    finally:
        started.stop()


def test_the_status_page_in_chromium(run_dir, browser):
    first = SimulatedWorker(run_dir, "--tokens", "3", "--token-delay", "0.2", name="sim-status-1")
    second = SimulatedWorker(run_dir, "--tokens", "3", "--token-delay", "0.2", name="sim-status-2")
    gateway = None
    try:
        gateway = Gateway(run_dir, name="gateway-status", WORKER_ADDRESSES=f"{first.address},{second.address}",
                          WORKER_STATUS_INTERVAL="1", ADMIN_API_KEY=ADMIN)
        def chat(number: int) -> None:  # whole replies and streams (time to first token)
            response = requests.post(f"{gateway.url}/v1/chat/completions", timeout=10, json={
                "model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "stream": number % 2 == 1})
            assert response.status_code == 200 and response.content

        with ThreadPoolExecutor(REQUESTS) as pool:  # at once, so that both processes serve some
            list(pool.map(chat, range(REQUESTS)))
        assert requests.get(f"{gateway.url}/status", timeout=10).status_code == 401

        page = f"{gateway.url}/status"
        admin = {"Authorization": f"Bearer {ADMIN}"}
        # The totals since start and the last minutes are every process's (the Prometheus directory), the last
        # minutes within a second (each process writes its figures there once a second).
        pages_from = set()

        def model_figures():  # a new connection each time: either process may answer
            data = requests.get(f"{page}.json", headers=admin, timeout=10).json()
            [model] = data["models"]
            if model["last_minutes"]["requests"] != REQUESTS:
                return None
            pages_from.add(data["process"])
            return len(pages_from) == 2 and model

        model = procs.wait_until("every request in both processes' pages", model_figures, gateway.proc, timeout=10)
        assert model["since_start"] == {"requests": REQUESTS, "errors": 0}
        assert model["last_minutes"]["errors"] == 0 and model["last_minutes"]["time_to_first_token_ms"] > 0
        browser.load(page, admin)
        assert browser.console_errors() == []
        text = browser.text()
        assert "sim-model" in text and first.address in text and second.address in text
        assert "unhealthy" not in text and ADMIN not in text
        shot = browser.screenshot(run_dir / "status-page.png")
        assert shot.stat().st_size > 10_000  # a page was drawn, not a blank
        if os.environ.get("STATUS_SCREENSHOT"):
            shutil.copy(shot, Path(os.environ["STATUS_SCREENSHOT"]))

        second.stop()

        def marked() -> bool:
            browser.load(page, admin)  # each load may land on either gunicorn process: both must know
            row = next(line for line in browser.text().splitlines() if line.startswith(second.address))
            return "unhealthy" in row

        # Within the status interval (1 s), each process's poller drops it; twice that, for both processes.
        procs.wait_until("the killed worker shown unhealthy", lambda: all(marked() for _ in range(4)),
                         gateway.proc, timeout=3)
        assert browser.console_errors() == []
        browser.screenshot(run_dir / "status-page-worker-down.png")
    finally:
        if gateway is not None:
            gateway.stop()
        first.stop()
        second.stop()


def test_the_status_page_with_fastchats_controller_and_api_keys(run_dir, browser, fastchat_controller):
    """One process, so that the page's process is the one the controller named the worker to."""
    ctl = fastchat_controller.address
    worker = SimulatedWorker(run_dir, "--tokens", "3", controller=ctl, model="ctl-model", name="sim-status-ctl")
    gateway = None
    try:
        wait_registered(ctl, worker.model)
        gateway = Gateway(run_dir, name="gateway-status-ctl", CONTROLLER_ADDRESS=ctl, API_KEYS="sk-status-user",
                          ADMIN_API_KEY=ADMIN, WEB_CONCURRENCY="1")
        response = requests.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                                 headers={"Authorization": "Bearer sk-status-user"},
                                 json={"model": "ctl-model", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200
        browser.load(f"{gateway.url}/status", {"Authorization": f"Bearer {ADMIN}"})
        assert browser.console_errors() == []
        text = browser.text()
        assert f"{ctl}: reachable" in text
        assert "ctl-model" in text and worker.address in text and "unhealthy" not in text
        assert "key-1" in text and "sk-status-user" not in text and ADMIN not in text
        browser.screenshot(run_dir / "status-page-controller.png")
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()
