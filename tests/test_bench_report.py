"""bench/report.py's maths (server CPU per 1,000 chunks and requests, issue 15's judgement) and the load generator's
count of relayed content chunks, which the per-chunk figure divides by."""
import pytest

from bench import report
from bench.benchmark import kind_cpu, summarize_target
from bench.loadgen.handlers import SSEHandler
from bench.loadgen.stats import summarize


def result(rps=None, ttft=None, chunks_cpu=None, requests_cpu=None):
    r = {"rps": rps, "ttft_ms": {"p50": ttft}}
    if chunks_cpu is not None:
        r["server_cpu_s_per_1000_chunks"] = chunks_cpu
    if requests_cpu is not None:
        r["server_cpu_s_per_1000_requests"] = requests_cpu
    return r


def scenario(name, stream, **targets):
    return {"name": name, "stream": stream, "workers": "fastchat-code", "results": targets}


def passing_run():
    return [
        scenario("chat-c16", False, fastchat=result(rps=200), gateway=result(rps=800, requests_cpu=0.5)),
        scenario("chat-c64", False, fastchat=result(rps=200), gateway=result(rps=900, requests_cpu=0.45)),
        scenario("stream-c16", True, direct=result(rps=100, ttft=1.0),
                 gateway=result(rps=90, ttft=6.0, chunks_cpu=0.02), fastchat=result(rps=20, chunks_cpu=0.7)),
        scenario("stream-c64", True, direct=result(rps=300, ttft=3.0),
                 gateway=result(rps=240, ttft=20.0, chunks_cpu=0.019)),
    ]


HOLD = {"max_held_zero_errors": 2000, "ramp": [1000, 2000], "steps": [{"streams": 2000}], "workers": "fastchat-code"}


def by_target(checks):
    return {c["target"]: c for c in checks}


def test_cpu_per_1000_is_seconds_times_1000_over_the_count():
    assert report.cpu_per_1000(1.28, 64_000) == 0.02  # 20 µs per chunk
    assert report.cpu_per_1000(0.9, 1800) == 0.5      # 0.5 ms per request
    assert report.cpu_per_1000(1.0, 0) is None
    assert report.cpu_per_1000(None, 10) is None


def test_server_cpu_divides_the_servers_own_group_by_chunks_and_requests():
    cpu = {"gateway": 2.56, "fastchat_server": 9.0, "workers": 5.0}
    assert report.server_cpu("gateway", cpu, 1000, 64_000, True) == {
        "server_cpu_s_per_1000_requests": 2.56, "server_cpu_s_per_1000_chunks": 0.04}
    assert report.server_cpu("fastchat", cpu, 3000, None, False) == {"server_cpu_s_per_1000_requests": 3.0}
    assert report.server_cpu("direct", cpu, 1000, 64_000, True) == {}


def test_the_table_shows_microseconds_per_chunk_and_milliseconds_per_request():
    assert report.fmt_server_cpu({"server_cpu_s_per_1000_chunks": 0.0551}, True) == "55.1 µs/chunk"
    assert report.fmt_server_cpu({"server_cpu_s_per_1000_requests": 0.85}, False) == "0.850 ms/req"
    assert report.fmt_server_cpu({}, True) == "-"


def test_a_run_that_meets_every_target_passes_every_check():
    checks = report.evaluate_issue15(passing_run(), HOLD)
    assert len(checks) == 9
    assert all(c["pass"] is True for c in checks), [c for c in checks if not c["pass"]]
    cpu = by_target(checks)["gateway CPU per relayed chunk, streams at c=16"]
    assert cpu["measured"] == 20.0 and cpu["unit"] == "µs" and "700.0 µs" in cpu["detail"]


@pytest.mark.parametrize("where, value, target", [
    (("stream-c16", "gateway", "rps"), 89.9, "stream throughput at c=16, gateway / direct"),
    (("stream-c16", "gateway", "ttft_ms"), {"p50": 6.01}, "stream TTFT p50 at c=16, gateway - direct"),
    (("stream-c64", "gateway", "rps"), 239, "stream throughput at c=64, gateway / direct"),
    (("chat-c16", "gateway", "rps"), 799, "non-stream throughput at c=16, gateway / FastChat"),
    (("stream-c64", "gateway", "server_cpu_s_per_1000_chunks"), 0.0201,
     "gateway CPU per relayed chunk, streams at c=64"),
    (("chat-c16", "gateway", "server_cpu_s_per_1000_requests"), 0.51,
     "gateway CPU per non-streamed request at c=16"),
])
def test_just_missing_one_target_fails_that_check_only(where, value, target):
    run = passing_run()
    name, server, key = where
    next(s for s in run if s["name"] == name)["results"][server][key] = value
    checks = by_target(report.evaluate_issue15(run, HOLD))
    assert checks[target]["pass"] is False
    assert [t for t, c in checks.items() if c["pass"] is not True] == [target]


def test_held_streams_fail_below_2000_and_are_not_judged_without_the_test():
    checks = by_target(report.evaluate_issue15(passing_run(), {**HOLD, "max_held_zero_errors": 1500}))
    assert checks["concurrent open streams held with zero errors"]["pass"] is False
    checks = by_target(report.evaluate_issue15(passing_run(), None))
    assert checks["concurrent open streams held with zero errors"]["pass"] is None


def test_a_target_that_was_not_measured_is_not_applicable_rather_than_failed():
    run = [s for s in passing_run() if s["name"] != "chat-c16"]
    del run[-1]["results"]["direct"]  # stream-c64 without the direct target (--targets)
    checks = by_target(report.evaluate_issue15(run, HOLD))
    assert checks["non-stream throughput at c=16, gateway / FastChat"]["pass"] is None
    assert checks["gateway CPU per non-streamed request at c=16"]["pass"] is None
    assert checks["stream throughput at c=64, gateway / direct"]["pass"] is None
    assert checks["stream throughput at c=16, gateway / direct"]["pass"] is True


def test_the_measured_kinds_workers_are_separated_from_the_idle_kinds():
    cpu = {"gateway": 1.0, "workers:fastchat-code": 2.0, "workers:simulated": 0.25, "other": 0.1}
    assert kind_cpu(cpu, "fastchat-code") == {"gateway": 1.0, "other": 0.1, "workers": 2.0, "idle_workers": 0.25}
    assert kind_cpu(cpu, "simulated")["workers"] == 0.25


def test_summarize_target_counts_every_relayed_chunk_into_the_gateways_cpu_per_chunk():
    # (send, first token, end, error, events, content chunks): two good streams and one that failed mid-way
    records = [(0.0, 0.01, 0.5, None, 67, 64), (0.0, 0.01, 0.5, None, 67, 64), (0.0, 0.01, 0.2, "no_done", 20, 20)]
    cpu = {"gateway": 0.148, "fastchat_server": 0.0, "controller": 0.0, "workers": 0.1, "loadgen": 0.1, "other": 0.0}
    r = summarize_target("gateway", True, 16, records, 1.0, cpu)
    assert r["content_chunks"] == 148 and r["content_chunks_per_stream"] == 64
    assert r["server_cpu_s_per_1000_chunks"] == 1.0   # 0.148 s x 1000 / 148 chunks
    assert r["server_cpu_s_per_1000_requests"] == 74.0  # per successful stream
    assert r["server_cpu_ms_per_request"] == 74.0


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


def test_the_sse_handler_counts_events_with_content_only():
    handler = SSEHandler()
    body = _sse(
        b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',  # the role chunk: no content
        b'{"choices":[{"index":0,"delta":{"content":"Hello"}}]}',
        b'{"choices":[{"index":0,"delta":{"content": " \\"quoted\\" world"}}]}',  # FastChat's spacing, escapes
        b'{"choices":[{"index":0,"delta":{"content":"say \\"content\\":\\"x\\""}}]}',  # one chunk, not two
        b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}',
        b"[DONE]")
    for i in range(0, len(body), 7):  # arriving in pieces, first token mid-way
        handler.feed(body[i:i + 7], float(i))
    assert handler.finish() is None
    assert handler.chunks == 3 and handler.events == 7


def test_stats_sum_the_chunks_of_every_record():
    records = [(0.0, 0.1, 1.0, None, 66, 64), (0.0, None, 1.0, "http_500", 0, 0)]
    summary = summarize(records, 1.0, stream=True)
    assert summary["content_chunks"] == 64 and summary["content_chunks_per_stream"] == 64


def test_server_cpu_per_token_counts_the_workers_frames_when_chunks_were_coalesced():
    # 1,000 streams of 64 tokens relayed in 32,000 chunks: per chunk twice per token
    cpu = {"gateway": 2.56}
    out = report.server_cpu("gateway", cpu, 1000, 32_000, True, tokens=64)
    assert out["server_cpu_s_per_1000_chunks"] == 0.08
    assert out["server_cpu_s_per_1000_tokens"] == 0.04
