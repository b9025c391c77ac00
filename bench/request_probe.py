"""One gateway tree's Python CPU per non-streamed chat request, without gunicorn: run by bench/request_cost.py.

    python bench/request_probe.py --controller URL --body JSON --requests 2000   # PYTHONPATH picks the tree

Builds the app (whichever `app` package PYTHONPATH finds first) as gunicorn would, with the access log written
(to /dev/null) and Prometheus in multiprocess mode, and calls its WSGI callable in this one thread, request after
request, over real sockets to the controller and workers, then counts the Python bytecodes a request runs. The CPU is this process's (time.process_time), so the
figure leaves out gunicorn's sockets and thread handoffs and the GIL waits of a loaded process: the app's own cost,
which moves far less than the whole gateway's when other work shares the machine. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time


def count_opcodes(one, requests: int) -> float:
    """Python bytecodes run per request (sys.settrace opcode events): a figure other work on the machine cannot
    move, for the Python half of the cost (C code such as json's encoder or socket calls counts one call each)."""
    count = [0]

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            count[0] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(requests):
            one()
    finally:
        sys.settrace(None)
    return round(count[0] / requests, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--controller", required=True)
    parser.add_argument("--body", required=True, help="the chat request, JSON")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--opcodes", type=int, default=100, help="requests traced to count Python opcodes")
    args = parser.parse_args()

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="request-probe-metrics-")
    # The access log as gunicorn.conf.py configures it: INFO lines through a stream handler (here to /dev/null).
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                                           "[%Y-%m-%d %H:%M:%S %z]"))
    access = logging.getLogger("app.access")
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    access.propagate = False

    from app.factory import create_app  # noqa: E402 - after the metrics folder is set
    from werkzeug.test import EnvironBuilder

    # The controller's pick is reused for good: its round trip (every 0.1 s per process by default) would land on
    # whichever request comes, and more often per request when tracing slows them down.
    app = create_app(environ={"CONTROLLER_ADDRESS": args.controller, "WORKER_PICK_INTERVAL": "1000000",
                              "WORKER_PICK_TTL": "1000000"})
    body = args.body
    template = EnvironBuilder(path="/v1/chat/completions", method="POST", data=body,
                              content_type="application/json",
                              headers={"Host": "127.0.0.1:8000", "User-Agent": "request-probe"}).get_environ()
    raw = body.encode()

    def one() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(raw)
        status: list = []
        chunks = app.wsgi_app(environ, lambda s, h, e=None: status.append(s))
        for _ in chunks:
            pass
        if hasattr(chunks, "close"):
            chunks.close()
        if not status or not status[0].startswith("200"):
            raise SystemExit(f"request failed: {status}")

    for _ in range(args.warmup):
        one()
    per_request = []
    for _ in range(args.rounds):
        started = time.process_time()
        for _ in range(args.requests):
            one()
        per_request.append((time.process_time() - started) / args.requests)
    print(json.dumps({"app": sys.modules["app"].__file__,
                      "cpu_ms_per_request": [round(1000 * x, 4) for x in per_request],
                      "opcodes_per_request": count_opcodes(one, args.opcodes) if args.opcodes else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
