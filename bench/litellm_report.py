"""The LiteLLM comparison's figures and targets (bench/litellm_compare.py), from its scenarios' summaries: pure
functions, so the judgement can be checked on figures written by hand.

A scenario is ``{"name", "stream", "concurrency", "results": {target: summary}}`` with targets ``direct`` (the
upstream itself), ``litellm`` and ``gateway``; a summary is bench.loadgen's (rps, latency_ms, ttft_ms,
content_chunks, elapsed_s, ok) plus ``server_cpu_s`` (the CPU seconds of that target's server process tree during
the measurement)."""
from __future__ import annotations

from bench.report import fmt_ms, ratio

TARGETS = ("direct", "litellm", "gateway")
PROXIES = ("litellm", "gateway")
LABELS = {"direct": "upstream directly", "litellm": "LiteLLM proxy", "gateway": "fastchat-gateway"}

ADDED_LATENCY_SHARE = 1 / 3       # gateway's added latency at c=1 <= this x LiteLLM's
THROUGHPUT_PER_CPU_RATIO = 3.0    # gateway's requests per CPU-second >= this x LiteLLM's
CPU_US_PER_CHUNK = 30.0           # gateway CPU per relayed streamed chunk


def _get(scenario: dict | None, target: str, *keys):
    value = None if scenario is None else scenario["results"].get(target)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def per_target(summary: dict, stream: bool) -> dict:
    """The figures of one target in one scenario: CPU per 1,000 requests (and chunks), requests (or chunks) per
    CPU-second of the server, chunks/s."""
    cpu, ok = summary.get("server_cpu_s"), summary.get("ok") or 0
    out = {"cpu_s_per_1000_requests": None if not cpu or not ok else round(cpu * 1000 / ok, 4),
           "requests_per_cpu_s": None if not cpu else round(ok / cpu, 1)}
    if stream:
        chunks = summary.get("content_chunks") or 0
        elapsed = summary.get("elapsed_s") or 0
        out["chunks_per_s"] = None if not elapsed else round(chunks / elapsed, 1)
        out["cpu_s_per_1000_chunks"] = None if not cpu or not chunks else round(cpu * 1000 / chunks, 5)
        out["cpu_us_per_chunk"] = None if out["cpu_s_per_1000_chunks"] is None else round(
            out["cpu_s_per_1000_chunks"] * 1000, 2)
    return out


def figure(scenario: dict | None, target: str, stream: bool, key: str):
    """One of per_target's figures; None when the scenario or target is missing or failed."""
    summary = None if scenario is None else scenario["results"].get(target)
    if not summary or "failed" in summary:
        return None
    return per_target(summary, stream).get(key)


def added(scenario: dict | None, target: str, key: str, percentile: str) -> float | None:
    """target's ``key`` percentile (latency_ms or ttft_ms) minus the direct target's, in ms."""
    t, d = _get(scenario, target, key, percentile), _get(scenario, "direct", key, percentile)
    return None if t is None or d is None else round(t - d, 3)


def _check(name: str, measured, limit: str, passed: bool | None, unit: str = "", detail: str = "") -> dict:
    # pass is None when the run did not measure what the target needs.
    return {"target": name, "measured": None if measured is None else round(measured, 3), "limit": limit,
            "unit": unit, "pass": None if measured is None or passed is None else bool(passed), "detail": detail}


def evaluate(scenarios: list[dict]) -> list[dict]:
    """The issue's three targets, as ratios within the run."""
    by = {s["name"]: s for s in scenarios}
    checks = []
    c1 = by.get("chat-c1")
    for p in ("p50", "p99"):
        g, lite = added(c1, "gateway", "latency_ms", p), added(c1, "litellm", "latency_ms", p)
        share = None if g is None or lite is None or lite <= 0 else g / lite
        checks.append(_check(
            f"added latency at c=1 ({p}), gateway / LiteLLM", share, f"<= {ADDED_LATENCY_SHARE:.3f} (one third)",
            None if share is None else share <= ADDED_LATENCY_SHARE, "x",
            f"gateway +{fmt_ms(g)} ms, LiteLLM +{fmt_ms(lite)} ms over direct" if g is not None and lite is not None
            else ""))
    for c in (16, 64):
        s = by.get(f"chat-c{c}")
        g, lite = figure(s, "gateway", False, "requests_per_cpu_s"), figure(s, "litellm", False, "requests_per_cpu_s")
        v = ratio(g, lite)
        checks.append(_check(
            f"throughput per CPU at c={c} (requests per CPU-second), gateway / LiteLLM", v,
            f">= {THROUGHPUT_PER_CPU_RATIO:g}", None if v is None else v >= THROUGHPUT_PER_CPU_RATIO, "x",
            f"gateway {g} req/CPU-s, LiteLLM {lite} req/CPU-s" if v is not None else ""))
    for s in scenarios:
        if not s["stream"] or "gateway" not in s["results"]:
            continue
        v, lite = figure(s, "gateway", True, "cpu_us_per_chunk"), figure(s, "litellm", True, "cpu_us_per_chunk")
        checks.append(_check(
            f"gateway CPU per relayed streamed chunk at c={s['concurrency']}", v, f"<= {CPU_US_PER_CHUNK:g} µs",
            None if v is None else v <= CPU_US_PER_CHUNK, "µs",
            f"LiteLLM {lite} µs" if lite is not None else ""))
    return checks


def format_check(c: dict) -> str:
    status = "n/a " if c["pass"] is None else "PASS" if c["pass"] else "MISS"
    return (f"  [{status}] {c['target']}: {c['measured']} {c['unit']} (target {c['limit']})"
            f"{'; ' + c['detail'] if c['detail'] else ''}")


HEADER = (f"{'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'TTFT50':>7} {'TTFT99':>7} {'chunks/s':>9} "
          f"{'err':>4} {'n':>6} | {'server cpu s':>12} {'upstream':>8} {'loadgen':>7} {'other':>6} | "
          f"{'per 1k req':>10} {'req/CPU-s':>9} {'µs/chunk':>8}")


def format_row(name: str, r: dict, stream: bool) -> str:
    if "failed" in r:
        return f"{name:<9} FAILED: {r['failed']}"
    f = per_target(r, stream)
    ttft = r.get("ttft_ms") or {}
    cpu = r.get("cpu_s", {})

    def n(v, spec):
        return "-" if v is None else format(v, spec)

    row = (f"{name:<9} {r['rps']:>8.1f} {fmt_ms(r['latency_ms']['p50']):>8} {fmt_ms(r['latency_ms']['p99']):>8} "
           f"{fmt_ms(ttft.get('p50')):>7} {fmt_ms(ttft.get('p99')):>7} {n(f.get('chunks_per_s'), '.0f'):>9} "
           f"{r['errors']:>4} {r['requests']:>6} | {n(r.get('server_cpu_s'), '.2f'):>12} "
           f"{n(cpu.get('upstream'), '.2f'):>8} {n(cpu.get('loadgen'), '.2f'):>7} {n(cpu.get('other'), '.2f'):>6} | "
           f"{n(f['cpu_s_per_1000_requests'], '.3f'):>10} {n(f['requests_per_cpu_s'], '.0f'):>9} "
           f"{n(f.get('cpu_us_per_chunk'), '.1f'):>8}")
    if r["errors"]:
        row += f"\n{'':<9} errors: {r['error_kinds']}"
    return row


def headline(scenarios: list[dict]) -> list[dict]:
    """One row per target: the figures the README's table shows."""
    by = {s["name"]: s for s in scenarios}
    rows = []
    for t in TARGETS:
        row = {"target": t}
        c1 = by.get("chat-c1")
        row["c1_p50_ms"] = _get(c1, t, "latency_ms", "p50")
        row["c1_p99_ms"] = _get(c1, t, "latency_ms", "p99")
        row["c1_added_p50_ms"] = added(c1, t, "latency_ms", "p50")
        row["c1_added_p99_ms"] = added(c1, t, "latency_ms", "p99")
        for c in (16, 64):
            s = by.get(f"chat-c{c}")
            row[f"c{c}_rps"] = _get(s, t, "rps")
            for key in ("cpu_s_per_1000_requests", "requests_per_cpu_s"):
                row[f"c{c}_{key}"] = figure(s, t, False, key)
        for s in scenarios:
            if not s["stream"] or t not in s["results"] or "failed" in s["results"][t]:
                continue
            c = s["concurrency"]
            figures = per_target(s["results"][t], True)
            row[f"stream_c{c}_ttft_p50_ms"] = _get(s, t, "ttft_ms", "p50")
            row[f"stream_c{c}_ttft_p99_ms"] = _get(s, t, "ttft_ms", "p99")
            row[f"stream_c{c}_chunks_per_s"] = figures["chunks_per_s"]
            row[f"stream_c{c}_cpu_s_per_1000_chunks"] = figures["cpu_s_per_1000_chunks"]
            row[f"stream_c{c}_cpu_us_per_chunk"] = figures["cpu_us_per_chunk"]
        rows.append(row)
    return rows
