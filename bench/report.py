"""The benchmark's report: the tables it prints, the gateway/FastChat and gateway/direct ratios, the servers' CPU
per 1,000 relayed chunks and per 1,000 requests, and the issues' targets (pass or fail)."""
from __future__ import annotations

HEADLINE = "fastchat-code"  # the worker kind the targets are judged on (bench/stack.py KINDS)
SERVERS = {"gateway": "gateway", "fastchat": "fastchat_server"}  # target -> its CPU group

# Issue 15's targets, judged on the FastChat-code workers' figures.
T15_STREAM_C16_VS_DIRECT = 0.9       # x direct stream throughput at c=16
T15_TTFT_C16_DELTA_MS = 5.0          # gateway TTFT p50 - direct TTFT p50 at c=16
T15_STREAM_C64_VS_DIRECT = 0.8       # x direct stream throughput at c=64
T15_NONSTREAM_VS_FASTCHAT = 4.0      # x FastChat's throughput, non-stream, c=16
T15_CPU_US_PER_CHUNK = 20.0          # gateway CPU per relayed content chunk
T15_CPU_MS_PER_REQUEST = 0.5         # gateway CPU per non-streamed request
T15_HELD_STREAMS = 2000

# Issue 6's targets (kept for continuity, judged on the simulated workers' figures).
TARGET_NONSTREAM_VS_FASTCHAT = 3.0   # x FastChat's throughput, non-stream, c=16
TARGET_TTFT_DELTA_MS = 5.0           # gateway TTFT p50 - direct TTFT p50
TARGET_STREAM_VS_DIRECT = 0.8        # x the direct workers' stream throughput
TARGET_ADDED_LATENCY_MS = 1.5        # gateway p50 - direct p50, non-stream, c=1
TARGET_HELD_STREAMS = 1000
TARGET_RSS_MB = 100.0                # per gateway process


def log(msg: str) -> None:
    print(msg, flush=True)


def write_results(result: dict, out_dir, stem: str, chart_module: str) -> None:
    """result as out_dir/stem.json, and its chart as stem.png by bench.<chart_module>.make_chart when matplotlib
    (the bench extra) is there."""
    import importlib
    import json

    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"\nwrote {json_path}")
    try:
        chart = importlib.import_module(f"bench.{chart_module}")
        png = out_dir / f"{stem}.png"
        chart.make_chart(result, png)
        log(f"wrote {png}")
    except ImportError as exc:
        log(f"no chart: {exc} (pip install -e '.[bench]')")


def fmt_ms(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}")


HEADER = (f"{'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'TTFT50':>7} {'TTFT99':>7} {'errors':>6} "
          f"{'n':>5} | cpu s: {'server':>6} {'ctrl':>5} {'workers':>7} {'loadgen':>7} {'other':>6} | "
          f"{'server CPU':>14}")


def cpu_per_1000(cpu_s: float | None, count: int | None) -> float | None:
    """CPU seconds per 1,000 of ``count`` things (requests, chunks); None when nothing was counted."""
    if cpu_s is None or not count:
        return None
    return round(cpu_s * 1000.0 / count, 4)


def server_cpu(name: str, cpu: dict, ok: int, chunks: int | None, stream: bool, tokens: int | None = None) -> dict:
    """The server's CPU per 1,000 requests (every measurement) and, for streams, per 1,000 relayed content
    chunks: all of the server's CPU during the measurement, divided by what it served (the per-stream work,
    request parsing and the worker lookup, is inside the per-chunk figure too). A server that relays several
    worker frames as one chunk (the gateway does when it falls behind) sends fewer chunks than the worker made
    tokens, so per 1,000 tokens (the worker's frames: ok streams x `tokens`) is given too. Empty for the
    direct target."""
    group = SERVERS.get(name)
    if group is None:
        return {}
    out = {"server_cpu_s_per_1000_requests": cpu_per_1000(cpu.get(group), ok)}
    if stream:
        out["server_cpu_s_per_1000_chunks"] = cpu_per_1000(cpu.get(group), chunks)
        if tokens:
            out["server_cpu_s_per_1000_tokens"] = cpu_per_1000(cpu.get(group), ok * tokens)
    return out


def fmt_server_cpu(r: dict, stream: bool) -> str:
    """CPU per chunk in µs (streams) or per request in ms: s per 1,000 -> ms per one, x1000 -> µs per one."""
    if stream:
        v = r.get("server_cpu_s_per_1000_chunks")
        return "-" if v is None else f"{v * 1000:.1f} µs/chunk"
    v = r.get("server_cpu_s_per_1000_requests")
    return "-" if v is None else f"{v:.3f} ms/req"


def format_row(name: str, r: dict, stream: bool) -> str:
    if "failed" in r:
        return f"{name:<9} FAILED: {r['failed']}"
    cpu = r["cpu_s"]
    server = cpu.get(SERVERS[name]) if name in SERVERS else None
    ttft = r.get("ttft_ms") or {}
    row = (f"{name:<9} {r['rps']:>8.1f} {fmt_ms(r['latency_ms']['p50']):>8} {fmt_ms(r['latency_ms']['p99']):>8} "
           f"{fmt_ms(ttft.get('p50')):>7} {fmt_ms(ttft.get('p99')):>7} {r['errors']:>6} {r['requests']:>5} | "
           f"{'':>6} {'-' if server is None else f'{server:.2f}':>6} {cpu['controller']:>5.2f} {cpu['workers']:>7.2f} "
           f"{cpu['loadgen']:>7.2f} {cpu['other']:>6.2f} | {fmt_server_cpu(r, stream):>14}")
    if r["errors"]:
        row += f"\n{'':<9} errors: {r['error_kinds']}"
    return row


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def _get(scenario: dict, target: str, *keys):
    value = scenario["results"].get(target)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def scenario_ratios(s: dict) -> dict:
    out = {}
    for other in ("fastchat", "direct"):
        out[f"gateway_{other}_rps_ratio"] = ratio(_get(s, "gateway", "rps"), _get(s, other, "rps"))
        gp50, op50 = _get(s, "gateway", "latency_ms", "p50"), _get(s, other, "latency_ms", "p50")
        out[f"gateway_{other}_p50_ratio"] = ratio(gp50, op50)
        out[f"gateway_minus_{other}_p50_ms"] = None if gp50 is None or op50 is None else gp50 - op50
        if s["stream"]:
            gt, ot = _get(s, "gateway", "ttft_ms", "p50"), _get(s, other, "ttft_ms", "p50")
            out[f"gateway_minus_{other}_ttft_p50_ms"] = None if gt is None or ot is None else gt - ot
    return {k: (None if v is None else round(v, 3)) for k, v in out.items()}


def format_ratios(s: dict) -> str:
    r = scenario_ratios(s)
    s["ratios"] = r

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    def d(v):
        return "-" if v is None else f"{v:+.2f} ms"

    text = (f"  gateway/fastchat: throughput {x(r['gateway_fastchat_rps_ratio'])}, p50 latency "
            f"{x(r['gateway_fastchat_p50_ratio'])} | gateway/direct: throughput {x(r['gateway_direct_rps_ratio'])}, "
            f"p50 latency {x(r['gateway_direct_p50_ratio'])} ({d(r['gateway_minus_direct_p50_ms'])})")
    if s["stream"]:
        text += (f"\n  TTFT p50: gateway - direct {d(r['gateway_minus_direct_ttft_p50_ms'])}, gateway - fastchat "
                 f"{d(r['gateway_minus_fastchat_ttft_p50_ms'])}")
    return text


def evaluate(scenarios: list[dict], hold: dict | None, memory: dict) -> list[dict]:
    by = {s["name"]: s for s in scenarios}
    checks = []

    def add(name, value, limit, passed, unit="", detail=""):
        # pass is None when this run did not measure what the target needs (--targets, --hold-ramp none).
        checks.append({"target": name, "measured": None if value is None else round(value, 3), "limit": limit,
                       "unit": unit, "pass": bool(passed) if value is not None else None, "detail": detail})

    s = by.get("chat-c16")
    v = s and ratio(_get(s, "gateway", "rps"), _get(s, "fastchat", "rps"))
    add("non-stream throughput at c=16, gateway / FastChat", v, f">= {TARGET_NONSTREAM_VS_FASTCHAT}",
        v is not None and v >= TARGET_NONSTREAM_VS_FASTCHAT, "x")
    for c in (1, 16, 64):
        s = by.get(f"stream-c{c}")
        if not s:
            continue
        g, d = _get(s, "gateway", "ttft_ms", "p50"), _get(s, "direct", "ttft_ms", "p50")
        v = None if g is None or d is None else g - d
        add(f"stream TTFT p50 at c={c}, gateway - direct", v, f"<= {TARGET_TTFT_DELTA_MS} ms",
            v is not None and v <= TARGET_TTFT_DELTA_MS, "ms", f"gateway {fmt_ms(g)} ms, direct {fmt_ms(d)} ms")
    for c in (1, 16, 64):
        s = by.get(f"stream-c{c}")
        if not s:
            continue
        v = ratio(_get(s, "gateway", "rps"), _get(s, "direct", "rps"))
        add(f"stream throughput at c={c}, gateway / direct", v, f">= {TARGET_STREAM_VS_DIRECT}",
            v is not None and v >= TARGET_STREAM_VS_DIRECT, "x")
    s = by.get("chat-c1")
    if s:
        g, d = _get(s, "gateway", "latency_ms", "p50"), _get(s, "direct", "latency_ms", "p50")
        v = None if g is None or d is None else g - d
        add("added latency at c=1 (non-stream p50, gateway - direct)", v, f"<= {TARGET_ADDED_LATENCY_MS} ms",
            v is not None and v <= TARGET_ADDED_LATENCY_MS, "ms", f"gateway {fmt_ms(g)} ms, direct {fmt_ms(d)} ms")
    if hold is not None:
        v = hold["max_held_zero_errors"]
        add("concurrent open streams held with zero errors", v, f">= {TARGET_HELD_STREAMS}",
            v >= TARGET_HELD_STREAMS, "streams",
            f"ramp {hold['ramp']} stopped at {hold['steps'][-1]['streams'] if hold['steps'] else '-'}")
    rows = memory.get("gateway", [])
    if rows:
        v = max(r["hwm_mb"] for r in rows)
        add("gateway peak RSS per process (VmHWM)", v, f"< {TARGET_RSS_MB:g} MB", v < TARGET_RSS_MB, "MB",
            ", ".join(f"{r['role']} {r['hwm_mb']:.0f}" for r in rows))
    return checks


def _check(name, value, limit, passed, unit="", detail="") -> dict:
    # pass is None when this run did not measure what the target needs (--targets, --hold-ramp none).
    return {"target": name, "measured": None if value is None else round(value, 3), "limit": limit, "unit": unit,
            "pass": bool(passed) if value is not None else None, "detail": detail}


def evaluate_issue15(scenarios: list[dict], hold: dict | None) -> list[dict]:
    """Issue 15's targets on one worker kind's scenarios (the FastChat-code workers') and its held streams."""
    by = {s["name"]: s for s in scenarios}
    checks = []
    for c, limit in ((16, T15_STREAM_C16_VS_DIRECT), (64, T15_STREAM_C64_VS_DIRECT)):
        s = by.get(f"stream-c{c}")
        v = s and ratio(_get(s, "gateway", "rps"), _get(s, "direct", "rps"))
        checks.append(_check(f"stream throughput at c={c}, gateway / direct", v, f">= {limit}",
                             v is not None and v >= limit, "x"))
        if c == 16:
            g, d = (_get(s, "gateway", "ttft_ms", "p50"), _get(s, "direct", "ttft_ms", "p50")) if s else (None, None)
            v = None if g is None or d is None else g - d
            checks.append(_check("stream TTFT p50 at c=16, gateway - direct", v, f"<= {T15_TTFT_C16_DELTA_MS} ms",
                                 v is not None and v <= T15_TTFT_C16_DELTA_MS, "ms",
                                 f"gateway {fmt_ms(g)} ms, direct {fmt_ms(d)} ms"))
    s = by.get("chat-c16")
    v = s and ratio(_get(s, "gateway", "rps"), _get(s, "fastchat", "rps"))
    checks.append(_check("non-stream throughput at c=16, gateway / FastChat", v, f">= {T15_NONSTREAM_VS_FASTCHAT}",
                         v is not None and v >= T15_NONSTREAM_VS_FASTCHAT, "x"))
    for c in (16, 64):
        s = by.get(f"stream-c{c}")
        per_1000 = s and _get(s, "gateway", "server_cpu_s_per_1000_chunks")
        v = None if per_1000 is None else per_1000 * 1000  # s per 1,000 chunks -> µs per chunk
        fc = s and _get(s, "fastchat", "server_cpu_s_per_1000_chunks")
        checks.append(_check(f"gateway CPU per relayed chunk, streams at c={c}", v, f"<= {T15_CPU_US_PER_CHUNK:g} µs",
                             v is not None and v <= T15_CPU_US_PER_CHUNK, "µs",
                             f"FastChat server {fc * 1000:.1f} µs" if fc is not None else ""))
    for c in (16, 64):
        s = by.get(f"chat-c{c}")
        v = s and _get(s, "gateway", "server_cpu_s_per_1000_requests")  # s per 1,000 = ms per request
        fc = s and _get(s, "fastchat", "server_cpu_s_per_1000_requests")
        checks.append(_check(f"gateway CPU per non-streamed request at c={c}", v,
                             f"<= {T15_CPU_MS_PER_REQUEST:g} ms", v is not None and v <= T15_CPU_MS_PER_REQUEST, "ms",
                             f"FastChat server {fc:.2f} ms" if fc is not None else ""))
    v = None if hold is None else hold["max_held_zero_errors"]
    checks.append(_check("concurrent open streams held with zero errors", v, f">= {T15_HELD_STREAMS}",
                         v is not None and v >= T15_HELD_STREAMS, "streams",
                         f"{hold.get('workers', '?')} workers; ramp {hold['ramp']} stopped at "
                         f"{hold['steps'][-1]['streams'] if hold['steps'] else '-'}" if hold else ""))
    return checks


def format_check(c: dict) -> str:
    status = "n/a " if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
    return (f"  [{status}] {c['target']}: {c['measured']} {c['unit']} (target {c['limit']})"
            f"{'; ' + c['detail'] if c['detail'] else ''}")


def format_cpu_table(scenarios: list[dict]) -> list[str]:
    """Server CPU seconds per 1,000 streamed content chunks / per 1,000 non-streamed requests, per kind."""
    lines = [f"  {'workers':<14} {'scenario':<11} {'gateway':>22} {'FastChat server':>22} {'chunks/stream g/f':>18} "
             f"{'gateway per token':>18}"]
    for s in scenarios:
        key = "server_cpu_s_per_1000_chunks" if s["stream"] else "server_cpu_s_per_1000_requests"
        unit = "s/1k chunks" if s["stream"] else "s/1k req"
        cells = []
        for target in ("gateway", "fastchat"):
            v = _get(s, target, key)
            cells.append("-" if v is None else f"{v:.4f} {unit}")
        per_stream = "/".join("-" if _get(s, t, "content_chunks_per_stream") is None
                              else f"{_get(s, t, 'content_chunks_per_stream'):g}" for t in ("gateway", "fastchat"))
        per_token = _get(s, "gateway", "server_cpu_s_per_1000_tokens") if s["stream"] else None
        lines.append(f"  {s.get('workers', '?'):<14} {s['name']:<11} {cells[0]:>22} {cells[1]:>22} "
                     f"{per_stream if s['stream'] else '':>18} "
                     f"{'' if per_token is None else f'{per_token * 1000:.1f} µs':>18}")
    return lines


def print_summary(result: dict) -> None:
    log("\n== results (requests/s; latency and TTFT in ms; CPU seconds during each measurement)")
    for s in result["scenarios"]:
        kind = "stream" if s["stream"] else "chat  "
        log(f"\n[{s.get('workers', '?')} workers] {kind} c={s['concurrency']:<3} " + HEADER)
        for name, r in s["results"].items():
            log(f"{'':>11} " + format_row(name, r, s["stream"]).replace("\n", "\n" + " " * 12))
    log("\n== memory at the end of the run (MB: current RSS / peak VmHWM)")
    for group, rows in result["memory"].items():
        if not rows:
            continue
        log(f"  {group:<24} " + ", ".join(f"{r['role']} {r['pid']}: {r['rss_mb']:.0f} / {r['hwm_mb']:.0f}"
                                          for r in rows))
    log("\n== ratios")
    for s in result["scenarios"]:
        log(f"  {s.get('workers', '?'):<14} {s['name']:<10} {format_ratios(s).strip()}".replace("\n", "\n" + " " * 28))
    log("\n== server CPU (user+system, psutil; gateway = gunicorn master + workers) per 1,000 relayed content chunks "
        "(streams) or 1,000 requests (non-streamed); s per 1,000 = ms per one")
    for line in format_cpu_table(result["scenarios"]):
        log(line)
    other = sum(r["cpu_s"]["other"] for s in result["scenarios"] for r in s["results"].values() if "cpu_s" in r)
    capacity = sum(r["cpu_s"]["machine_capacity"] for s in result["scenarios"] for r in s["results"].values()
                   if "cpu_s" in r)
    result["meta"]["other_cpu_share"] = round(other / capacity, 3) if capacity else None
    log(f"\n== noise: processes that are not part of this benchmark used {other:.1f} CPU s during the measurements "
        f"({100 * other / max(capacity, 1e-9):.0f}% of the machine); load average {result['meta']['loadavg']}")
    quick = " (quick run: short bounds, indicative only)" if result["meta"]["profile"] == "quick" else ""
    log(f"\n== targets of issue 15, on the {result['meta'].get('headline_workers', HEADLINE)} workers' figures{quick}")
    for c in result["targets"]:
        log(format_check(c))
    if result.get("targets_issue6"):
        log(f"\n== earlier targets (issue 6), on the simulated workers' figures{quick}")
        for c in result["targets_issue6"]:
            log(format_check(c))
