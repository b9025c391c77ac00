"""Process harness for end-to-end tests (stdlib + requests only).

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

__all__ = ["Proc", "ProcError", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcError(RuntimeError):
    """A managed process failed to start or become ready."""


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
        extra_env: Mapping[str, str] | None = None,
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
        if extra_env:
            full_env.update(extra_env)
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

    def rss_kib(self) -> int | None:
        """Resident set size of the process itself (KiB), from /proc; None if gone."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return None

    def tree_rss_kib(self) -> int:
        """Resident set size of the process and all its descendants (a gunicorn master and its workers), KiB."""
        total, pids = 0, [self.pid]
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(child) for child in (task / "children").read_text().split()]
            except (OSError, StopIteration):
                continue
        return total

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


# ---------------------------------------------------------------------------
# FastChat peers (run from their own virtualenv; never imported by us).
# Shared by tests/e2e/conftest.py and tests/interop/conftest.py.
# ---------------------------------------------------------------------------

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
VENV_SCRIPT = E2E_DIR / "fastchat_venv.sh"
PREREQ_EXIT_CODE = 3  # fastchat_venv.sh: "prerequisite missing" (CPU torch wheel)


class PrerequisiteMissing(ProcError):
    """A FastChat virtualenv could not be made; the message says why."""


def require(start: Callable, *args, **kwargs):
    """start(*args, **kwargs), or fail the test tier with the reason (a missing prerequisite, a process that
    would not start): never a silent skip, and no chained traceback hiding the message."""
    import pytest

    try:
        return start(*args, **kwargs)
    except ProcError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


def ensure_fastchat_venv(mode: str, path: str | os.PathLike, timeout: float = 1200) -> Path:
    """Run ``fastchat_venv.sh MODE PATH`` (instant when its stamp is current).

    Returns the venv's python.  Raises PrerequisiteMissing with a message that
    starts with "prerequisite missing:" on any failure.
    """
    path = Path(path)
    cmd = ["bash", str(VENV_SCRIPT), mode, str(path)]
    try:
        res = subprocess.run(
            cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise PrerequisiteMissing(
            f"prerequisite missing: {' '.join(cmd)} did not finish in {timeout:.0f}s"
        ) from exc
    if res.returncode != 0:
        out = "\n".join(
            line
            for line in (res.stdout + res.stderr).splitlines()
            if "is ignored: it is neither a file nor a directory" not in line  # pip config noise
        )
        lines = out.splitlines()[-40:]
        lead = next(
            (ln.split("fastchat_venv: ", 1)[1] for ln in reversed(lines)
             if "prerequisite missing:" in ln),
            f"prerequisite missing: the FastChat {mode} virtualenv could not be built",
        )
        raise PrerequisiteMissing(
            f"{lead}\n(command: {' '.join(cmd)} -> exit {res.returncode})\n" + "\n".join(lines)
        )
    return path / "bin" / "python"


def fastchat_env(run_dir: str | os.PathLike, **extra: str) -> dict[str, str]:
    """Environment for a FastChat process: offline, logs in run_dir, no leaks
    from the test runner's own virtualenv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    run_dir = Path(run_dir)
    env.update(
        LOGDIR=str(run_dir / "fastchat-logdir"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(run_dir / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    Path(env["LOGDIR"]).mkdir(parents=True, exist_ok=True)
    return env


class FastChatController:
    """A real ``fastchat.serve.controller`` on 127.0.0.1:<free port>."""

    def __init__(self, python: str | os.PathLike, run_dir: str | os.PathLike,
                 *, name: str = "fastchat-controller", port: int | None = None,
                 timeout: float = 60) -> None:
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [str(python), "-m", "fastchat.serve.controller",
             "--host", "127.0.0.1", "--port", str(self.port)],
            log_dir=run_dir, name=name, env=fastchat_env(run_dir), cwd=run_dir,
        )
        try:
            self.proc.wait_http(
                self.address + "/list_models", timeout, method="POST",
                ok=lambda r: r.status_code == 200 and "models" in r.json(),
            )
        except BaseException:
            self.proc.stop()
            raise

    def post(self, path: str, json: object = None, timeout: float = 10) -> requests.Response:
        return requests.post(self.address + path, json=json, timeout=timeout)

    def list_models(self) -> list[str]:
        resp = self.post("/list_models")
        resp.raise_for_status()
        return resp.json()["models"]

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)

    def __enter__(self) -> FastChatController:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class FastChatModelWorker:
    """A real ``fastchat.serve.model_worker`` on CPU, registered with a controller."""

    def __init__(self, python: str | os.PathLike, model_path: str | os.PathLike,
                 controller_address: str, run_dir: str | os.PathLike,
                 *, name: str = "fastchat-model-worker", port: int | None = None,
                 extra_args: Sequence[str] = (), timeout: float = 180) -> None:
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.model_name = Path(model_path).name
        self.controller_address = controller_address
        self.proc = Proc(
            [str(python), "-m", "fastchat.serve.model_worker",
             "--model-path", str(model_path), "--device", "cpu",
             "--controller-address", controller_address,
             "--worker-address", self.address,
             "--host", "127.0.0.1", "--port", str(self.port), *extra_args],
            log_dir=run_dir, name=name, env=fastchat_env(run_dir), cwd=run_dir,
        )
        try:
            # Registered with the controller => model loaded and HTTP app about
            # to serve; then make sure the worker itself answers.
            self.proc.wait_http(
                controller_address + "/list_models", timeout, method="POST",
                ok=lambda r: self.model_name in r.json().get("models", []),
            )
            self.proc.wait_http(
                self.address + "/worker_get_status", 30, method="POST",
                ok=lambda r: r.status_code == 200 and "model_names" in r.json(),
            )
        except BaseException:
            self.proc.stop()
            raise
        self.start_seconds = self.proc.ready_after

    def post(self, path: str, json: object = None, timeout: float = 60) -> requests.Response:
        return requests.post(self.address + path, json=json, timeout=timeout)

    def post_stream(self, path: str, json: object = None, timeout: float = 60) -> requests.Response:
        """Streaming POST; use as ``with worker.post_stream(...) as resp:``."""
        return requests.post(self.address + path, json=json, timeout=timeout, stream=True)

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)

    def __enter__(self) -> FastChatModelWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
