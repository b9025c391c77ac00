"""Figures of every gunicorn process, read from prometheus_client's multiprocess directory (or this process's
registry when there is none): streams in flight now, and requests and errors per model since the start."""
from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess


def all_processes() -> dict:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    streams = 0.0
    models: dict[str, dict[str, int]] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "fastchat_gateway_streams_in_flight":
                streams += sample.value
            elif sample.name == "fastchat_gateway_requests_total" and sample.labels.get("model"):
                totals = models.setdefault(sample.labels["model"], {"requests": 0, "errors": 0})
                totals["requests"] += int(sample.value)
                if sample.labels.get("status", "").startswith("5"):
                    totals["errors"] += int(sample.value)
    return {"streams_in_flight": int(streams), "models": models}
