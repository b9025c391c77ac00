"""FastChat's own processes, run from their own virtualenv and never imported: the venv builder
(harness/fastchat_venv.sh), the controller, the model worker and the OpenAI API server.

The virtualenvs are ``.venv-fastchat`` (controller and API server; ``$FASTCHAT_VENV``) and
``.venv-fastchat-torch`` (the model worker, with CPU torch; ``$FASTCHAT_TORCH_VENV``) at the repository root.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import requests

from harness.procs import REPO_ROOT, PrerequisiteMissing, Proc, build_peer_folder, free_port, wait_until

VENV_SCRIPT = Path(__file__).resolve().with_name("fastchat_venv.sh")
VENVS = {  # mode of fastchat_venv.sh -> (environment variable, default folder)
    "controller": ("FASTCHAT_VENV", REPO_ROOT / ".venv-fastchat"),
    "model-worker": ("FASTCHAT_TORCH_VENV", REPO_ROOT / ".venv-fastchat-torch"),
}


def venv_path(mode: str) -> Path:
    """Where the FastChat virtualenv for ``mode`` ("controller" or "model-worker") is, or is to be made."""
    variable, default = VENVS[mode]
    return Path(os.environ.get(variable) or default)



def ensure_fastchat_venv(mode: str, path: str | os.PathLike | None = None, timeout: float = 1200) -> Path:
    """Run ``fastchat_venv.sh MODE PATH`` (instant when its stamp is current).

    ``path`` defaults to ``venv_path(mode)``. Returns the venv's python.  Raises
    PrerequisiteMissing with a message that starts with "prerequisite missing:"
    on any failure.
    """
    path = Path(path) if path is not None else venv_path(mode)
    cmd = ["bash", str(VENV_SCRIPT), mode, str(path)]
    build_peer_folder(cmd, "fastchat_venv",
                      f"prerequisite missing: the FastChat {mode} virtualenv could not be built", timeout)
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


class FastChatApiServer:
    """FastChat's ``fastchat.serve.openai_api_server`` in front of a controller, ready once it lists ``models``."""

    def __init__(self, python: str | os.PathLike, controller_address: str, run_dir: str | os.PathLike,
                 *, models: Iterable[str] = (), name: str = "fastchat-openai-api-server",
                 timeout: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [str(python), "-m", "fastchat.serve.openai_api_server", "--host", "127.0.0.1",
             "--port", str(self.port), "--controller-address", controller_address],
            log_dir=run_dir, name=name, env=fastchat_env(run_dir), cwd=run_dir,
        )
        wanted = set(models)
        try:
            self.proc.wait_http(
                self.url + "/v1/models", timeout,
                ok=lambda r: r.status_code == 200 and wanted <= {m["id"] for m in r.json()["data"]},
            )
        except BaseException:
            self.proc.stop()
            raise

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)


def wait_registered(controller_address: str, model: str, timeout: float = 15) -> None:
    """Until the controller lists `model`."""
    def listed() -> bool:
        return model in requests.post(f"{controller_address}/list_models", timeout=5).json()["models"]

    wait_until(f"{model} registered with the controller at {controller_address}", listed, timeout=timeout)


class FastChatCodeWorker:
    """A benchmark worker built on FastChat's own worker code (``bench/fastchat_worker.py``: fschat's FastAPI worker
    app and BaseModelWorker under uvicorn, generation faked by the simulated model), run with FastChat's python from
    the repository root; registered with ``controller`` (heartbeat every ``heartbeat`` s) unless it is None.

    ``args`` are bench/fastchat_worker.py's flags (``--tokens``, ``--token-delay``, ``--generator`` ...).
    ``wait=False`` returns at once (start several, then ``wait_ready()`` on each). The same interface as
    harness.simworkers.SimulatedWorker where the benchmark needs it: ``stats()``, ``payloads()``, ``reset()``."""

    def __init__(self, python: str | os.PathLike, run_dir: str | os.PathLike, *args: str,
                 controller: str | None = None, model: str = "bench-model", name: str = "fastchat-code-worker",
                 heartbeat: float = 45, wait: bool = True) -> None:
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.model = model
        self.name = name
        cmd = [str(python), "-m", "bench.fastchat_worker", "--host", "127.0.0.1", "--port", str(self.port),
               "--model-names", model, *args]
        cmd += ["--controller-address", controller] if controller else ["--no-register"]
        # FastChat reads its heartbeat interval from the environment when fastchat.constants is imported.
        env = fastchat_env(run_dir, FASTCHAT_WORKER_HEART_BEAT_INTERVAL=str(int(heartbeat)))
        env["PYTHONPATH"] = str(REPO_ROOT)  # bench.simworker.generation, from this checkout
        self.proc = Proc(cmd, log_dir=run_dir, name=name, env=env, cwd=REPO_ROOT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        try:
            self.proc.wait_http(f"{self.address}/worker_get_status", timeout, method="POST",
                                ok=lambda r: r.status_code == 200 and "model_names" in r.json())
        except BaseException:
            self.proc.stop()
            raise

    def post(self, path: str, json: object = None, timeout: float = 30) -> requests.Response:
        return requests.post(self.address + path, json=json, timeout=timeout)

    def stats(self) -> dict:
        return requests.get(f"{self.address}/sim/stats", timeout=5).json()

    def payloads(self) -> list[dict]:
        return self.stats()["generate_payloads"]

    def reset(self) -> None:
        requests.post(f"{self.address}/sim/reset", timeout=5).raise_for_status()

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)

    def __enter__(self) -> FastChatCodeWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
