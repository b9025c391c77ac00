"""The status page's data: the cluster as this process knows it, every process's rolling windows and totals, and
the keys' names and policy (never a key or its digest)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone

from app.keys.model import KeyRing
from app.serving.cluster import Cluster
from app.status import totals
from app.status.windows import Windows
from app.upstream.controller import Controller
from app.upstream.errors import UpstreamError
from app.upstream.static_workers import StaticWorkers
from app.upstream.worker_status import WorkerState, WorkerStatus


def snapshot(cluster: Cluster, windows: Windows, ring: KeyRing, read: Callable[[str], WorkerStatus]) -> dict:
    """read(address): a worker's status now (a Controller's workers are asked; StaticWorkers already polls)."""
    windows = windows.merged()  # every process's last minutes, read once for the whole page
    source = cluster.controller
    if isinstance(source, StaticWorkers):
        controller, models, workers = None, [], source.worker_states()
    else:
        controller, models, workers = _from_controller(cluster, source, read)
    everywhere = totals.all_processes()
    names = sorted(set(models) | {m for w in workers for m in w.models} | set(windows.names("model")))
    return {
        "generated_at": _iso(time.time()),
        "process": os.getpid(),
        "window_seconds": windows.seconds,
        "bucket_seconds": windows.bucket_seconds,
        "controller": controller,
        "streams_in_flight": everywhere["streams_in_flight"],
        "models": [_model(name, workers, windows, everywhere["models"]) for name in names],
        "workers": [_worker(state, windows) for state in workers],
        "keys": [_key(api_key, windows) for api_key in ring.keys] if ring.enabled else None,
    }


def _from_controller(cluster: Cluster, source: Controller, read) -> tuple[dict, list[str], list[WorkerState]]:
    try:
        models, controller = source.current_models(), {"address": source.address, "reachable": True, "error": None}
    except UpstreamError as exc:
        models, controller = [], {"address": source.address, "reachable": False, "error": exc.message}
    named = source.named_workers()
    ago = {}
    for addresses in named.values():
        for address, seconds in addresses.items():
            ago[address] = min(seconds, ago.get(address, seconds))
    addresses = sorted(set(ago) | set(source.avoided()))

    def state(address: str) -> WorkerState:
        served = sorted(model for model, found in named.items() if address in found)
        seen = time.time() - ago[address] if address in ago else None
        try:
            status = read(address)
        except UpstreamError:
            return WorkerState(address, served, None, None, False, seen)
        return WorkerState(address, sorted(status.models), status.speed, status.queue_length, True, time.time())

    return controller, models, cluster.map(state, addresses) if addresses else []


def _model(name: str, workers: list[WorkerState], windows: Windows, everywhere: dict) -> dict:
    serving = [w for w in workers if name in w.models]
    return {"name": name, "workers": [w.address for w in serving], "healthy_workers": sum(w.healthy for w in serving),
            "last_minutes": windows.summary("model", name),
            "since_start": everywhere.get(name, {"requests": 0, "errors": 0})}


def _worker(state: WorkerState, windows: Windows) -> dict:
    last = windows.summary("worker", state.address)
    return {"address": state.address, "models": state.models, "healthy": state.healthy, "speed": state.speed,
            "queue_length": state.queue_length,
            "last_seen": _iso(state.last_seen) if state.last_seen is not None else None,
            "last_seen_seconds_ago": round(time.time() - state.last_seen, 1) if state.last_seen is not None else None,
            "last_minutes": {"requests": last["requests"], "errors": last["errors"]}}


def _key(api_key, windows: Windows) -> dict:
    limits = api_key.limits
    return {"name": api_key.name, "models": list(api_key.models) if api_key.models is not None else None,
            "expires": api_key.expires.isoformat() if api_key.expires else None,
            "limits": {field: getattr(limits, field) for field in ("requests_per_minute", "tokens_per_minute",
                                                                    "max_parallel_requests")} if limits else None,
            "last_minutes": windows.summary("key", api_key.name)}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
