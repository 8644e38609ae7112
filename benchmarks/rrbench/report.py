"""Medians, ratios, the issue-3 targets and the markdown report."""

from __future__ import annotations

import math
from typing import Any

from .bench import SCENARIO_TITLES, SCENARIOS
from .measure import median

Results = dict[str, Any]

# (tree, rrstore scenario, metric, peer, peer scenario, limit, text)
TARGETS = [
    ("stdlib", "cold", "wall_s", "git", "cold", 0.35, "cold checkpoint ≤ 0.35× `git add -A && git commit`"),
    ("stdlib", "unchanged", "wall_s", "git", "status", 3.0, "unchanged re-checkpoint ≤ 3× `git status`"),
    ("stdlib", "churn", "wall_s", "git", "churn", 1.5, "1% churn checkpoint ≤ 1.5× `git add -A && git commit`"),
    ("stdlib", "restore_full", "wall_s", "git", "restore_full", 0.5,
     "full restore into a wiped tree ≤ 0.5× `git checkout -f`"),
    ("stdlib", "cold", "store_disk", "git", "cold", 0.75, "store size after cold ≤ 0.75× git's loose objects"),
    ("history", "history", "store_disk", "borg", "history", 1.0, "history: store size after all commits ≤ borg"),
    ("history", "history", "store_disk", "restic", "history", 1.0, "history: store size after all commits ≤ restic"),
    ("sitepackages", "cold", "wall_s", "restic", "cold", 1.0, "site-packages: cold checkpoint ≤ restic"),
    ("sitepackages", "restore_full", "wall_s", "restic", "restore_full", 0.5,
     "site-packages: full restore ≤ 0.5× restic"),
]

METRICS = ("wall_s", "cpu_s", "user_s", "sys_s", "max_rss_kib", "store_disk", "store_apparent", "store_files",
           "cache_disk", "export_bytes", "cold_wall_s", "incremental_wall_s", "incremental_cpu_s",
           "incremental_median_wall_s", "total_wall_s", "total_cpu_s", "after_gc_store_disk", "gc_wall_s",
           "other_cpu_s")


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every metric over the successful runs, plus success counts."""
    ok = [r for r in records if r.get("ok")]
    out: dict[str, Any] = {"runs": len(records), "ok_runs": len(ok)}
    for key in METRICS:
        values = [r[key] for r in ok if isinstance(r.get(key), int | float)]
        if values:
            out[key] = median(values)
    verified = [r.get("verified") for r in ok if "verified" in r]
    if verified:
        out["verified"] = all(verified)
    errors = [r.get("error") for r in records if not r.get("ok") and r.get("error")]
    if errors:
        out["error"] = errors[0]
    return out


def add_medians(results: Results) -> None:
    for case in results["trees"].values():
        case["median"] = {tool: {sc: summarize(recs) for sc, recs in scen.items()}
                          for tool, scen in case["runs"].items()}


def value(results: Results, tree: str, tool: str, scenario: str, metric: str) -> float | None:
    case = results["trees"].get(tree)
    if not case:
        return None
    rec = case.get("median", {}).get(tool, {}).get(scenario)
    if not rec or rec.get("ok_runs", 0) == 0 or rec.get("ok_runs") != rec.get("runs"):
        return None
    v = rec.get(metric)
    return float(v) if isinstance(v, int | float) and not math.isnan(v) else None


def evaluate_targets(results: Results) -> list[dict[str, Any]]:
    rows = []
    for tree, sc, metric, peer, peer_sc, limit, text in TARGETS:
        if tree not in results["trees"]:
            continue
        mine = value(results, tree, "rrstore", sc, metric)
        theirs = value(results, tree, peer, peer_sc, metric)
        row: dict[str, Any] = {"tree": tree, "target": text, "metric": metric, "peer": peer, "limit": limit,
                               "rrstore": mine, "peer_value": theirs}
        if mine is None or theirs is None or theirs == 0:
            row["ratio"] = None
            row["result"] = "n/a"
        else:
            row["ratio"] = mine / theirs
            row["result"] = "PASS" if mine <= limit * theirs else "FAIL"
        rows.append(row)
    return rows


# --- formatting -------------------------------------------------------------------

def fmt_s(v: float | None) -> str:
    if v is None:
        return "–"
    if v < 0.1:
        return f"{v * 1000:.0f} ms"
    if v < 10:
        return f"{v:.2f} s"
    return f"{v:.1f} s"


def fmt_mb(v: float | None) -> str:
    if v is None:
        return "–"
    mb = v / 1e6
    if mb < 1:
        return f"{mb:.3f} MB"
    if mb < 100:
        return f"{mb:.1f} MB"
    return f"{mb:.0f} MB"


def fmt_metric(metric: str, v: float | None) -> str:
    return fmt_mb(v) if metric.startswith(("store", "export", "after_gc")) else fmt_s(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                          range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _cell(rec: dict[str, Any] | None, metric: str, with_cpu: bool = False) -> str:
    if not rec:
        return "n/a"
    if rec.get("ok_runs", 0) == 0:
        return "**failed**"
    v = rec.get(metric)
    text = fmt_metric(metric, v) if isinstance(v, int | float) else "–"
    if with_cpu and isinstance(rec.get("cpu_s"), int | float):
        text += f" ({fmt_s(rec['cpu_s'])})"
    if rec.get("verified") is False:
        text += " ⚠ wrong tree"
    if rec.get("ok_runs") != rec.get("runs"):
        text += f" ({rec['runs'] - rec['ok_runs']} failed)"
    return text


def case_tables(name: str, case: dict[str, Any]) -> list[str]:
    med = case["median"]
    tools = [t for t in case["tool_order"] if t in med]
    scen = [s for s in SCENARIOS if s in case["scenarios"] and any(s in med[t] for t in tools)]
    lines = [f"### {case['title']}", "", case.get("description", ""), ""]
    header = ["tool", *[SCENARIO_TITLES[s] for s in scen]]
    once = " (export and gc: first run only)" if case["runs_done"] > 1 and ("gc" in scen or "export" in scen) else ""
    lines.append(f"Wall time, median of {case['runs_done']} run(s){once}; CPU time (user+sys, the command and "
                 "its children) in parentheses:")
    lines.append("")
    lines += _table(header, [[t, *[_cell(med[t].get(s), "wall_s", True) for s in scen]] for t in tools])
    load = [r["other_cpu_s"] / r["wall_s"] for scen_recs in case["runs"].values() for recs in scen_recs.values()
            for r in recs if r.get("ok") and r.get("wall_s", 0) > 0.5 and "other_cpu_s" in r]
    if load:
        lines.append("")
        lines.append(f"CPU used outside the timed command (other processes, kernel writeback) per second of wall "
                     f"time, over the steps longer than 0.5 s: median {median(load):.2f} cores, "
                     f"max {max(load):.2f} (of {case.get('cpus', '?')}).")
    ratio_rows = []
    for peer in ("git", "restic", "borg"):
        if peer not in med or "rrstore" not in med:
            continue
        row = [f"rrstore ÷ {peer}"]
        for s in scen:
            peer_s = "status" if (peer == "git" and s == "unchanged") else s
            a = value({"trees": {name: case}}, name, "rrstore", s, "wall_s")
            b = value({"trees": {name: case}}, name, peer, peer_s, "wall_s")
            row.append(f"{a / b:.2f}×" if a is not None and b else "–")
        ratio_rows.append(row)
    if ratio_rows:
        lines.append("")
        note = " (rrstore's unchanged re-checkpoint is set against `git status`)" if "git" in med else ""
        lines.append(f"Ratios of the medians{note}:")
        lines.append("")
        lines += _table(["ratio", *[SCENARIO_TITLES[s] for s in scen]], ratio_rows)
    lines.append("")
    lines.append("Peak RSS of the command (MB, median):")
    lines.append("")
    lines += _table(header, [[t, *[(f"{med[t][s]['max_rss_kib'] / 1024:.0f}" if med[t].get(s, {}).get(
        "max_rss_kib") else "n/a") for s in scen]] for t in tools])
    size_scen = [s for s in scen if s not in ("status", "export")]
    lines.append("")
    lines.append("Store size on disk after each step (allocated blocks; caches such as git's index, rrstore's "
                 "stat cache, restic's and borg's caches not included):")
    lines.append("")
    extra = ["export file"] if "export" in scen else []
    rows = []
    for t in tools:
        row = [t, *[_cell(med[t].get(s), "store_disk") for s in size_scen]]
        if extra:
            row.append(_cell(med[t].get("export"), "export_bytes"))
        rows.append(row)
    lines += _table(["tool", *[SCENARIO_TITLES[s] for s in size_scen], *extra], rows)
    lines.append("")
    return lines


def history_table(case: dict[str, Any]) -> list[str]:
    med = case["median"]
    tools = [t for t in case["tool_order"] if t in med]
    n = case.get("commits", 0)
    lines = [f"### {case['title']}", "", case.get("description", ""), "",
             f"Median of {case['runs_done']} run(s):", ""]
    header = ["tool", "first checkpoint", f"next {max(n - 1, 0)} checkpoints (sum)", "per checkpoint (median)",
              "CPU, all (sum)", "peak RSS", f"store after {n} commits", "store after `git gc`"]
    rows = []
    for t in tools:
        rec = med[t].get("history")
        if not rec or rec.get("ok_runs", 0) == 0:
            rows.append([t, "**failed**", "", "", "", "", "", ""])
            continue
        rows.append([t, fmt_s(rec.get("cold_wall_s")), fmt_s(rec.get("incremental_wall_s")),
                     fmt_s(rec.get("incremental_median_wall_s")), fmt_s(rec.get("total_cpu_s")),
                     f"{rec.get('max_rss_kib', 0) / 1024:.0f} MB", fmt_mb(rec.get("store_disk")),
                     fmt_mb(rec.get("after_gc_store_disk")) if "after_gc_store_disk" in rec else "–"])
    lines += _table(header, rows)
    lines.append("")
    return lines


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    out_rows = []
    for r in rows:
        fmt = fmt_mb if r["metric"].startswith("store") else fmt_s
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "–"
        out_rows.append([r["target"], f"{fmt(r['rrstore'])} vs {r['peer']} {fmt(r['peer_value'])}", ratio,
                         f"≤ {r['limit']:g}×", f"**{r['result']}**"])
    return _table(["issue-3 target", "rrstore vs peer (medians)", "ratio", "limit", "result"], out_rows)


def markdown(results: Results) -> str:
    meta = results["meta"]
    lines = ["# rrstore benchmark results", ""]
    if meta.get("quick"):
        lines += ["**Quick mode**: scaled-down trees, a smoke test. The figures mean nothing.", ""]
    load = ""
    if meta.get("loadavg_start"):
        load = (f" Load average {meta['loadavg_start'][0]:.1f} at the start, "
                f"{meta.get('loadavg_end', [float('nan')])[0]:.1f} at the end.")
    lines += [f"Run {meta['started']} on {meta['machine']['summary']}; {meta['runs']} run(s) per figure, "
              f"{meta['duration_s'] / 60:.1f} minutes in all. Warm page cache (caches cannot be dropped "
              f"here): every tree was read just before each tool's sequence.{load}", "",
              f"rrstore {meta['rrstore']['version']} (source {meta['rrstore'].get('source', '?')}), run as "
              f"`{meta['rrstore']['command']}`.", ""]
    lines.append("Peers: " + "; ".join(f"{k}: {v}" for k, v in meta["peers"].items()) + ".")
    lines.append("")
    if results.get("targets"):
        lines += ["## Targets (issue 3)", ""]
        lines += targets_table(results["targets"])
        lines.append("")
    lines += ["## Figures", ""]
    for name, case in results["trees"].items():
        if case.get("kind") == "history":
            lines += history_table(case)
        else:
            lines += case_tables(name, case)
    if meta.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    return "\n".join(lines)
