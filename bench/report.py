"""The benchmark's report: the tables it prints, the gateway/FastChat and gateway/direct ratios, and the issue's
targets (pass or fail)."""
from __future__ import annotations

# The targets.
TARGET_NONSTREAM_VS_FASTCHAT = 3.0   # x FastChat's throughput, non-stream, c=16
TARGET_TTFT_DELTA_MS = 5.0           # gateway TTFT p50 - direct TTFT p50
TARGET_STREAM_VS_DIRECT = 0.8        # x the direct workers' stream throughput
TARGET_ADDED_LATENCY_MS = 1.5        # gateway p50 - direct p50, non-stream, c=1
TARGET_HELD_STREAMS = 1000
TARGET_RSS_MB = 100.0                # per gateway process


def log(msg: str) -> None:
    print(msg, flush=True)


def fmt_ms(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}")


HEADER = (f"{'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'TTFT50':>7} {'TTFT99':>7} {'errors':>6} "
          f"{'n':>5} | cpu s: {'server':>6} {'ctrl':>5} {'workers':>7} {'loadgen':>7} {'other':>6} | {'srv ms/req':>10}")


def format_row(name: str, r: dict, stream: bool) -> str:
    if "failed" in r:
        return f"{name:<9} FAILED: {r['failed']}"
    cpu = r["cpu_s"]
    server = {"gateway": cpu["gateway"], "fastchat": cpu["fastchat_server"]}.get(name)
    ttft = r.get("ttft_ms") or {}
    row = (f"{name:<9} {r['rps']:>8.1f} {fmt_ms(r['latency_ms']['p50']):>8} {fmt_ms(r['latency_ms']['p99']):>8} "
           f"{fmt_ms(ttft.get('p50')):>7} {fmt_ms(ttft.get('p99')):>7} {r['errors']:>6} {r['requests']:>5} | "
           f"{'':>6} {'-' if server is None else f'{server:.2f}':>6} {cpu['controller']:>5.2f} {cpu['workers']:>7.2f} "
           f"{cpu['loadgen']:>7.2f} {cpu['other']:>6.2f} | {fmt_ms(r['server_cpu_ms_per_request']):>10}")
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


def print_summary(result: dict) -> None:
    log("\n== results (requests/s; latency and TTFT in ms; CPU seconds during each measurement)")
    for s in result["scenarios"]:
        kind = "stream" if s["stream"] else "chat  "
        log(f"\n{kind} c={s['concurrency']:<3} " + HEADER)
        for name, r in s["results"].items():
            log(f"{'':>11} " + format_row(name, r, s["stream"]).replace("\n", "\n" + " " * 12))
    log("\n== memory at the end of the run (MB: current RSS / peak VmHWM)")
    for group, rows in result["memory"].items():
        if not rows:
            continue
        log(f"  {group:<16} " + ", ".join(f"{r['role']} {r['pid']}: {r['rss_mb']:.0f} / {r['hwm_mb']:.0f}"
                                          for r in rows))
    log("\n== ratios")
    for s in result["scenarios"]:
        log(f"  {s['name']:<10} {format_ratios(s).strip()}".replace("\n", "\n" + " " * 13))
    other = sum(r["cpu_s"]["other"] for s in result["scenarios"] for r in s["results"].values() if "cpu_s" in r)
    capacity = sum(r["cpu_s"]["machine_capacity"] for s in result["scenarios"] for r in s["results"].values()
                   if "cpu_s" in r)
    result["meta"]["other_cpu_share"] = round(other / capacity, 3) if capacity else None
    log(f"\n== noise: processes that are not part of this benchmark used {other:.1f} CPU s during the measurements "
        f"({100 * other / max(capacity, 1e-9):.0f}% of the machine); load average {result['meta']['loadavg']}")
    quick = " (quick run: short bounds, indicative only)" if result["meta"]["profile"] == "quick" else ""
    log(f"\n== targets (issue 6){quick}")
    for c in result["targets"]:
        status = "n/a " if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
        log(f"  [{status}] {c['target']}: {c['measured']} {c['unit']} "
            f"(target {c['limit']}){'; ' + c['detail'] if c['detail'] else ''}")
