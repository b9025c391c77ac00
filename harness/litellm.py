"""LiteLLM's proxy (``litellm --config``), run from its own virtualenv and never imported: the venv builder
(harness/litellm_venv.sh) and the proxy process.

The virtualenv is ``.venv-litellm`` at the repository root (or ``$LITELLM_VENV``).  The proxy runs offline:
LITELLM_LOCAL_MODEL_COST_MAP=True (its bundled cost map, no fetch), telemetry off, no database.
"""
from __future__ import annotations

import os
from pathlib import Path

from harness.procs import REPO_ROOT, PrerequisiteMissing, Proc, build_peer_folder, free_port

VENV_SCRIPT = Path(__file__).resolve().with_name("litellm_venv.sh")
MASTER_KEY = "sk-litellm-master"


def venv_path() -> Path:
    """Where the LiteLLM virtualenv is, or is to be made."""
    return Path(os.environ.get("LITELLM_VENV") or REPO_ROOT / ".venv-litellm")



def ensure_litellm_venv(path: str | os.PathLike | None = None, timeout: float = 1200) -> Path:
    """Run ``litellm_venv.sh PATH`` (instant when its stamp is current); return the venv's folder.  Raises
    PrerequisiteMissing (message starting "prerequisite missing:") on any failure."""
    path = Path(path) if path is not None else venv_path()
    cmd = ["bash", str(VENV_SCRIPT), str(path)]
    build_peer_folder(cmd, "litellm_venv", "prerequisite missing: the LiteLLM virtualenv could not be built", timeout)
    return path


def litellm_env(run_dir: str | os.PathLike, **extra: str) -> dict[str, str]:
    """Environment for the proxy: offline, no telemetry, no database, nothing from the test runner's venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "DATABASE_URL")
           and not k.startswith(("OPENAI_", "LITELLM_"))}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="INFO",
        PYTHONUNBUFFERED="1",
        HOME=str(Path(run_dir) / "litellm-home"),  # anything it caches stays in the run's folder
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    return env


class LiteLLMProxy:
    """``litellm --config <file> --host 127.0.0.1 --port <free port> --num_workers N``, ready once
    ``/health/liveliness`` answers and ``/v1/models`` (with the master key) lists ``models``.  ``.url`` is
    http://127.0.0.1:PORT (no /v1).  ``env``: variables on top of litellm_env's (e.g. LITELLM_LOG=ERROR)."""

    def __init__(self, venv: str | os.PathLike, run_dir: str | os.PathLike, config_yaml_text: str, *,
                 models: tuple[str, ...] = (), name: str = "litellm-proxy", master_key: str = MASTER_KEY,
                 timeout: float = 90, num_workers: int = 1, env: dict[str, str] | None = None) -> None:
        run_dir = Path(run_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_key = master_key
        self.config_path = run_dir / f"{name}.yaml"
        self.config_path.write_text(config_yaml_text)
        self.proc = Proc(
            [str(Path(venv) / "bin" / "litellm"), "--config", str(self.config_path),
             "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", str(num_workers)],
            log_dir=run_dir, name=name, env=litellm_env(run_dir, **(env or {})), cwd=run_dir,
        )
        wanted = set(models)
        try:
            self.proc.wait_http(self.url + "/health/liveliness", timeout, ok=lambda r: r.status_code == 200)
            self.proc.wait_http(
                self.url + "/v1/models", 30, headers={"Authorization": f"Bearer {master_key}"},
                ok=lambda r: r.status_code == 200 and wanted <= {m["id"] for m in r.json()["data"]},
            )
        except BaseException:
            self.proc.stop()
            raise
        self.start_seconds = self.proc.ready_after

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace)

    def __enter__(self) -> LiteLLMProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
