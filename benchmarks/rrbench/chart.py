"""The PNG chart: per tree, median wall time of each step and store size, one bar per tool.

Runs in-process when matplotlib is importable, else as
``python -m rrbench.chart results.json chart.png`` in the benchmark's venv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLORS = {"rrstore": "#d62728", "git": "#1f77b4", "restic": "#2ca02c", "borg": "#9467bd",
          "tar-zstd": "#ff7f0e", "cp-a": "#7f7f7f"}
TIME_SCENARIOS = ("cold", "unchanged", "status", "churn", "restore_full", "restore_churn", "export", "gc")
SHORT = {"cold": "cold", "unchanged": "unchanged", "status": "status", "churn": "1% churn",
         "restore_full": "restore\n(wiped)", "restore_churn": "restore\n(1% churn)", "export": "export", "gc": "gc"}


def _bars(ax: Any, groups: list[str], series: dict[str, list[float | None]], unit: str) -> None:
    """Grouped bars; a log scale only when the values span more than 20×, else linear from zero."""
    tools = list(series)
    width = 0.8 / max(len(tools), 1)
    values = [v for vs in series.values() for v in vs if v is not None and v > 0]
    log = bool(values) and max(values) / min(values) > 20
    few = len(values) <= 12
    for i, tool in enumerate(tools):
        xs, ys = [], []
        for g, v in enumerate(series[tool]):
            if v is not None and v > 0:
                xs.append(g + (i - (len(tools) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=tool, color=COLORS.get(tool))
        if few:
            ax.bar_label(bars, labels=[f"{y:.3g}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(f"{unit}{' (log)' if log else ''}")
    ax.grid(axis="y", alpha=0.3, which="both")


def render(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results["trees"].items())
    fig, axes = plt.subplots(len(cases), 2, figsize=(15, 3.6 * len(cases)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3]})
    for row, (_name, case) in enumerate(cases):
        med = case["median"]
        tools = [t for t in case["tool_order"] if t in med]
        ax_t, ax_s = axes[row]
        if case.get("kind") == "history":
            groups = ["first checkpoint", "next (sum)"]
            series = {t: [med[t].get("history", {}).get("cold_wall_s"),
                          med[t].get("history", {}).get("incremental_wall_s")] for t in tools}
            _bars(ax_t, groups, series, "seconds")
            sizes = {t: [med[t].get("history", {}).get("store_disk")] for t in tools}
            _bars(ax_s, ["store after all commits"], {t: [v / 1e6 if v else None for v in s]
                                                      for t, s in sizes.items()}, "MB on disk")
        else:
            scen = [s for s in TIME_SCENARIOS if s in case["scenarios"] and any(s in med[t] for t in tools)]
            series = {t: [med[t].get(s, {}).get("wall_s") if med[t].get(s, {}).get("ok_runs") else None
                          for s in scen] for t in tools}
            _bars(ax_t, [SHORT[s] for s in scen], series, "wall seconds")
            size_scen = [s for s in ("cold", "churn") if s in scen]
            sizes = {t: [(med[t].get(s, {}).get("store_disk") or 0) / 1e6 or None for s in size_scen]
                     for t in tools}
            _bars(ax_s, [f"store after\n{SHORT[s]}" for s in size_scen], sizes, "MB on disk")
        ax_t.set_title(f"{case['title']}: wall time, median of {case['runs_done']}", fontsize=10)
        ax_s.set_title("store size", fontsize=10)
        ax_t.legend(fontsize=7, ncol=3)
    quick = " (quick mode: not meaningful)" if results["meta"].get("quick") else ""
    fig.suptitle(f"rrstore vs peers{quick} — {results['meta']['machine']['summary']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    results = json.loads(Path(argv[0]).read_text())
    render(results, Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
