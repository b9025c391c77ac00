"""Load generator for bench/benchmark.py: asyncio, raw HTTP/1.1 over keep-alive connections, stdlib only (and
the project's harness/sse.py).

One connection per concurrent client; each client sends its next request as soon as the previous response has
ended. Per request it records the send time, the time of the first content token (streams only) and the time of
the last byte, and an error label or None:

- ``http_<status>``: any status other than 200;
- ``timeout``, ``conn:<Exception>``, ``exc:<Exception>``: the request did not complete;
- ``no_done`` (an SSE stream without ``data: [DONE]``), ``error_event`` (an SSE ``error`` object in the stream),
  ``worker_error`` (a worker frame or reply with a non-zero ``error_code``), ``no_finish`` (a worker stream whose
  last frame has no ``finish_reason``), ``empty`` (no generated text at all), ``bad_body`` (unparsable body, or SSE
  framing that harness/sse.py refuses even leniently: a field other than ``data``, an event after ``[DONE]``).

Time to first token (TTFT) is send -> the first SSE ``data:`` event whose JSON has a non-empty
``choices[0].delta.content`` (or ``choices[0].text``), or, for a FastChat worker's own stream, the first
NUL-delimited frame with a non-empty ``text``. Only the events up to that one are parsed as JSON; after it the
stream is scanned for its end and for error objects without decoding, so the generator stays cheap.

Usable on its own for quick experiments against a running server::

    python -m bench.loadgen --url http://127.0.0.1:8000 --model sim-chat --stream -c 16 -n 2000 -t 10
"""
from bench.loadgen.runner import HoldResult, raise_nofile_limit, run_hold, run_load
from bench.loadgen.stats import LoadResult, percentile, summarize
from bench.loadgen.targets import Target, chat_request, worker_request

__all__ = [
    "Target", "LoadResult", "HoldResult", "run_load", "run_hold", "chat_request", "worker_request",
    "raise_nofile_limit", "percentile", "summarize",
]
