"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

Every text from a record (step names, commands, error messages, ids, paths)
comes from a store that may be shared or imported, so it is escaped where
it is written (``_e``), in text and in attributes alike. The page also
carries a Content-Security-Policy that allows no script and no fetch at all:
an escaping slip could show odd text, never run or load anything.

Each step is one ``<rect class="step-bar">`` with ``data-step``,
``data-status`` and ``data-checkpoint`` attributes and a ``<title>`` (the
tooltip and its text alternative); each chart also has a table of the same
figures beside it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from .model import DiffSection, Failure, Report, Run, Step, ratio
from .text import STATUS_MARKS, STATUS_WORDS, duration_text, printable, ratio_text, result_text, size_text, when_text

WIDTH = 960  # the SVGs' user units; they scale with the page
LABEL_W = 230  # the step names' column in a timeline
ROW_H = 24
PATHS_SHOWN = 200  # paths listed per kind of change in the diff section
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
:root { --pass: #2e7d32; --fail: #c62828; --open: #b26a00; --mark: #546e7a; --ink: #1b1f24; --dim: #5f6b76;
        --line: #d8dee4; --bg: #ffffff; --band: #f5f7f9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); margin: 0 auto; padding: 24px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; } h4 { font-size: 14px; margin: 12px 0 4px; }
.meta, .note { color: var(--dim); } code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px;
        background: var(--band); }
.card b { display: block; font-size: 18px; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, sans-serif; fill: var(--ink); } svg .axis { fill: var(--dim); }
svg .grid { stroke: var(--line); }
.step-bar.passed, .run-step.passed { fill: var(--pass); } .step-bar.failed, .run-step.failed { fill: var(--fail); }
.step-bar.unfinished, .run-step.unfinished { fill: var(--open); }
.step-bar.checkpoint, .run-step.checkpoint { fill: var(--mark); }
.logical { stroke: #1565c0; fill: none; stroke-width: 2; } .stored { stroke: #6a1b9a; fill: none; stroke-width: 2; }
.key-logical { fill: #1565c0; } .key-stored { fill: #6a1b9a; }
table { border-collapse: collapse; margin: 6px 0 10px; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; } td.num, th.num { text-align: right; }
.status-passed { color: var(--pass); } .status-failed { color: var(--fail); font-weight: 600; }
.status-unfinished { color: var(--open); } .status-checkpoint { color: var(--mark); }
.failure { border-left: 4px solid var(--fail); padding: 4px 12px; margin: 10px 0; background: #fdf3f3; }
.failure dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 4px 0; }
.failure dt { font-weight: 600; } .failure dd { margin: 0; overflow-wrap: anywhere; }
summary { cursor: pointer; margin: 6px 0; }
ul.paths { columns: 2; font: 12px ui-monospace, monospace; } ul.paths li { overflow-wrap: anywhere; }
"""


def _e(text: object) -> str:
    """``text`` safe in HTML text and in a quoted attribute, its control characters and lone
    surrogates written as escapes (``printable``: the page is always valid UTF-8)."""
    return html.escape(printable(text), quote=True)


def render_html(report: Report) -> str:
    """The whole page, as text (UTF-8 when written)."""
    body = [*_header(report), *_runs_html(report), *_growth_html(report), *_diff_html(report.diff)]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>rrstore report: {_e(report.project or report.store)}</title>", f"<style>{CSS}</style>", "</head>",
        "<body>", "<main>", *body, "</main>", "</body>", "</html>", ""])


def _header(report: Report) -> list[str]:
    runs = [run for runs in report.lanes.values() for run in runs]
    steps = [step for run in runs for step in run.steps]
    failed = sum(1 for step in steps if step.status == "failed")
    last = report.growth[-1] if report.growth else None
    cards = [("workflow runs shown", str(len(runs))), ("steps shown", str(len(steps))),
             ("failed steps", str(failed)), ("checkpoints in the store", str(len(report.growth))),
             ("stored now", size_text(report.stored_now)),
             ("logical ÷ stored", ratio_text(ratio(last.total_logical, last.total_stored)) if last else "n/a")]
    out = ["<header>", "<h1>rrstore report</h1>",
           f'<p class="meta">Store <code>{_e(report.store)}</code> · project <code>{_e(report.project)}</code>'
           f" · generated {_e(when_text(report.generated))}</p>", '<div class="cards">']
    out += [f'<div class="card"><b>{_e(value)}</b>{_e(name)}</div>' for name, value in cards]
    out.append("</div>")
    if report.damaged:
        out.append(f'<p class="note">{len(report.damaged)} checkpoint(s) could not be read and are left out: '
                   f"{_e(', '.join(report.damaged))} (rrstore check says why)</p>")
    return [*out, "</header>"]


def _runs_html(report: Report) -> list[str]:
    out = ['<section id="runs">', "<h2>Workflow runs</h2>"]
    if not report.lanes:
        out.append('<p class="note">No step checkpoints yet (rrstore workflow, rrstore run or '
                   "rrstore checkpoint make them).</p>")
    for lane, runs in report.lanes.items():
        out += [f'<section class="lane" data-lane="{_e(lane)}">', f"<h3>Lane {_e(lane)}</h3>"]
        if not runs:
            out.append('<p class="note">No runs shown (--runs 0).</p>')
        elif len(runs) > 1:
            out += overview_svg(lane, list(reversed(runs)))
        for number, run in enumerate(reversed(runs), 1):  # newest first
            out += _run_html(run, f"{lane}-{number}")
        out.append("</section>")
    return [*out, "</section>"]


def _run_html(run: Run, anchor: str) -> list[str]:
    where = [f"branch {run.git_branch}" if run.git_branch else "",
             f"commit {run.git_commit[:12]}" if run.git_commit else "",
             f"CI run {run.ci_run}" + (f", attempts {', '.join(run.ci_attempts)}" if run.ci_attempts else "")
             if run.ci_run else ""]
    span = run.span_s
    out = [f'<article class="run" data-run="{_e(run.run_id)}" data-status="{_e(run.status)}">',
           f'<h4><span class="status-{_e(run.status)}">{_e(STATUS_MARKS.get(run.status, ""))} '
           f"{_e(STATUS_WORDS.get(run.status, run.status))}</span> · {_e(run.label)}</h4>",
           f'<p class="meta">{_e(" · ".join(w for w in where if w) or "no git information")} · started '
           f"{_e(when_text(run.start))} · {_e(duration_text(span))} from first start to last end</p>",
           *timeline_svg(run, anchor), *_steps_table(run)]
    for step in run.steps:
        if step.failure is not None:
            out += _failure_html(step, step.failure)
    return [*out, "</article>"]


def overview_svg(lane: str, runs: list[Run]) -> list[str]:
    """One row per run (newest first): its steps end to end, each as wide as it ran, on one scale
    (the longest run's time spent in steps), so runs compare at a glance."""
    longest = max(max(sum(s.duration_s or 0.0 for s in run.steps) for run in runs), 1e-3)
    plot, height = WIDTH - LABEL_W - 110, 24 + 18 * len(runs)
    out = [f'<svg class="overview" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-labelledby="o-{_e(lane)} od-{_e(lane)}">',
           f'<title id="o-{_e(lane)}">Runs of lane {_e(lane)}</title>',
           f'<desc id="od-{_e(lane)}">{len(runs)} run(s), newest first; each row holds a run\'s steps end to end, '
           "each as wide as it ran; the runs' own sections below hold the figures.</desc>",
           f'<text class="axis" x="{LABEL_W}" y="12">time in steps (longest run: {_e(duration_text(longest))})</text>']
    for row, run in enumerate(runs):
        y, x = 18 + 18 * row, float(LABEL_W)
        out.append(f'<g class="run-row" data-run="{_e(run.run_id)}" data-status="{_e(run.status)}">'
                   f'<text x="{LABEL_W - 8}" y="{y + 12}" text-anchor="end">'
                   f"{_e(STATUS_MARKS.get(run.status, ''))} {_e(_clip(when_text(run.start), 30))}</text>")
        for step in run.steps:
            w = max(plot * (step.duration_s or 0.0) / longest, 2.0)
            out.append(f'<rect class="run-step {_e(step.status)}" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
                       f'height="12"><title>{_e(_bar_title(step))}</title></rect>')
            x += w + 1
        total = sum(s.duration_s or 0.0 for s in run.steps)
        out.append(f'<text class="axis" x="{x + 6:.1f}" y="{y + 12}">{_e(duration_text(total))}</text></g>')
    return [*out, "</svg>"]


def timeline_svg(run: Run, anchor: str) -> list[str]:
    """One row per step record, its bar placed at its start and as long as it ran."""
    start, span = run.start.timestamp(), max(run.span_s, 1e-3)
    plot = WIDTH - LABEL_W - 110
    height = 28 + ROW_H * len(run.steps)
    title, desc = f"t-{_e(anchor)}", f"d-{_e(anchor)}"
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{title} {desc}">',
           f'<title id="{title}">Timeline of {_e(run.label)}</title>',
           f'<desc id="{desc}">{len(run.steps)} step(s); bars start at each step\'s start and are as long as it '
           f"ran; the table below holds the same figures.</desc>"]
    for i in range(5):
        x = LABEL_W + plot * i / 4
        out.append(f'<line class="grid" x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height}"/>'
                   f'<text class="axis" x="{x:.1f}" y="12" text-anchor="middle">'
                   f"+{_e(tick_text(span * i / 4, span))}</text>")
    for row, step in enumerate(run.steps):
        y = 24 + ROW_H * row
        x = LABEL_W + plot * (step.start.timestamp() - start) / span
        w = max(plot * (step.duration_s or 0.0) / span, 3.0)
        label = f"{STATUS_MARKS.get(step.status, '')} {step.step_number}. {step.step_name}"
        out.append(f'<g class="step" data-status="{_e(step.status)}">'
                   f'<text x="{LABEL_W - 8}" y="{y + 15}" text-anchor="end">{_e(_clip(label, 30))}</text>'
                   f'<rect class="step-bar {_e(step.status)}" data-step="{step.step_number}" '
                   f'data-status="{_e(step.status)}" data-checkpoint="{_e(step.checkpoint_id)}" '
                   f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" rx="3">'
                   f"<title>{_e(_bar_title(step))}</title></rect>"
                   f'<text class="axis" x="{x + w + 6:.1f}" y="{y + 15}">'
                   f"{_e(duration_text(step.duration_s))}</text></g>")
    return [*out, "</svg>"]


def tick_text(seconds: float, span: float) -> str:
    """An axis label fine enough that a short run's five ticks differ."""
    if span < 0.1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.3f}s" if span < 1 else duration_text(seconds)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bar_title(step: Step) -> str:
    what = STATUS_WORDS.get(step.status, step.status)
    tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
    error = f": {step.error_message}" if step.error_message and step.status != "passed" else ""
    return (f"step {step.step_number} ({step.step_name}) {what} in {duration_text(step.duration_s)}{tries}"
            f"{error}; checkpoint {step.checkpoint_id}")


def _steps_table(run: Run) -> list[str]:
    out = ["<table>", f"<caption class=\"note\">Steps of {_e(run.label)}</caption>",
           '<tr><th class="num">Step</th><th>Name</th><th>Result</th><th class="num">Duration</th>'
           "<th>Started</th><th>Checkpoint</th></tr>"]
    for step in run.steps:
        result = result_text(step.status, step.exit_status)
        out.append(f'<tr><td class="num">{step.step_number}</td><td>{_e(step.step_name)}</td>'
                   f'<td class="status-{_e(step.status)}">{_e(result)}</td>'
                   f'<td class="num">{_e(duration_text(step.duration_s))}</td><td>{_e(when_text(step.start))}</td>'
                   f"<td><code>{_e(step.checkpoint_id)}</code></td></tr>")
    return [*out, "</table>"]


def _failure_html(step: Step, failure: Failure) -> list[str]:
    rows = [("Failure type", failure.failure_type), ("Evidence", failure.evidence),
            ("Exit status", "" if failure.exit_status is None else str(failure.exit_status)),
            ("Classified by", failure.rule), ("Command", step.command or "(none recorded)"),
            ("Checkpoint", step.checkpoint_id)]
    out = [f'<section class="failure" data-step="{step.step_number}">',
           f"<h4>Step {step.step_number} ({_e(step.step_name)}) failed</h4>", "<dl>"]
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows]
    out.append("</dl>")
    plan = failure.plan
    if plan is None:
        why = failure.plan_error or "the failure was not classified"
        out.append(f'<p class="note">No recovery plan: {_e(why)}</p>')
        return [*out, "</section>"]
    out += [f"<details><summary><b>Recovery plan: {_e(str(plan['strategy']).upper())}</b> — "
            f"{_e(plan.get('strategy_description', ''))} (when: {_e(plan.get('strategy_when', ''))}; "
            f"{len(plan.get('actions', []))} action(s))</summary>",
            '<table><tr><th class="num">Step</th><th>Action</th><th>Command</th><th>Time</th></tr>']
    for action in plan.get("actions", []):
        command = f"<code>{_e(action['command'])}</code>" if action.get("command") else _e(action.get("detail") or "")
        out.append(f'<tr><td class="num">{_e(action["step"])}</td><td>{_e(action["action"])}</td>'
                   f"<td>{command}</td><td>{_e(action.get('time', ''))}</td></tr>")
    out.append("</table>")
    out += [f'<p class="note">{_e(note)}</p>' for note in plan.get("notes", [])]
    return [*out, "</details>", "</section>"]


def _growth_html(report: Report) -> list[str]:
    out = ['<section id="growth">', "<h2>Store size and dedup over time</h2>"]
    if not report.growth:
        return [*out, '<p class="note">No checkpoints in the store yet.</p>', "</section>"]
    last = report.growth[-1]
    out.append(f'<p class="meta">{len(report.growth)} checkpoint(s): {_e(size_text(last.total_logical))} '
               f"logical, {_e(size_text(last.total_new))} of new objects (contents and trees), "
               f"{_e(size_text(last.total_stored))} stored, as recorded when each was taken (dedup: logical ÷ new "
               f"{_e(ratio_text(ratio(last.total_logical, last.total_new)))}; compression: new ÷ stored "
               f"{_e(ratio_text(ratio(last.total_new, last.total_stored)))}); "
               f"{_e(size_text(report.stored_now))} in objects/ and packs/ now.</p>")
    out += growth_svg(report)
    out += ["<table>", '<caption class="note">Growth per day</caption>',
            '<tr><th>Day</th><th class="num">Checkpoints</th><th class="num">Logical</th><th class="num">New</th>'
            '<th class="num">Stored</th><th class="num">Total logical</th><th class="num">Total stored</th>'
            '<th class="num">Logical ÷ stored</th></tr>']
    for day in report.days():
        cells = [day["checkpoints"], size_text(day["logical_bytes"]), size_text(day["new_bytes"]),
                 size_text(day["stored_bytes"]), size_text(day["total_logical"]), size_text(day["total_stored"]),
                 ratio_text(ratio(day["total_logical"], day["total_stored"]))]
        out.append(f"<tr><td>{_e(day['day'])}</td>" + "".join(f'<td class="num">{_e(c)}</td>' for c in cells) + "</tr>")
    return [*out, "</table>", "</section>"]


def growth_svg(report: Report) -> list[str]:
    """Running totals of logical and stored bytes, checkpoint by checkpoint (in the order added)."""
    points = report.growth
    step = max(1, len(points) // 400)  # at most ~400 points per line
    shown = points[::step] if points[-1] in points[::step] else [*points[::step], points[-1]]
    top = max(max(max(p.total_logical, p.total_stored) for p in shown), 1)
    left, plot_w, plot_h = 70, WIDTH - 90, 200

    def xy(index: int, value: int) -> str:
        x = left + (plot_w * index / max(len(shown) - 1, 1))
        return f"{x:.1f},{20 + plot_h - plot_h * value / top:.1f}"

    out = ['<svg class="growth" viewBox="0 0 960 260" role="img" aria-labelledby="g-title g-desc">',
           '<title id="g-title">Store size over time</title>',
           f'<desc id="g-desc">Total logical bytes reach {_e(size_text(shown[-1].total_logical))} and total stored '
           f"bytes {_e(size_text(shown[-1].total_stored))} over {len(points)} checkpoint(s); the table below holds "
           "the figures per day.</desc>"]
    for i in range(5):
        y = 20 + plot_h * i / 4
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
                   f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{_e(size_text(top * (4 - i) / 4))}</text>")
    for name, values in (("logical", [p.total_logical for p in shown]), ("stored", [p.total_stored for p in shown])):
        out.append(f'<polyline class="{name}" points="{" ".join(xy(i, v) for i, v in enumerate(values))}">'
                   f"<title>total {name} bytes</title></polyline>")
    out += [f'<rect class="key-logical" x="{left}" y="238" width="12" height="12"/>'
            f'<text x="{left + 18}" y="248">total logical (what full copies would take)</text>',
            f'<rect class="key-stored" x="{left + 330}" y="238" width="12" height="12"/>'
            f'<text x="{left + 348}" y="248">total stored (what the checkpoints added, compressed)</text>', "</svg>"]
    return out


def _diff_html(section: DiffSection | None) -> list[str]:
    if section is None:
        return []
    changes = section.result
    out = ['<section id="diff">',
           f"<h2>Diff <code>{_e(section.old_id)}</code> → <code>{_e(section.new_id)}</code></h2>",
           f'<p class="meta">{len(changes.added)} added, {len(changes.removed)} removed, '
           f"{len(changes.modified)} modified, {changes.unchanged} unchanged</p>"]
    for title, paths in (("Added", changes.added), ("Removed", changes.removed), ("Modified", changes.modified)):
        if paths:
            out += [f"<h3>{title}</h3>", *_paths(paths)]
    if not changes.changed:
        out.append('<p class="note">The two checkpoints hold the same files.</p>')
    return [*out, "</section>"]


def _paths(paths: Iterable[str]) -> list[str]:
    listed = list(paths)
    out = ['<ul class="paths">', *(f"<li>{_e(p)}</li>" for p in listed[:PATHS_SHOWN]), "</ul>"]
    if len(listed) > PATHS_SHOWN:
        out.append(f'<p class="note">and {len(listed) - PATHS_SHOWN} more (rrstore diff lists them all)</p>')
    return out
