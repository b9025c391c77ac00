"""Prometheus instruments, correct across gunicorn processes (prometheus_client's multiprocess mode, enabled by
PROMETHEUS_MULTIPROC_DIR, which gunicorn.conf.py sets up), and the /metrics endpoint.

The instruments are module-level, as prometheus_client intends: one set per process, whatever the apps.
"""
from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

from app.documented import documented

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter("fastchat_gateway_requests_total", "Requests answered, by route, model and status.",
                   ["route", "model", "status"])
LATENCY = Histogram("fastchat_gateway_request_duration_seconds",
                    "Time from request to the last byte of the response (whole stream for streams).", ["route"],
                    buckets=_LATENCY_BUCKETS)
TIME_TO_FIRST_TOKEN = Histogram("fastchat_gateway_time_to_first_token_seconds",
                                "Time from request to the first generated text in a stream.", ["route"],
                                buckets=_LATENCY_BUCKETS)
PROMPT_TOKENS = Counter("fastchat_gateway_prompt_tokens_total", "Prompt tokens, as the workers report them.",
                        ["model"])
COMPLETION_TOKENS = Counter("fastchat_gateway_completion_tokens_total", "Generated tokens.", ["model"])
UPSTREAM_ERRORS = Counter("fastchat_gateway_upstream_errors_total", "Controller and worker failures, by kind.",
                          ["upstream", "kind"])
# By key name: the names are the operator's (API_KEYS_FILE), so the series are bounded; "-" when no key was
# recognised or none is needed.
KEY_REQUESTS = Counter("fastchat_gateway_key_requests_total", "Requests answered, by API key name and status.",
                       ["key", "status"])
KEY_TOKENS = Counter("fastchat_gateway_key_tokens_total", "Prompt and completion tokens, by API key name.",
                     ["key", "kind"])
KEY_FILE_RELOADS = Counter("fastchat_gateway_key_file_reloads_total",
                           "Re-reads of a changed API_KEYS_FILE, by result (ok, or error: the keys in use were kept).",
                           ["result"])
# Refused before any worker was asked: reason is rate, tokens, parallel (the key's limits), model (a model the key
# may not use) or backpressure (no room to wait for a worker).
REJECTIONS = Counter("fastchat_gateway_rejections_total", "Requests refused before reaching a worker, by API key "
                     "name and reason.", ["key", "reason"])
# The per-key limits' store (Redis, or the embedded file) failed; decision says what RATE_LIMIT_STORE_FAILURE made
# of the request: open (let in unlimited) or closed (refused with a 503); unsettled: a finished request's tokens or
# parallel slot could not be recorded.
RATE_LIMIT_STORE_ERRORS = Counter("fastchat_gateway_rate_limit_store_errors_total", "Requests whose key's limits "
                                  "could not be checked or settled, by what was decided.", ["decision"])
STREAMS_IN_FLIGHT = Gauge("fastchat_gateway_streams_in_flight", "Streamed responses being sent.",
                          multiprocess_mode="livesum")

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@documented("probes", content={"text/plain": {"schema": {"type": "string"}}})
def metrics():
    """Prometheus metrics

    Metrics in Prometheus' text exposition format; no API key. Under gunicorn, the numbers of every process
    summed.
    """
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
