"""The embedded store: one SQLite file (WAL) in a directory every gunicorn process of the host shares, so one
key's limits hold across all of them with no service to run.

EmbeddedStorage is a `limits` Storage (its counters are limits' fixed windows: a row per key and window, a hit of any
cost one statement; FixedWindowRateLimiter runs on it as on limits' own storages), with the limiter's batched
operations: admit, refund and settle, each one transaction. It also keeps the parallel-request leases; a lease names
its process, so one left by a process that died mid-request is dropped as soon as the key is full (and expires
anyway).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time

from limits.storage import Storage

from app.limits.counts import WINDOW_SECONDS, Counts, parallel_key, requests_key, tokens_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (key TEXT NOT NULL, id TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, id)) WITHOUT ROWID;
"""
# One statement: a new window, or an expired one restarted, or the amount added (a refused request's refund only
# ever follows its own hit, in a live window).
_INCR = """
INSERT INTO counters (key, value, expires) VALUES (?1, ?2, ?3)
ON CONFLICT (key) DO UPDATE SET value = CASE WHEN expires <= ?4 THEN ?2 ELSE value + ?2 END,
                                expires = CASE WHEN expires <= ?4 THEN ?3 ELSE expires END
RETURNING value, expires
"""


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


class EmbeddedStorage(Storage):
    STORAGE_SCHEME = ["fastchat-gateway-embedded"]
    errors = (sqlite3.Error, OSError)

    def __init__(self, directory: str | None, clock=time.time):
        """directory: where the file is (made if missing); None: a temporary one of this process's own."""
        super().__init__()
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    @property
    def base_exceptions(self):
        return self.errors

    def _db(self) -> sqlite3.Connection:
        """This process's connection (made after gunicorn's fork: a connection must not cross one)."""
        if self._connection is None or self._pid != os.getpid():
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="fastchat-gateway-limits-")
            os.makedirs(self.directory, exist_ok=True)
            connection = sqlite3.connect(os.path.join(self.directory, "limits.sqlite3"), timeout=2.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 2000")
            connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
            connection.execute("PRAGMA synchronous = OFF")  # counts of the last minute need not survive a crash
            connection.executescript(_SCHEMA)
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    # ------------------------------------------------------------------------------------- limits' Storage
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._clock()
        with self._lock:
            return self._db().execute(_INCR, (key, amount, now + expiry, now)).fetchone()[0]

    # ------------------------------------------------------------------------------------- the limiter's
    def admit(self, name: str, requests: bool, tokens: bool, parallel: int | None, lease: str,
              ttl: float) -> Counts:
        """In one transaction: count a request (requests), read the tokens used (tokens), take one of `parallel`
        slots for `lease`."""
        now, counts = self._clock(), Counts()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if tokens:
                    row = db.execute("SELECT value, expires FROM counters WHERE key = ? AND expires > ?",
                                     (tokens_key(name), now)).fetchone()
                    if row:
                        counts.tokens_used, counts.tokens_reset = row[0], row[1] - now
                if requests:
                    counts.requests, expires = db.execute(
                        _INCR, (requests_key(name), 1, now + WINDOW_SECONDS, now)).fetchone()
                    counts.requests_reset = expires - now
                if parallel:
                    counts.slot_taken, counts.in_use = self._acquire(db, parallel_key(name), parallel, lease, ttl,
                                                                     now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return counts

    def refund(self, name: str, request: bool, lease: str | None) -> None:
        """Give back what a refused request took: its count, its slot."""
        with self._lock:
            db = self._db()
            if request:
                db.execute("UPDATE counters SET value = value - 1 WHERE key = ? AND expires > ?",
                           (requests_key(name), self._clock()))
            if lease is not None:
                db.execute("DELETE FROM leases WHERE key = ? AND id = ?", (parallel_key(name), lease))

    def settle(self, name: str, tokens: int, lease: str | None) -> None:
        """A finished request: add the tokens it used, free its slot."""
        now = self._clock()
        with self._lock:
            db = self._db()
            if tokens and lease is not None:
                db.execute("BEGIN IMMEDIATE")
            try:
                if tokens:
                    db.execute(_INCR, (tokens_key(name), tokens, now + WINDOW_SECONDS, now)).fetchone()
                if lease is not None:
                    db.execute("DELETE FROM leases WHERE key = ? AND id = ?", (parallel_key(name), lease))
                if tokens and lease is not None:
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def get(self, key: str) -> int:
        with self._lock:
            row = self._db().execute("SELECT value FROM counters WHERE key = ? AND expires > ?",
                                     (key, self._clock())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        now = self._clock()
        with self._lock:
            row = self._db().execute("SELECT expires FROM counters WHERE key = ? AND expires > ?",
                                     (key, now)).fetchone()
        return row[0] if row else now

    def check(self) -> bool:
        with self._lock:
            return self._db().execute("SELECT 1").fetchone() == (1,)

    def reset(self) -> int | None:
        with self._lock:
            return self._db().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        with self._lock:
            self._db().execute("DELETE FROM counters WHERE key = ?", (key,))

    # ------------------------------------------------------------------------------------- parallel leases
    @staticmethod
    def _acquire(db: sqlite3.Connection, key: str, limit: int, lease: str, ttl: float, now: float) -> tuple[bool, int]:
        """Take one of `limit` slots for `lease` (for at most `ttl` s), in the caller's transaction: (taken, slots
        in use then)."""
        (in_use,) = db.execute("SELECT count(*) FROM leases WHERE key = ?", (key,)).fetchone()
        if in_use >= limit:  # full: first drop the expired slots and what dead processes left
            in_use -= db.execute("DELETE FROM leases WHERE key = ? AND expires <= ?", (key, now)).rowcount
            for (pid,) in db.execute("SELECT DISTINCT pid FROM leases WHERE key = ?", (key,)).fetchall():
                if not process_alive(pid):
                    in_use -= db.execute("DELETE FROM leases WHERE key = ? AND pid = ?", (key, pid)).rowcount
        if in_use >= limit:
            return False, in_use
        db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (key, lease, os.getpid(), now + ttl))
        return True, in_use + 1
