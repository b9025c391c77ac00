"""The benchmark's chart: throughput and latency by concurrency, direct / FastChat / gateway side by side, one
block of two rows per worker kind (the headline first).

    python -m bench.chart bench/results/benchmark.json bench/results/benchmark.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLORS = {"direct": "#9e9e9e", "fastchat": "#e8833a", "gateway": "#2a6fdb"}
LABELS = {"direct": "workers directly (limit)", "fastchat": "FastChat openai_api_server", "gateway": "fastchat-gateway"}
KIND_LABELS = {"fastchat-code": "FastChat-code workers", "simulated": "simulated workers"}


def _value(result: dict, *keys):
    for key in keys:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def _bars(ax, scenarios: list[dict], keys: tuple, title: str, ylabel: str, log: bool = False) -> None:
    concurrencies = [s["concurrency"] for s in scenarios]
    targets = [t for t in COLORS if any(t in s["results"] for s in scenarios)]
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        xs = [j + (i - (len(targets) - 1) / 2) * width for j in range(len(scenarios))]
        values = [_value(s["results"].get(target, {}), *keys) for s in scenarios]
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(xs, heights, width, color=COLORS[target], label=LABELS[target])
        for bar, v in zip(bars, values):
            text = "n/a" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(scenarios)), [f"c={c}" for c in concurrencies])
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelsize=8)


def make_chart(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    kinds = list(dict.fromkeys(s.get("workers", "simulated") for s in scenarios)) or ["simulated"]
    fig, axes = plt.subplots(2 * len(kinds), 3, figsize=(15, 8.5 * len(kinds)), squeeze=False)
    for k, kind in enumerate(kinds):
        of_kind = [s for s in scenarios if s.get("workers", "simulated") == kind]
        chat = [s for s in of_kind if not s["stream"]]
        stream = [s for s in of_kind if s["stream"]]
        row = axes[2 * k], axes[2 * k + 1]
        who = f"[{KIND_LABELS.get(kind, kind)}] "
        if chat:
            tokens = chat[0]["tokens"]
            _bars(row[0][0], chat, ("rps",), f"{who}non-streaming chat ({tokens} tokens): throughput", "requests/s",
                  log=True)
            _bars(row[0][1], chat, ("latency_ms", "p50"), f"{who}non-streaming: p50 latency", "ms", log=True)
            _bars(row[0][2], chat, ("latency_ms", "p99"), f"{who}non-streaming: p99 latency", "ms", log=True)
        if stream:
            s0 = stream[0]
            rate = f" at {s0['token_delay_s'] * 1000:g} ms/token" if s0.get("token_delay_s") else ""
            _bars(row[1][0], stream, ("rps",), f"{who}streaming chat ({s0['tokens']} tokens{rate}): throughput",
                  "streams/s")
            _bars(row[1][1], stream, ("latency_ms", "p50"), f"{who}streaming: p50 latency (whole stream)", "ms",
                  log=True)
            _bars(row[1][2], stream, ("ttft_ms", "p50"), f"{who}streaming: p50 time to first token", "ms", log=True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, fontsize=9)
    meta = result.get("meta", {})
    settings = meta.get("gateway_settings", {})
    hold = result.get("hold") or {}
    note = (f"{meta.get('date', '')}; {meta.get('versions', {}).get('cpus', '?')} CPUs shared by every process and "
            f"the load generator; gateway: gunicorn {settings.get('workers', '?')} x {settings.get('worker_class', '?')}"
            f" ({settings.get('threads', '?')} threads)")
    if meta.get("other_cpu_share") is not None:
        note += f"; other processes used {100 * meta['other_cpu_share']:.0f}% of the CPU meanwhile"
    if hold:
        note += f"; held {hold.get('max_held_zero_errors', 0)} concurrent streams with zero errors"
    fig.text(0.5, 0.005, note, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.02 / len(kinds), 1, 1 - 0.05 / len(kinds)))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    make_chart(json.loads(Path(argv[0]).read_text()), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
