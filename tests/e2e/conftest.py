"""Fixtures for end-to-end tests that start real processes on 127.0.0.1.

FastChat runs from its own virtualenv (``.venv-fastchat`` at the repo root,
or ``$FASTCHAT_VENV``), made by ``tests/e2e/fastchat_venv.sh``; it is never
imported into the test runner.  Every process is stopped by its PID.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # works with any --import-mode
    sys.path.insert(0, str(_HERE))

import procs




@pytest.fixture(scope="session")
def fastchat_venv() -> Path:
    """Path of the FastChat (controller + API server) virtualenv, made if needed."""
    path = Path(os.environ.get("FASTCHAT_VENV") or procs.REPO_ROOT / ".venv-fastchat")
    procs.require(procs.ensure_fastchat_venv, "controller", path)
    return path


@pytest.fixture(scope="session")
def fastchat_controller(fastchat_venv, run_dir):
    """A real FastChat controller: ``.address`` (http://127.0.0.1:PORT), ``.proc``."""
    ctl = procs.require(procs.FastChatController, fastchat_venv / "bin" / "python", run_dir)
    try:
        yield ctl
    finally:
        ctl.stop()
