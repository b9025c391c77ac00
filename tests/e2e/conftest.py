"""Fixtures for end-to-end tests that start real processes on 127.0.0.1 (the processes come from harness/).

FastChat runs from its own virtualenv (``.venv-fastchat`` at the repo root,
or ``$FASTCHAT_VENV``), made by ``harness/fastchat_venv.sh``; it is never
imported into the test runner.  Every process is stopped by its PID.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import fastchat, procs


@pytest.fixture(scope="session")
def fastchat_venv() -> Path:
    """Path of the FastChat (controller + API server) virtualenv, made if needed."""
    return procs.require(fastchat.ensure_fastchat_venv, "controller").parents[1]


@pytest.fixture(scope="session")
def fastchat_controller(fastchat_venv, run_dir):
    """A real FastChat controller: ``.address`` (http://127.0.0.1:PORT), ``.proc``."""
    ctl = procs.require(fastchat.FastChatController, fastchat_venv / "bin" / "python", run_dir)
    try:
        yield ctl
    finally:
        ctl.stop()
