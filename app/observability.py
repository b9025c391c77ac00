"""What each request leaves behind: an X-Request-Id, one access-log line and the Prometheus numbers.

Streamed responses are recorded when their last byte is sent, not when the view returns.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, Response, g, request

from app import metrics

access_log = logging.getLogger("app.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Labelling these by model would let any client create a metric series per made-up model name.
_UNLABELLED_STATUSES = frozenset({400, 401, 404, 405, 413})


@dataclass
class RequestRecord:
    """One request's facts, filled in by the layers that learn them."""

    request_id: str
    route: str
    method: str
    remote: str | None
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    key: str | None = None  # the API key's name (app.auth), never the key
    stream: bool = False
    usage: dict | None = None
    stream_error: str | None = None
    time_to_first_token: float | None = None
    # Called as callback(record, status) when the request is over (a stream: its last byte sent, or the client
    # gone), after it is counted; e.g. to settle what a key used. A callback must not raise.
    on_finish: list = field(default_factory=list)
    rejection: str | None = None  # why the gateway refused it, if it did (rejected())

    def first_token(self) -> None:
        if self.time_to_first_token is None:
            self.time_to_first_token = time.perf_counter() - self.started
            _child(metrics.TIME_TO_FIRST_TOKEN, self.route).observe(self.time_to_first_token)

    def stream_started(self) -> None:
        self.stream = True
        metrics.STREAMS_IN_FLIGHT.inc()

    def stream_finished(self) -> None:
        metrics.STREAMS_IN_FLIGHT.dec()
        self.finish(200)

    def finish(self, status: int) -> None:
        """Count the request and write its access-log line (prompts and outputs are never part of it)."""
        duration = time.perf_counter() - self.started
        model = "" if status in _UNLABELLED_STATUSES or not self.model else self.model
        code = str(status)
        _child(metrics.REQUESTS, self.route, model, code).inc()
        _child(metrics.LATENCY, self.route).observe(duration)
        key = self.key or "-"
        _child(metrics.KEY_REQUESTS, key, code).inc()
        usage = self.usage or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if model and isinstance(prompt_tokens, int):
            _child(metrics.PROMPT_TOKENS, model).inc(prompt_tokens)
            _child(metrics.KEY_TOKENS, key, "prompt").inc(prompt_tokens)
        if model and isinstance(completion_tokens, int):
            _child(metrics.COMPLETION_TOKENS, model).inc(completion_tokens)
            _child(metrics.KEY_TOKENS, key, "completion").inc(completion_tokens)
        if access_log.isEnabledFor(logging.INFO):
            ttft = f"{self.time_to_first_token * 1000:.1f}" if self.time_to_first_token is not None else "-"
            # handle(makeRecord(...)) is what info() does, without looking up the calling frame (findCaller),
            # which no access-log format prints.
            access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, (
                "request_id=%s remote=%s key=%s method=%s route=%s model=%s status=%s stream=%s duration_ms=%.1f "
                "ttft_ms=%s prompt_tokens=%s completion_tokens=%s%s"), (
                self.request_id, self.remote or "-", key, self.method, self.route,
                _printable(self.model) if self.model else "-", status, "true" if self.stream else "false",
                duration * 1000, ttft, prompt_tokens if prompt_tokens is not None else "-",
                completion_tokens if completion_tokens is not None else "-",
                f" stream_error={self.stream_error}" if self.stream_error else ""), None, "finish"))
        for callback in self.on_finish:
            callback(self, status)

    def rejected(self, reason: str) -> None:
        """Count a refusal before any worker was asked (metrics.REJECTIONS), by the request's key."""
        self.rejection = reason
        metrics.REJECTIONS.labels(self.key or "-", reason).inc()


# (metric, label values) -> its child. labels() takes a lock and builds the label tuple on every call; a request
# makes up to seven. As many entries as prometheus_client keeps children itself.
_CHILDREN: dict[tuple, object] = {}


def _child(metric, *labels: str):
    child = _CHILDREN.get((metric, labels))
    if child is None:
        child = _CHILDREN[(metric, labels)] = metric.labels(*labels)
    return child


def _printable(value: str, limit: int = 128) -> str:
    """A client's string made safe for a log line: no newlines or other control characters (no forged lines),
    no spaces (one field), bounded length."""
    escaped = value[:limit].encode("unicode_escape").decode("ascii").replace(" ", "\\x20")
    return escaped + ("..." if len(value) > limit else "")


def init_app(app: Flask) -> None:
    """Register before every other hook, so even a rejected request gets an id and a log line."""
    app.before_request(_start)
    app.after_request(_finish)


def current_record() -> RequestRecord:
    return g.request_record


def _start() -> None:
    req = request._get_current_object()  # one context lookup, not one per attribute
    offered = req.headers.get("X-Request-Id", "")
    rule = req.url_rule
    g.request_record = RequestRecord(
        request_id=offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex,
        route=rule.rule if rule else "unmatched", method=req.method, remote=req.remote_addr)


def _finish(response: Response) -> Response:
    record: RequestRecord | None = g.get("request_record")
    if record is None:  # a failure before our first hook ran (e.g. in an earlier hook of an extension)
        return response
    response.headers["X-Request-Id"] = record.request_id
    if not (response.is_streamed and record.stream):  # a stream records itself when it ends
        record.finish(response.status_code)
    return response
