"""A real redis-server on a free port of 127.0.0.1, with no persistence, for the per-key limits shared by several
gateway instances (REDIS_URL). Debian's redis-server package (`make test` installs it when missing); stopped by
its PID only. `stop` then `start` again on the same port is how tests take Redis away and bring it back."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

from harness.procs import Proc, ProcError, free_port, wait_until


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)
    if found is None:
        raise ProcError("redis-server is not installed: `make test` installs Debian's redis-server package "
                        "(apt-get install -y redis-server)")
    return found


def ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64).startswith(b"+PONG")


class RedisServer:
    def __init__(self, run_dir: Path, name: str = "redis"):
        self.run_dir = Path(run_dir)
        self.name = name
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        self.proc = Proc([redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(self.run_dir)], log_dir=self.run_dir, name=self.name)
        try:
            wait_until(f"redis-server answers on port {self.port}", lambda: ping(self.port), self.proc, timeout=20)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
