"""The markdown a CI step leaves in the job's summary (``$GITHUB_STEP_SUMMARY``): see rrstore_step.py.

What a person needs after a red job, without reading the log: which step,
the failure type and its evidence, the recovery plan as a table, the
checkpoint id, whether it reached the remote, and the commands that bring
the state back (or continue the run) on a new runner.
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any

# One escaping for every summary: text from records (a pulled or shared store's) shows as text.
from rrstore.report.markdown import cell, code

if TYPE_CHECKING:
    from rrstore_step import Outcome


def remote_words(args: argparse.Namespace) -> list[str]:
    return ["--remote", args.remote or "s3://BUCKET/PREFIX", *(["--endpoint-url", args.endpoint_url]
                                                              if args.endpoint_url else [])]


def resume_commands(args: argparse.Namespace, outcome: Outcome, checkpoint_id: str) -> list[str]:
    """How to continue on a new runner: the workflow's own resume, or pull and restore the one step's state."""
    if outcome.mode == "workflow":
        return [shlex.join(["rrstore", "workflow", "--lane", args.lane, "--resume", *remote_words(args)])]
    return [shlex.join(["rrstore", "pull", checkpoint_id, *remote_words(args)]),
            shlex.join(["rrstore", "restore", "--checkpoint-id", checkpoint_id])]


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The recovery plan as the CLI prints it, as markdown: strategy, table of actions, notes."""
    lines = [f"### Recovery plan: {cell(str(plan['strategy']).upper())} "
             f"({cell(plan.get('strategy_description', ''))})", "",
             "| Step | Action | Command | Time |", "|---:|---|---|---|"]
    for action in plan.get("actions", []):
        command = code(action["command"], in_table=True) if action.get("command") \
            else cell(action.get("detail") or "")
        lines.append(f"| {action['step']} | {cell(action['action'])} | {command} | {cell(action.get('time', ''))} |")
    lines += [""] + [f"> {cell(note)}" for note in plan.get("notes", [])]
    return lines


def failure_lines(args: argparse.Namespace, outcome: Outcome, step: dict[str, Any]) -> list[str]:
    found = step.get("classification") or {}
    cid = step["checkpoint_id"]
    what = f"step {step['step_number']} ({cell(step['step_name'])}) failed with exit status {step['exit_status']}"
    lines = [f"### {what[0].upper()}{what[1:]}" if outcome.mode == "workflow" else f"## rrstore: {what}", "",
             "| | |", "|---|---|", f"| Lane | {cell(args.lane)} |",
             f"| Failure type | {code(found.get('failure_type', 'unknown'), in_table=True)} |",
             f"| Evidence | {cell(found.get('evidence', ''))} |",
             f"| Checkpoint | {code(cid, in_table=True)} |", f"| Remote | {outcome.push_note} |", ""]
    if step.get("plan"):
        lines += plan_lines(step["plan"])
    lines += ["### Resume on a new runner", "",
              "Re-run the failed job: it continues this run from the remote, skipping the steps that passed. "
              "By hand, on any clone of this commit:" if outcome.mode == "workflow" else
              "The checkpoint holds the tree as it was before the step ran; on any clone of this commit:",
              "", "```bash", *resume_commands(args, outcome, cid), "```"]
    return lines


def workflow_lines(outcome: Outcome) -> list[str]:
    """The workflow's steps: which ran, which were skipped on resume, and the time saved."""
    data = outcome.data
    lines = ["| Step | Name | Result | Checkpoint |", "|---:|---|---|---|"]
    for s in data.get("skipped", []):
        lines.append(f"| {s.get('step_number', '')} | {cell(s.get('step_name', ''))} | skipped (passed before) | "
                     f"{code(s.get('checkpoint_id', ''), in_table=True)} |")
    for s in data.get("steps", []):
        result = "passed" if s.get("success") else f"failed (exit {s.get('exit_status')})"
        lines.append(f"| {s['step_number']} | {cell(s['step_name'])} | {result} | "
                     f"{code(s['checkpoint_id'], in_table=True)} |")
    if data.get("resumed_from") or data.get("skipped"):
        lines += ["", f"Resumed: time saved {data.get('time_saved_s', 0):.2f}s of an estimated "
                      f"{data.get('full_run_s', 0):.2f}s."]
    return [*lines, ""]


def render(args: argparse.Namespace, outcome: Outcome) -> str:
    """The summary's markdown for this outcome."""
    if outcome.error is not None:
        return "\n".join([f"## rrstore: could not {outcome.mode} the step (exit status {outcome.exit_status})",
                          "", cell(outcome.error), ""])
    failed = outcome.failed_step
    verdict = "failed" if failed is not None else "passed"
    lines = [f"## rrstore: {cell(args.lane)} workflow {verdict}", "", *workflow_lines(outcome)] \
        if outcome.mode == "workflow" else []
    if failed is not None:
        return "\n".join(lines + failure_lines(args, outcome, failed)) + "\n"
    if outcome.mode == "workflow" and outcome.data.get("nothing_to_resume"):
        total = outcome.data.get("total_steps", "")
        return "\n".join([lines[0], "", f"Nothing to resume: this run already passed all {total} steps.", ""])
    if outcome.mode == "workflow":
        return "\n".join([*lines, "All steps passed.", "", f"Remote: {outcome.push_note}", ""])
    what = "checkpointed" if outcome.mode == "checkpoint" else f"passed in {outcome.data.get('wall_time_s', 0):.2f}s"
    return "\n".join([f"## rrstore: step {args.step_number} ({cell(args.step_name)}) {what}", "",
                      f"Checkpoint {code(outcome.checkpoint_ids[0])}; remote: {outcome.push_note}", ""])
