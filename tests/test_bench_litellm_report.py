"""The LiteLLM comparison's judgement (bench/litellm_report.py) on figures written by hand: each target passes
or misses on its own ratio, and a scenario that failed or was not run leaves its target unjudged."""
from bench.litellm_report import evaluate, format_check, per_target


def summary(p50, p99=None, rps=100.0, ok=1000, cpu=1.0, chunks=None, elapsed=10.0):
    out = {"latency_ms": {"p50": p50, "p99": p99 if p99 is not None else p50 * 2}, "rps": rps, "ok": ok,
           "server_cpu_s": cpu, "elapsed_s": elapsed}
    if chunks is not None:
        out["content_chunks"] = chunks
    return out


def scenarios(gateway_c1=1.3, litellm_c1=4.0, gateway_cpu=0.3, litellm_cpu=1.0, gateway_stream_cpu=0.0025):
    """direct answers in 1 ms at c=1; the proxies add (gateway_c1 - 1) and (litellm_c1 - 1) ms."""
    chat = lambda c, g, lite: {"name": f"chat-c{c}", "stream": False, "concurrency": c, "results": {  # noqa: E731
        "direct": summary(1.0, cpu=0.05), "gateway": summary(g, cpu=gateway_cpu),
        "litellm": summary(lite, cpu=litellm_cpu)}}
    stream = {"name": "stream-c16", "stream": True, "concurrency": 16, "results": {
        "direct": summary(2.0, cpu=0.01, chunks=64_000),
        "gateway": summary(3.0, cpu=gateway_stream_cpu * 64, chunks=64_000),
        "litellm": summary(30.0, cpu=50.0, chunks=64_000)}}
    return [chat(1, gateway_c1, litellm_c1), chat(16, 2.0, 20.0), chat(64, 5.0, 80.0), stream]


def by_target(checks):
    return {c["target"]: c for c in checks}


def test_every_target_met():
    checks = by_target(evaluate(scenarios()))
    latency = checks["added latency at c=1 (p50), gateway / LiteLLM"]
    assert latency["measured"] == 0.1 and latency["pass"] is True  # +0.3 ms against +3.0 ms
    per_cpu = checks["throughput per CPU at c=16 (requests per CPU-second), gateway / LiteLLM"]
    assert per_cpu["measured"] == round(1000 / 0.3 / 1000, 3) and per_cpu["pass"] is True
    chunk = checks["gateway CPU per relayed streamed chunk at c=16"]
    assert chunk["measured"] == 2.5 and chunk["pass"] is True  # 0.16 CPU s over 64,000 chunks
    assert all(c["pass"] for c in checks.values())


def test_each_target_misses_on_its_own_ratio():
    slow = by_target(evaluate(scenarios(gateway_c1=2.1)))  # +1.1 ms against +3.0: more than a third
    assert slow["added latency at c=1 (p50), gateway / LiteLLM"]["pass"] is False
    assert slow["throughput per CPU at c=16 (requests per CPU-second), gateway / LiteLLM"]["pass"] is True
    heavy = by_target(evaluate(scenarios(gateway_cpu=0.5)))  # 2x LiteLLM's requests per CPU-second, not 3x
    assert heavy["throughput per CPU at c=64 (requests per CPU-second), gateway / LiteLLM"]["pass"] is False
    chunky = by_target(evaluate(scenarios(gateway_stream_cpu=0.031)))  # 31 µs a chunk
    check = chunky["gateway CPU per relayed streamed chunk at c=16"]
    assert check["measured"] == 31.0 and check["pass"] is False
    assert "[MISS]" in format_check(check)


def test_a_failed_or_missing_scenario_is_not_judged():
    runs = scenarios()
    runs[0]["results"]["litellm"] = {"failed": "ConnectionError"}
    runs[1]["results"]["gateway"] = {"failed": "ConnectionError"}
    checks = by_target(evaluate(runs[:3]))  # and no streamed scenario at all
    assert checks["added latency at c=1 (p50), gateway / LiteLLM"]["pass"] is None
    assert checks["throughput per CPU at c=16 (requests per CPU-second), gateway / LiteLLM"]["pass"] is None
    assert checks["throughput per CPU at c=64 (requests per CPU-second), gateway / LiteLLM"]["pass"] is True
    assert not any("chunk" in name for name in checks)
    assert "[n/a ]" in format_check(checks["added latency at c=1 (p50), gateway / LiteLLM"])


def test_per_target_figures():
    figures = per_target(summary(1.0, ok=500, cpu=2.0, chunks=32_000, elapsed=4.0), stream=True)
    assert figures == {"cpu_s_per_1000_requests": 4.0, "requests_per_cpu_s": 250.0, "chunks_per_s": 8000.0,
                       "cpu_s_per_1000_chunks": 0.0625, "cpu_us_per_chunk": 62.5}
