"""gunicorn's gthread worker, closing its copy of the listening sockets as soon as it stops accepting.

On SIGTERM the master closes its listeners, but each worker still holds the inherited ones until its last request
is done (up to GUNICORN_GRACEFUL_TIMEOUT): the kernel then keeps completing new connections into a queue nobody
reads, so they hang and are reset at the end. Closed here, a stopped server refuses new connections at once, which
a client or load balancer sees and retries elsewhere. On a reload or a binary upgrade the master (old or new)
still holds the socket, so it stays open for the new workers.
"""
from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker as _GThreadWorker


class ThreadWorker(_GThreadWorker):
    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        # Disabled while not alive: the main loop is over, so no poll result can still name a listener.
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()
