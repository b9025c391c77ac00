"""Fixtures for interoperability tests against a REAL FastChat 0.2.36 model
worker serving a tiny, locally built Llama model on the CPU.

The worker runs from its own virtualenv with CPU torch (``.venv-fastchat-torch``
at the repo root, or ``$FASTCHAT_TORCH_VENV``), made by
``harness/fastchat_venv.sh model-worker``.  Without the CPU torch 2.13.0
wheel the fixtures FAIL with "prerequisite missing: ..." (never skip).
The processes come from harness/, as in tests/e2e.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import fastchat, procs, sampling

BUILD_TINY_MODEL = Path(__file__).resolve().with_name("build_tiny_model.py")
TINY_MODEL_NAME = "tiny-vicuna-test"


@pytest.fixture(scope="session")
def fastchat_model_worker_venv() -> Path:
    """Path of the FastChat virtualenv with CPU torch + transformers, made if needed."""
    return procs.require(fastchat.ensure_fastchat_venv, "model-worker").parents[1]


@pytest.fixture(scope="session")
def tiny_model_path(fastchat_model_worker_venv, tmp_path_factory, run_dir) -> Path:
    """Folder of the tiny random-weight Llama + BPE tokenizer (``.../tiny-vicuna-test``)."""
    outdir = tmp_path_factory.mktemp("tiny-model")
    res = subprocess.run(
        [str(fastchat_model_worker_venv / "bin" / "python"), str(BUILD_TINY_MODEL), str(outdir)],
        check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        env=fastchat.fastchat_env(run_dir),
    )
    if res.returncode != 0:
        pytest.fail(f"building the tiny model failed (exit {res.returncode}):\n"
                    + "\n".join((res.stdout + res.stderr).splitlines()[-40:]), pytrace=False)
    folder = Path(res.stdout.strip().splitlines()[-1])
    assert folder.name == TINY_MODEL_NAME and (folder / "config.json").is_file(), res.stdout
    return folder


@pytest.fixture(scope="session")
def interop_controller(fastchat_model_worker_venv, run_dir):
    """A real FastChat controller (from the torch venv) for the real workers."""
    ctl = procs.require(fastchat.FastChatController, fastchat_model_worker_venv / "bin" / "python", run_dir,
                        name="interop-controller")
    try:
        yield ctl
    finally:
        ctl.stop()


@pytest.fixture(scope="session")
def tiny_model_worker(fastchat_model_worker_venv, tiny_model_path, interop_controller, run_dir):
    """A real ``fastchat.serve.model_worker`` serving the tiny model on CPU,
    registered with ``interop_controller``.  Attributes: address, model_name,
    proc, start_seconds, start_rss_kib."""
    worker = procs.require(fastchat.FastChatModelWorker, fastchat_model_worker_venv / "bin" / "python", tiny_model_path,
                           interop_controller.address, run_dir, name="tiny-model-worker")
    worker.start_rss_kib = sampling.rss_kib(worker.proc.pid)
    metrics = {"worker_start_seconds": round(worker.start_seconds, 2),
               "worker_rss_mib_after_start": round((worker.start_rss_kib or 0) / 1024, 1)}
    (run_dir / "tiny-model-worker-metrics.json").write_text(json.dumps(metrics, indent=2))
    try:
        yield worker
    finally:
        worker.stop()
