"""A real headless Chromium (Debian's `chromium`, which `make test` installs when missing, as it does redis-server)
driven over the DevTools protocol: load a page with extra headers, collect its console errors, read its text, take
a screenshot. Started with a fresh profile and every background service off; stopped by PID."""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psutil
import requests
from websockets.sync.client import connect

from harness.procs import Proc, ProcError, free_port, wait_until

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900")


def ensure_chromium() -> str:
    """The chromium binary. Raises ProcError when it is missing."""
    found = shutil.which("chromium")
    if found is None:
        raise ProcError("chromium is not installed: `make test` installs Debian's chromium package "
                        "(apt-get install -y chromium)")
    return found


class Chromium:
    def __init__(self, run_dir: Path, binary: str):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=run_dir)
        self._stack = ExitStack()
        self._id = 0
        self.events: list[dict] = []
        # Its own config directory too: Chromium's crash handlers leave its process group, and are then found
        # (and stopped) by this directory in their command line.
        self.proc = Proc([binary, *FLAGS, f"--user-data-dir={self.profile}", f"--remote-debugging-port={self.port}",
                          "about:blank"], log_dir=run_dir, name="chromium",
                         env={**os.environ, "XDG_CONFIG_HOME": self.profile})
        try:
            page = wait_until("chromium's DevTools", self._page, self.proc, timeout=30)
            self._ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024,
                                                         open_timeout=10))
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Page.setLifecycleEventsEnabled", enabled=True)
        except BaseException:
            self.stop()
            raise

    def _page(self) -> dict | None:
        targets = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
        return next((target for target in targets if target.get("type") == "page"), None)

    def call(self, method: str, **params) -> dict:
        """One DevTools command's result; events arriving meanwhile are kept in `events`."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == self._id:
                if "error" in message:
                    raise ProcError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def load(self, url: str, headers: dict[str, str] | None = None) -> None:
        """Navigate to `url` (with `headers` on every request) and wait for that document's load event. The page
        before it goes first (about:blank, which has no timers): its late events (a self-refresh, a failed load)
        would otherwise be taken for this page's."""
        self.call("Network.setExtraHTTPHeaders", headers=headers or {})
        self._navigate("about:blank")
        self.events.clear()
        self._navigate(url)

    def _navigate(self, url: str) -> None:
        started = self.call("Page.navigate", url=url)
        if "errorText" in started:
            raise ProcError(f"loading {url}: {started['errorText']}")
        if "loaderId" not in started:  # the same document (a fragment): nothing to wait for
            return
        loader = started["loaderId"]

        def loaded(event: dict) -> bool:
            params = event.get("params", {})
            return (event.get("method") == "Page.lifecycleEvent" and params.get("name") == "load"
                    and params.get("loaderId") == loader)

        while not any(loaded(event) for event in self.events):
            self.events.append(json.loads(self._ws.recv(timeout=30)))

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the browser reported since the last load."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"{params['entry'].get('url', '')}: {params['entry'].get('text')}")
            elif method == "Network.loadingFailed":
                errors.append(f"load failed: {params.get('errorText')}")
        return errors

    def text(self) -> str:
        """The page's visible text. A page that reloads itself (the status page) may be between two documents:
        wait for the next one to be whole."""
        expression = "document.readyState === 'complete' && document.body ? document.body.innerText : null"
        return wait_until("the page's text", lambda: self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value"), self.proc,
            timeout=10)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def stop(self) -> None:
        self._stack.close()
        self.proc.stop()
        for process in psutil.process_iter(["cmdline"]):
            if any(self.profile in part for part in process.info["cmdline"] or ()):
                try:
                    process.kill()  # by its PID: one of this browser's crash handlers
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(self.profile, ignore_errors=True)
