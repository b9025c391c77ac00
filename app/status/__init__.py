"""The operator's status page (/status, /status.json): on only when ADMIN_API_KEY is set, so without it the routes
do not exist (404 like any unknown path) and no request pays for the windows."""
from __future__ import annotations

import os

from flask import Flask

from app.observability import RequestRecord, current_record
from app.serving.failover import LAST_WORKER
from app.status.windows import Windows
from app.upstream.client import UpstreamClient
from app.upstream.worker_status import read_status

# The statuses whose model is the client's word, not a served model (as app.observability labels them).
_UNCOUNTED = frozenset({400, 401, 404, 405, 413})


def init_app(app: Flask) -> None:
    """Register right after app.observability (its record must exist when the hook runs) and before app.auth
    (a request auth refuses, a 429, counts too)."""
    if not app.config["ADMIN_API_KEY"]:
        return
    from app.status import views

    # gunicorn's processes share the Prometheus directory (gunicorn.conf.py sets it): their windows go there too.
    windows = Windows(directory=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)
    client = UpstreamClient(connect_retries=0)
    timeout = (app.config["WORKER_CONNECT_TIMEOUT"], 2.0)  # a status reply is instant
    app.extensions["status"] = {"windows": windows, "read": lambda address: read_status(client, address, timeout)}
    app.before_request(lambda: _watch(windows))
    app.register_blueprint(views.bp)


def _watch(windows: Windows) -> None:
    LAST_WORKER.set(None)  # this thread's previous request's worker is not this one's
    current_record().on_finish.append(lambda record, status: count(windows, record, status, LAST_WORKER.get()))


def count(windows: Windows, record: RequestRecord, status: int, worker: str | None = None) -> None:
    """One finished request into its model's, its key's and its worker's windows (an on_finish callback: must not
    raise). worker: the one it went to last, if any."""
    usage = record.usage or {}
    figures = {"error": status >= 500 or record.stream_error is not None, "ttft": record.time_to_first_token,
               "prompt_tokens": _int(usage.get("prompt_tokens")),
               "completion_tokens": _int(usage.get("completion_tokens"))}
    if record.model and status not in _UNCOUNTED:
        windows.add("model", record.model, **figures)
    if record.key:
        windows.add("key", record.key, **figures)
    if worker:
        windows.add("worker", worker, **figures)


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
