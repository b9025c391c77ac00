"""Each process's current keys, re-read when API_KEYS_FILE changes, without a restart and without a request
ever waiting for or failing because of the re-read.

The file is looked at (one os.stat) on a request, at most once per `interval`; when its identity (inode, size,
modification time) changed, and it has not been modified in the last 0.2 s, it is read again. No thread of its own: an idle process has nothing to re-read for,
and the gevent worker needs none. A file that fails to read or parse keeps the keys in use, once logged as an
error and counted, until it changes again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from app import metrics
from app.keys import files
from app.keys.model import KeyRing
from app.settings import ConfigError

logger = logging.getLogger(__name__)

# A file modified this recently may be half written (an editor or `cat >` truncates, then writes): it is read at
# a later look, once it has been left alone this long. This also makes two changes within the file system's
# timestamp granularity show as a new identity.
_SETTLE_NS = 200_000_000


class KeyStore:
    def __init__(self, env_keys: Sequence[str], path: str, *, interval: float = 1.0):
        """Raises ConfigError when the file is broken and this process has no earlier keys to keep (the master
        gunicorn forked it from read the file first: see files.last_good)."""
        self.env_keys = tuple(env_keys)
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._looked = time.monotonic()
        self._identity = self._stat()
        self._content: bytes | None = None
        try:
            self._ring = self._read()
        except ConfigError as exc:
            kept = files.last_good(self.env_keys, path)
            if kept is None:
                raise
            self._failed(exc)
            self._ring = kept

    def current(self) -> KeyRing:
        """The keys in effect now; re-reads the file first when it is time to look and it changed. Requests that
        arrive while another thread re-reads use the keys in effect until then."""
        if self.path and time.monotonic() - self._looked >= self.interval and self._lock.acquire(blocking=False):
            try:
                self._looked = time.monotonic()
                self._look()
            finally:
                self._lock.release()
        return self._ring

    def _look(self) -> None:
        identity = self._stat()
        if identity == self._identity:
            return
        if identity is not None and time.time_ns() - identity[3] < _SETTLE_NS:
            return  # being written, perhaps: look again next time
        try:
            content = files.read_file(self.path)
        except ConfigError as exc:
            self._identity = identity
            self._failed(exc)
            return
        if self._stat() != identity:
            return  # written to while read: look again next time
        self._identity = identity
        if content == self._content:
            return
        self._content = content
        try:
            ring = files.load_ring(self.env_keys, self.path, content)
        except ConfigError as exc:
            self._failed(exc)
            return
        self._ring = ring
        metrics.KEY_FILE_RELOADS.labels("ok").inc()
        logger.info("API keys re-read from %s: %d keys", self.path, len(ring))

    def _stat(self) -> tuple | None:
        if not self.path:
            return None
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns

    def _read(self) -> KeyRing:
        """Raises ConfigError."""
        if self.path:
            self._content = files.read_file(self.path)
        return files.load_ring(self.env_keys, self.path, self._content)

    def _failed(self, exc: ConfigError) -> None:
        metrics.KEY_FILE_RELOADS.labels("error").inc()
        logger.error("%s; the keys in use are kept until the file is fixed", exc)
