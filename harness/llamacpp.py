"""llama.cpp's OpenAI-compatible server (``llama-server``), run as a peer process and never imported: the folder
builder (harness/llamacpp_venv.sh, which compiles llama-server from the llama.cpp source vendored in
llama-cpp-python's sdist), the tiny GGUF model (harness/llamacpp_tiny_model.py, run by that folder's Python) and
the server process.

The folder is ``.venv-llamacpp`` at the repository root (or ``$LLAMACPP_VENV``).  The server runs offline: a local
model file, no web UI, its cache folder in the run's folder.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.procs import REPO_ROOT, PrerequisiteMissing, Proc, build_peer_folder, free_port

HERE = Path(__file__).resolve().parent
VENV_SCRIPT = HERE / "llamacpp_venv.sh"
MODEL_SCRIPT = HERE / "llamacpp_tiny_model.py"
API_KEY = "sk-llamacpp-upstream"
CTX_SIZE = 256  # the server's context: a longer prompt is its 400


def venv_path() -> Path:
    """Where the llama.cpp folder (a virtualenv with bin/llama-server) is, or is to be made."""
    return Path(os.environ.get("LLAMACPP_VENV") or REPO_ROOT / ".venv-llamacpp")



def ensure_llamacpp_venv(path: str | os.PathLike | None = None, timeout: float = 1800) -> Path:
    """Run ``llamacpp_venv.sh PATH`` (instant when its stamp is current; a first build compiles llama-server, some
    minutes on two cores); return the folder.  Raises PrerequisiteMissing ("prerequisite missing: ...")."""
    path = Path(path) if path is not None else venv_path()
    cmd = ["bash", str(VENV_SCRIPT), str(path)]
    build_peer_folder(cmd, "llamacpp_venv", "prerequisite missing: llama-server could not be built", timeout)
    return path


def server_version(venv: str | os.PathLike) -> str:
    """The first line ``llama-server --version`` printed when it was built, e.g. "version: 1 (0c1e570)"."""
    try:
        return (Path(venv) / "llama-server-version.txt").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def make_tiny_model(venv: str | os.PathLike, out: str | os.PathLike, timeout: float = 120) -> Path:
    """Write the tiny GGUF model to ``out`` with the folder's Python; return its path."""
    cmd = [str(Path(venv) / "bin" / "python"), str(MODEL_SCRIPT), str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    try:
        res = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise PrerequisiteMissing(f"prerequisite missing: the tiny GGUF model took over {timeout:.0f}s") from exc
    if res.returncode != 0 or not Path(out).is_file():
        raise PrerequisiteMissing(f"prerequisite missing: the tiny GGUF model was not written (exit "
                                  f"{res.returncode})\n" + "\n".join((res.stdout + res.stderr).splitlines()[-40:]))
    return Path(out)


def llamacpp_env(run_dir: str | os.PathLike) -> dict[str, str]:
    """Environment for the server: nothing from the test runner's proxies or keys, its cache in the run folder."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLAMA_", "HF_", "OPENAI_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")}
    env.update(LLAMA_CACHE=str(Path(run_dir) / "llama-cache"), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", LLAMA_ARG_THREADS="2")
    return env


class LlamaServer:
    """``llama-server -m MODEL --alias ALIAS --host 127.0.0.1 --port <free port>`` (``--embeddings`` when
    ``embeddings``), ready once ``/health`` answers 200 and ``/v1/models`` lists the alias.  ``.url`` is
    http://127.0.0.1:PORT (no /v1)."""

    def __init__(self, venv: str | os.PathLike, run_dir: str | os.PathLike, model: str | os.PathLike, *,
                 alias: str = "tiny-llamacpp", name: str = "llama-server", api_key: str | None = API_KEY,
                 embeddings: bool = False, ctx_size: int = CTX_SIZE, timeout: float = 60) -> None:
        run_dir = Path(run_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.alias = alias
        self.api_key = api_key
        cmd = [str(Path(venv) / "bin" / "llama-server"), "--model", str(model), "--alias", alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--ctx-size", str(ctx_size),
               "--parallel", "2", "--threads", "2", "--no-webui", "--seed", "42"]
        if api_key:
            cmd += ["--api-key", api_key]
        if embeddings:
            cmd += ["--embeddings", "--pooling", "mean"]
        self.proc = Proc(cmd, log_dir=run_dir, name=name, env=llamacpp_env(run_dir), cwd=run_dir)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self.proc.wait_http(self.url + "/health", timeout, ok=lambda r: r.status_code == 200)
            self.proc.wait_http(self.url + "/v1/models", 30, headers=headers,
                                ok=lambda r: r.status_code == 200 and alias in {m["id"] for m in r.json()["data"]})
        except BaseException:
            self.proc.stop()
            raise
        self.start_seconds = self.proc.ready_after

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
