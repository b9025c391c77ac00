"""A second gateway to measure side by side with this tree's: another commit's (or this tree's with other settings),
under gunicorn, for bench/request_cost.py and bench/stream_cost.py."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.gateway import BIN, production_environ
from harness.procs import REPO_ROOT, Proc, free_port


class BaselineGateway:
    """A second gateway under gunicorn: of commit `revision` (from an exported copy) or of this tree ("this")."""

    def __init__(self, run_dir: Path, revision: str, controller: str, env: dict[str, str] | None = None):
        self.source = None
        source = REPO_ROOT
        if revision != "this":
            self.source = source = Path(tempfile.mkdtemp(prefix="fastchat-gateway-baseline-"))
            archive = subprocess.run(["git", "archive", revision], cwd=REPO_ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        self.port = free_port()
        # PYTHONPATH first: the virtualenv's editable install points at this tree.
        environ = {**production_environ(), **(env or {}), "BIND": f"127.0.0.1:{self.port}", "CONTROLLER_ADDRESS": controller,
                   "PYTHONPATH": str(source)}
        self.proc = Proc([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], log_dir=run_dir,
                         name="gateway-baseline", env=environ, cwd=source)
        self.proc.wait_http(f"http://127.0.0.1:{self.port}/health", timeout=30, ok=lambda r: r.status_code == 200)

    def stop(self) -> None:
        try:
            self.proc.stop()
        finally:
            if self.source is not None:
                shutil.rmtree(self.source, ignore_errors=True)
