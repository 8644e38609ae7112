"""The report as GitHub-flavoured markdown, for a CI job's summary (``$GITHUB_STEP_SUMMARY``).

Shaped like ``ci/rrstore_summary.py``'s summary of one step (which uses this
module's ``cell`` and ``code``; the plan as the same table), for every run
shown. Records may come from a shared or imported store and GitHub renders
HTML inside markdown, so every text from a record goes through ``cell`` or
``code``: a step named ``<script>``, ``[x](https://...)`` or ``\\r# heading``
shows as that text, in its one table row, and no control character reaches
a terminal the markdown is printed on.
"""

from __future__ import annotations

import re
from typing import Any

from .model import DiffSection, Report, Run, Step, ratio
from .text import STATUS_MARKS, STATUS_WORDS, duration_text, printable, ratio_text, result_text, size_text, when_text

PATHS_SHOWN = 50
MARKDOWN_PUNCTUATION = re.compile(r"[!#$()*+\-.:=@\[\\\]^_`{|}~]")  # and <, >, &: entities


def cell(text: object) -> str:
    """``text`` as inline markdown that shows as itself, in a table cell or anywhere in a line.

    Control characters are escaped (``printable``), every ASCII punctuation character markdown
    gives meaning to is backslash-escaped (links, images, emphasis, code, headings, lists, setext
    underlines, tables' '|', GitHub's autolinks ``:``/``@``/``www.`` and math ``$``; quotes only
    matter in a link's title, so not them) and ``<``, ``>``, ``&`` become entities, since GitHub
    renders HTML in markdown.
    """
    escaped = MARKDOWN_PUNCTUATION.sub(r"\\\g<0>", printable(text).strip())
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object, *, in_table: bool = False) -> str:
    """``text`` as a CommonMark code span (shown verbatim; GitHub escapes HTML in one).

    Its delimiter is one backtick longer than the longest run of backticks in ``text``, padded with a
    space when ``text`` begins or ends with a backtick (or with spaces at both ends). ``in_table``: a
    '|' is written '\\|', which a table row reads as part of the cell, even in a code span.
    """
    shown = printable(text)
    if not shown.strip():
        return cell(shown)
    if in_table:
        shown = shown.replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", shown)), default=0))
    pad = " " if "`" in (shown[0], shown[-1]) or shown[0] == shown[-1] == " " else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def render_markdown(report: Report) -> str:
    last = report.growth[-1] if report.growth else None
    lines = ["## rrstore report", "",
             f"Store {code(report.store)} · generated {when_text(report.generated)}", ""]
    if report.damaged:
        lines += [f"> {len(report.damaged)} checkpoint(s) could not be read: "
                  f"{cell(', '.join(report.damaged))} (`rrstore check` says why)", ""]
    if not report.lanes:
        lines += ["No step checkpoints yet.", ""]
    for lane, runs in report.lanes.items():
        lines += [f"### Lane {cell(lane)}", ""]
        for run in reversed(runs):  # newest first
            lines += run_lines(run)
    if last is not None:
        lines += growth_lines(report)
    if report.diff is not None:
        lines += diff_lines(report.diff)
    return "\n".join(lines).rstrip("\n") + "\n"


def run_lines(run: Run) -> list[str]:
    where = ", ".join(w for w in (f"branch {code(run.git_branch)}" if run.git_branch else "",
                                  f"commit {code(run.git_commit[:12])}" if run.git_commit else "") if w)
    lines = [f"#### {STATUS_MARKS.get(run.status, '')} {cell(run.label)}: {STATUS_WORDS.get(run.status, run.status)}",
             "", f"Started {when_text(run.start)}" + (f" on {where}" if where else "") + ".", "",
             "| Step | Name | Result | Duration | Checkpoint |", "|---:|---|---|---:|---|"]
    for step in run.steps:
        result = result_text(step.status, step.exit_status)
        lines.append(f"| {step.step_number} | {cell(step.step_name)} | {STATUS_MARKS.get(step.status, '')} "
                     f"{result} | {duration_text(step.duration_s)} | "
                     f"{code(step.checkpoint_id, in_table=True)} |")
    lines.append("")
    for step in run.steps:
        if step.failure is not None:
            lines += failure_lines(step)
    return lines


def failure_lines(step: Step) -> list[str]:
    failure = step.failure
    assert failure is not None
    lines = [f"**Step {step.step_number} ({cell(step.step_name)}) failed**: {code(failure.failure_type)}, "
             f"exit status {failure.exit_status}; evidence: {cell(failure.evidence)}", ""]
    if failure.plan is not None:
        lines += plan_lines(failure.plan)
    elif failure.plan_error:
        lines += [f"> no recovery plan: {cell(failure.plan_error)}", ""]
    return lines


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The recovery plan as ``ci/rrstore_summary.py`` shows it: strategy, table of actions, notes."""
    lines = [f"Recovery plan: **{cell(str(plan['strategy']).upper())}** ({cell(plan.get('strategy_description', ''))})",
             "", "| Step | Action | Command | Time |", "|---:|---|---|---|"]
    for action in plan.get("actions", []):
        command = code(action["command"], in_table=True) if action.get("command") \
            else cell(action.get("detail") or "")
        lines.append(f"| {action['step']} | {cell(action['action'])} | {command} | {cell(action.get('time', ''))} |")
    lines += [""] + [f"> {cell(note)}" for note in plan.get("notes", [])]
    return [*lines, ""] if plan.get("notes") else lines


def growth_lines(report: Report) -> list[str]:
    last = report.growth[-1]
    lines = ["### Store size and dedup", "",
             f"{len(report.growth)} checkpoint(s): {size_text(last.total_logical)} logical, "
             f"{size_text(last.total_stored)} stored as recorded (logical ÷ stored "
             f"{ratio_text(ratio(last.total_logical, last.total_stored))}); {size_text(report.stored_now)} "
             "in the store now.", "",
             "| Day | Checkpoints | Logical | Stored | Total logical | Total stored | Logical ÷ stored |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for day in report.days():
        lines.append(f"| {day['day']} | {day['checkpoints']} | {size_text(day['logical_bytes'])} | "
                     f"{size_text(day['stored_bytes'])} | {size_text(day['total_logical'])} | "
                     f"{size_text(day['total_stored'])} | "
                     f"{ratio_text(ratio(day['total_logical'], day['total_stored']))} |")
    return [*lines, ""]


def diff_lines(section: DiffSection) -> list[str]:
    changes = section.result
    lines = [f"### Diff {code(section.old_id)} → {code(section.new_id)}", "",
             f"{len(changes.added)} added, {len(changes.removed)} removed, {len(changes.modified)} modified, "
             f"{changes.unchanged} unchanged.", ""]
    tagged = [("A", p) for p in changes.added] + [("D", p) for p in changes.removed] + \
        [("M", p) for p in changes.modified]
    if tagged:
        shown = [printable(f"{tag} {path}") for tag, path in tagged[:PATHS_SHOWN]]
        fence = "`" * max(3, 1 + max((len(run) for line in shown for run in re.findall("`+", line)), default=0))
        lines += [fence, *shown, fence]
        if len(tagged) > PATHS_SHOWN:
            lines.append(f"and {len(tagged) - PATHS_SHOWN} more (`rrstore diff` lists them all)")
        lines.append("")
    return lines
