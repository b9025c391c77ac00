"""The LiteLLM comparison's chart: the upstream directly, LiteLLM's proxy and the gateway side by side.

    python -m bench.litellm_chart bench/results/litellm_compare.json bench/results/litellm_compare.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.litellm_report import LABELS, TARGETS

COLORS = {"direct": "#9e9e9e", "litellm": "#8e44ad", "gateway": "#2a6fdb"}


def _panel(ax, groups: list[str], rows: list[dict], keys: list[str], title: str, ylabel: str,
           targets: tuple[str, ...] = TARGETS) -> None:
    by = {r["target"]: r for r in rows}
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        xs = [j + (i - (len(targets) - 1) / 2) * width for j in range(len(keys))]
        values = [by.get(target, {}).get(k) for k in keys]
        bars = ax.bar(xs, [v or 0 for v in values], width, color=COLORS[target], label=LABELS[target])
        for bar, v in zip(bars, values):
            text = "n/a" if v is None else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(keys)), groups)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelsize=8)


def make_chart(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["headline"]
    streams = sorted({int(k.split("_")[1][1:]) for r in rows for k in r if k.startswith("stream_c")})
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    proxies = ("litellm", "gateway")
    _panel(axes[0][0], ["p50", "p99"], rows, ["c1_added_p50_ms", "c1_added_p99_ms"],
           "added latency at c=1, non-streamed (ms over direct)", "ms", proxies)
    _panel(axes[0][1], ["c=16", "c=64"], rows, ["c16_rps", "c64_rps"], "non-streamed requests/s", "req/s")
    _panel(axes[0][2], ["c=16", "c=64"], rows, ["c16_requests_per_cpu_s", "c64_requests_per_cpu_s"],
           "requests per CPU-second of the server", "req / CPU-s")
    labels = [f"c={c}" for c in streams]
    _panel(axes[1][0], labels, rows, [f"stream_c{c}_ttft_p50_ms" for c in streams], "streamed TTFT p50", "ms")
    _panel(axes[1][1], labels, rows, [f"stream_c{c}_chunks_per_s" for c in streams], "streamed chunks/s",
           "chunks/s")
    _panel(axes[1][2], labels, rows, [f"stream_c{c}_cpu_us_per_chunk" for c in streams],
           "server CPU per streamed chunk", "µs", proxies)
    axes[0][1].legend(fontsize=8)
    meta = result.get("meta", {})
    fig.suptitle(f"fastchat-gateway vs LiteLLM proxy, same upstream ({meta.get('date', '')}, "
                 f"{meta.get('versions', {}).get('cpus', '?')} CPUs, {meta.get('profile', '')} run)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    make_chart(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
