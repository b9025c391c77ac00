"""Starting a process, waiting until it answers, stopping it: the base of every process the harness runs.

Every process is started by us in its own session (so it leads a new process
group), and is stopped by *its PID / process group only*: never pkill/killall.
FastChat's heartbeat thread ignores SIGTERM, so ``stop`` escalates to SIGKILL
after a grace period.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

from harness import sampling

__all__ = ["REPO_ROOT", "Proc", "ProcError", "free_port", "require", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[1]  # where gunicorn.conf.py, wsgi.py and bench/ are


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcError(RuntimeError):
    """A managed process failed to start or become ready."""


class PrerequisiteMissing(ProcError):
    """A peer's folder (a virtualenv, a compiled server) could not be made; the message says why."""


def build_peer_folder(cmd: list[str], name: str, fallback: str, timeout: float) -> None:
    """Run a peer folder builder (harness/*_venv.sh, instant when its stamp is current; its lines start with
    "NAME: "). Raises PrerequisiteMissing starting with the builder's "prerequisite missing:" line, or with
    ``fallback``, then the command and the tail of its output."""
    try:
        res = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PrerequisiteMissing(f"prerequisite missing: {' '.join(cmd)} did not finish in {timeout:.0f}s") from exc
    if res.returncode == 0:
        return
    lines = [line for line in (res.stdout + res.stderr).splitlines()
             if "is ignored: it is neither a file nor a directory" not in line][-40:]  # pip config noise
    lead = next((line.split(f"{name}: ", 1)[1] for line in reversed(lines)
                 if f"{name}: " in line and "prerequisite missing:" in line), fallback)
    raise PrerequisiteMissing(f"{lead}\n(command: {' '.join(cmd)} -> exit {res.returncode})\n" + "\n".join(lines))


def _default_ok(resp: requests.Response) -> bool:
    return resp.status_code < 500


class Proc:
    """A subprocess whose stdout+stderr go to ``log_dir/<name>.log``.

    ``Proc(cmd, log_dir=..., name=..., env=...)`` starts the process at once.
    Use as a context manager to have it stopped on exit::

        with Proc([...], log_dir=tmp, name="controller") as p:
            p.wait_http("http://127.0.0.1:21001/list_models", method="POST")
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        log_dir: str | os.PathLike,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.cmd = [str(c) for c in cmd]
        self.name = name or Path(self.cmd[0]).name
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        n = 1
        while self.log_path.exists():  # never clobber an earlier run's log
            n += 1
            self.log_path = log_dir / f"{self.name}.{n}.log"
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "wb")
        self._log.write(("$ " + " ".join(self.cmd) + "\n").encode())
        self._log.flush()
        self.started_at = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                self.cmd,
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session => own process group (pgid == pid)
            )
        except BaseException:
            self._log.close()
            raise
        self.pid = self.popen.pid
        self.ready_after: float | None = None  # seconds from start to wait_http success

    # ------------------------------------------------------------------ state
    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.popen.poll()}>"

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        lines: collections.deque[str] = collections.deque(maxlen=n)
        try:
            with open(self.log_path, errors="replace") as f:
                lines.extend(f)
        except FileNotFoundError:
            return ""
        return "".join(lines)

    def tree_rss_kib(self) -> int:
        """Resident set size of the process and all its descendants (a gunicorn master and its workers), KiB."""
        return sampling.tree_rss_kib(self.pid)

    def _fail(self, msg: str) -> ProcError:
        return ProcError(
            f"{self.name} (pid {self.pid}): {msg}\n"
            f"--- last 40 lines of {self.log_path} ---\n{self.log_tail(40)}"
        )

    # -------------------------------------------------------------- readiness
    def wait_http(
        self,
        url: str,
        timeout: float = 60.0,
        *,
        method: str = "GET",
        ok: Callable[[requests.Response], bool] | None = None,
        interval: float = 0.1,
        request_timeout: float = 5.0,
        **request_kwargs,
    ) -> requests.Response:
        """Poll ``url`` until ``ok(resp)`` is true; return that response.

        Raises ProcError (with the log tail) when the process exits first or the
        timeout passes.  ``request_timeout`` bounds each attempt; other
        ``request_kwargs`` go to ``requests.request`` (json=..., headers=...).
        """
        ok = ok or _default_ok
        deadline = time.monotonic() + timeout
        last = "no attempt made"
        request_kwargs["timeout"] = request_timeout
        while True:
            rc = self.popen.poll()
            if rc is not None:
                raise self._fail(f"exited with code {rc} before {method} {url} was ready")
            try:
                resp = requests.request(method, url, **request_kwargs)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                try:
                    good = ok(resp)
                except Exception as exc:  # a predicate that chokes on a half-ready answer
                    good = False
                    last = f"HTTP {resp.status_code}, ok() raised {exc!r}"
                else:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
                if good:
                    self.ready_after = time.monotonic() - self.started_at
                    return resp
            if time.monotonic() >= deadline:
                raise self._fail(f"{method} {url} not ready after {timeout:.0f}s (last: {last})")
            time.sleep(interval)

    # ------------------------------------------------------------------- stop
    def _signal(self, sig: int) -> None:
        # Only called while our child is unreaped, so its PID (== the id of the
        # process group it leads, thanks to start_new_session=True) cannot have
        # been reused: signalling the group reaches helpers it forked, nothing else.
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process (group), SIGKILL after ``grace`` seconds; reap it."""
        try:
            if self.popen.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.popen.wait(timeout=10)
            return self.popen.returncode
        finally:
            if not self._log.closed:
                self._log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_until(what: str, check: Callable[[], object], proc: Proc | None = None, timeout: float = 60.0,
               interval: float = 0.1):
    """Poll ``check()`` until it returns something true, and return that; an exception in ``check`` counts as not
    yet. Raises ProcError (with ``proc``'s log tail) when ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        if proc is not None and not proc.alive():
            raise proc._fail(f"exited with code {proc.returncode} before {what}")
        try:
            value = check()
        except Exception as exc:  # a peer that is not ready yet answers with anything
            last = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            last = repr(value)
        if time.monotonic() >= deadline:
            message = f"{what}: not after {timeout:.0f}s (last: {last})"
            raise proc._fail(message) if proc is not None else ProcError(message)
        time.sleep(interval)


def require(start: Callable, *args, **kwargs):
    """start(*args, **kwargs), or fail the test tier with the reason (a missing prerequisite, a process that
    would not start): never a silent skip, and no chained traceback hiding the message."""
    import pytest  # only the test tiers call this; the benchmark lets ProcError end the run

    try:
        return start(*args, **kwargs)
    except ProcError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)
