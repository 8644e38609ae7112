"""benchmarks/results/scale.md from scale.json: a table per part (step | rrstore | peer | ratio | target | result)."""

from __future__ import annotations

from typing import Any

PART_ORDER = ("checkpoints", "files", "bigfile", "churn", "remote")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ratio(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.2f}×"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = ["# rrstore scaling benchmark", ""]
    if meta.get("quick"):
        lines += ["**`--quick` run: scaled-down sizes, the figures mean nothing.**", ""]
    argv = " ".join(meta.get("argv", []))
    lines += [f"`python benchmarks/scale.py{' ' + argv if argv else ''}`", "",
              f"- rrstore {meta['rrstore']['version']} ({meta['rrstore']['source']}), run as "
              f"`{meta['rrstore']['command']}`",
              f"- machine: {meta['machine'].get('summary', '?')}; load average at start "
              f"{', '.join(f'{x:.1f}' for x in meta.get('loadavg_start', []))}",
              f"- peers: {'; '.join(str(v).strip('* ') for v in meta.get('peers', {}).values()) or 'none'}",
              f"- time ratios compare **{'CPU' if meta.get('basis') == 'cpu' else 'wall'} time** (medians; the "
              "other figure in brackets); the 4 GB speed compares wall time; peak RSS is the maximum of the runs "
              "(GNU time's %M of the whole process tree)",
              ""]
    rows = [r for name in PART_ORDER if name in results["parts"] for r in results["parts"][name]["rows"]]
    checked = [r for r in rows if r["result"] in ("PASS", "MISS")]
    if checked:
        passed = sum(1 for r in checked if r["result"] == "PASS")
        lines += [f"**Targets: {passed} of {len(checked)} PASS.**", ""]
    for name in PART_ORDER:
        part = results["parts"].get(name)
        if part is None:
            continue
        lines += [f"## {name}: {part['title']}", "",
                  f"Measured {part.get('measured_at', '?')} in {part.get('duration_s', 0):.0f} s"
                  + (f" (1-minute load average at its end {part['loadavg_end'][0]:.1f} on "
                     f"{meta['machine'].get('usable_cpus', '?')} CPUs)" if part.get("loadavg_end") else "")
                  + ".", ""]
        if part["rows"]:
            lines += ["| step | rrstore | peer | ratio | target | PASS/MISS |", "| --- | --- | --- | --- | --- | --- |"]
            for r in part["rows"]:
                lines.append("| " + " | ".join(_cell(x) for x in (r["step"], r["rrstore"], r["peer"],
                                                                  _ratio(r["ratio"]), r["target"], r["result"]))
                             + " |")
            lines.append("")
        for note in part.get("notes", []):
            lines.append(f"- {note}")
        if part.get("notes"):
            lines.append("")
        imp = part.get("importtime")
        if imp:
            lines += [f"`{imp['command']}`: {imp['modules']} modules, {imp['total_us'] / 1000:.0f} ms in all "
                      "(the largest cumulative entry). Top entries by cumulative time:", "",
                      "| cumulative ms | self ms | module |", "| --- | --- | --- |"]
            for e in imp["top_cumulative"]:
                lines.append(f"| {e['cumulative_us'] / 1000:.1f} | {e['self_us'] / 1000:.1f} | `{e['module']}` |")
            lines += ["", "Top entries by self time: " + ", ".join(
                f"`{e['module']}` {e['self_us'] / 1000:.1f} ms" for e in imp["top_self"]), ""]
    notes = meta.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
