"""One CI step through rrstore: checkpoint or run it, and on failure leave a plan and a pushed checkpoint.

The GitHub Action (``action.yml``) and the GitLab example
(``docs/examples/gitlab-ci.yml``) both call this script, so the two behave
alike and a test runs the real thing. It drives the ``rrstore`` CLI of the
Python running it (``python -m rrstore ... --json``) and adds only what CI
needs around it:

- the step's output goes to the job log as it comes; the step's own exit
  status is this script's exit status (a failed push never changes it);
- a markdown summary (failure type, the recovery plan, the checkpoint id,
  how to resume on a new runner) appended to ``--summary`` (default
  ``$GITHUB_STEP_SUMMARY``) and outputs for later steps in ``$GITHUB_OUTPUT``;
- the checkpoint pushed to the remote per ``--push`` (never, on-failure,
  always), so a fresh runner can pull it;
- with ``--workflow``, the lane's ``[workflow.LANE]`` from ``rrstore.toml``;
  when the CI run (``GITHUB_RUN_ID``, GitLab's ``CI_PIPELINE_ID``) already
  has a run on the remote (a re-run of a failed job), it is continued there:
  the steps that passed are skipped.

Every option also reads an environment variable (``RRSTORE_CI_*``, the
remote ``RRSTORE_REMOTE``), which is how the action passes its inputs:
inputs never reach a shell command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rrstore_summary import render  # beside this script: 'python ci/rrstore_step.py' puts ci/ on sys.path

from rrstore.report.markdown import cell, code

PUSH_CHOICES = ("never", "on-failure", "always")
LANES = ("docs", "standard", "heavy")
TAIL = 8192  # bytes of rrstore's stderr kept to read its error from


@dataclass
class Outcome:
    """What one step came to: the rrstore JSON it printed, its exit status, and what was pushed."""

    mode: str  # "checkpoint", "run" or "workflow"
    exit_status: int
    data: dict[str, Any]
    pushed: list[str] = field(default_factory=list)
    push_note: str = ""  # markdown: record and remote text in it is escaped (cell, code)

    @property
    def error(self) -> str | None:
        """rrstore's own error (not the step's failure), if rrstore could not do its part."""
        return self.data.get("message", "rrstore failed") if "error" in self.data else None

    @property
    def checkpoint_ids(self) -> list[str]:
        if self.mode == "workflow":
            return [s["checkpoint_id"] for s in self.data.get("steps", [])]
        cid = self.data.get("checkpoint_id")
        return [cid] if cid else []

    @property
    def failed_step(self) -> dict[str, Any] | None:
        """The step result holding the failure's classification and plan."""
        if self.mode == "workflow":
            steps = self.data.get("steps", [])
            return next((s for s in steps if not s.get("success")), None)
        return None if self.exit_status == 0 or self.error else self.data


def env_default(name: str, fallback: str = "") -> str:
    return os.environ.get(name, "") or fallback


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad input: one line, exit 2, as rrstore's own usage errors."""
        self.exit(2, f"rrstore-ci: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--lane", default=env_default("RRSTORE_CI_LANE", "standard"), choices=LANES)
    p.add_argument("--step-number", default=env_default("RRSTORE_CI_STEP_NUMBER"))
    p.add_argument("--step-name", default=env_default("RRSTORE_CI_STEP_NAME"))
    p.add_argument("--run", dest="command", default=env_default("RRSTORE_CI_RUN"),
                   help="the step's command, run by bash (none: only checkpoint)")
    p.add_argument("--workflow", default=env_default("RRSTORE_CI_WORKFLOW", "false"),
                   help="'true': run the lane's [workflow.LANE] instead of one step")
    p.add_argument("--remote", default=env_default("RRSTORE_REMOTE"), help="s3://BUCKET/PREFIX")
    p.add_argument("--endpoint-url", default=env_default("RRSTORE_CI_ENDPOINT_URL"))
    p.add_argument("--push", default=env_default("RRSTORE_CI_PUSH", "on-failure"), choices=PUSH_CHOICES)
    p.add_argument("--retries", default=env_default("RRSTORE_CI_RETRIES"))
    p.add_argument("--timeout", default=env_default("RRSTORE_CI_TIMEOUT"))
    p.add_argument("--summary", default=env_default("RRSTORE_CI_SUMMARY", env_default("GITHUB_STEP_SUMMARY")),
                   help="markdown file the summary is appended to (default: $GITHUB_STEP_SUMMARY)")
    args = p.parse_args(argv)
    for name, value, allowed in (("lane", args.lane, LANES), ("push", args.push, PUSH_CHOICES)):
        if value not in allowed:  # argparse checks choices on the command line only, not defaults from env
            p.error(f"argument --{name} (input {name}): invalid choice: {value!r} (choose from {', '.join(allowed)})")
    args.workflow = args.workflow.strip().lower() in ("1", "true", "yes")
    if not args.workflow and (not args.step_number.isdigit() or not args.step_name.strip()):
        p.error("give --step-number N and --step-name NAME (inputs step-number, step-name), or --workflow true")
    return args


def rrstore(command: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``rrstore COMMAND --json ARGS``: its exit status and JSON document.

    Its stderr (the step's output, rrstore's messages) is passed on to the job log as it comes; under
    ``--json`` rrstore reports its own errors there too, as the last line, so that tail is kept.
    """
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "rrstore", command, "--json", *args], stdout=out,
                                stderr=subprocess.PIPE)
        assert proc.stderr is not None
        tail = b""
        while chunk := os.read(proc.stderr.fileno(), 65536):
            os.write(2, chunk)
            tail = (tail + chunk)[-TAIL:]
        status = proc.wait()
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    return status, document(text, tail.decode("utf-8", errors="replace"), status)


def document(stdout: str, stderr_tail: str, status: int) -> dict[str, Any]:
    """The command's JSON result, or its error (the last stderr line), or a stand-in saying what happened."""
    for text in (stdout, (stderr_tail.strip().splitlines() or [""])[-1] if status else ""):
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and (text is stdout or "error" in data):
            return data
    if status:
        return {"error": "Failed", "message": f"rrstore exited with status {status} and printed no result"}
    return {"error": "BadOutput", "message": f"rrstore printed no JSON result: {stdout[:200]!r}"}


def remote_args(args: argparse.Namespace) -> list[str]:
    return ["--remote", args.remote, *(["--endpoint-url", args.endpoint_url] if args.endpoint_url else [])]


def step_options(args: argparse.Namespace) -> list[str]:
    return [*(["--retries", args.retries] if args.retries else []),
            *(["--timeout", args.timeout] if args.timeout else [])]


def run_one(args: argparse.Namespace) -> Outcome:
    """Checkpoint (no command) or ``rrstore run`` the step; the step's command runs under bash."""
    step = ["--lane", args.lane, "--step-number", args.step_number, "--step-name", args.step_name]
    if not args.command.strip():
        status, data = rrstore("checkpoint", *step)
        return Outcome("checkpoint", status, data)
    status, data = rrstore("run", *step, *step_options(args), "--", "bash", "-eo", "pipefail", "-c", args.command)
    return Outcome("run", status, data)


def ci_run_id() -> str:
    """The CI run this job belongs to, as rrstore names it in its records ("" outside CI)."""
    from rrstore.recovery.runs import ci_run

    return ci_run(os.environ)[0]


def run_workflow(args: argparse.Namespace) -> Outcome:
    """The lane's workflow; continued from the remote when this CI run already has a run there."""
    ci = ci_run_id()
    if args.remote and ci:
        status, data = rrstore("workflow", "--lane", args.lane, *remote_args(args), "--run", ci)
        if data.get("error") not in ("RunNotFound", "RemoteNotFound"):  # nothing of this run there yet
            return Outcome("workflow", status, data)
        print(f"rrstore-ci: no run {ci} on {args.remote} yet: running the workflow from its first step",
              file=sys.stderr)
    status, data = rrstore("workflow", "--lane", args.lane)
    return Outcome("workflow", status, data)


def push(args: argparse.Namespace, outcome: Outcome) -> None:
    """Push the step's checkpoint(s) per ``--push``; a failure is reported, never the step's status."""
    failed = outcome.exit_status != 0
    if not outcome.checkpoint_ids:
        outcome.push_note = "no checkpoint to push"
        return
    if args.push == "never" or (args.push == "on-failure" and not failed):
        outcome.push_note = f"not pushed (push: {args.push})"
        return
    if not args.remote:
        outcome.push_note = "not pushed: no remote (input remote, or RRSTORE_REMOTE)"
        print(f"::warning::rrstore: {outcome.push_note}", file=sys.stderr)
        return
    status, data = rrstore("push", *remote_args(args), *outcome.checkpoint_ids)
    if status == 0:
        outcome.pushed = list(outcome.checkpoint_ids)
        outcome.push_note = f"pushed to {code(args.remote)}"
    else:
        outcome.push_note = f"push to {code(args.remote)} failed (exit {status}): {cell(data.get('message', ''))}"
        print(f"::warning::rrstore: {outcome.push_note}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = run_workflow(args) if args.workflow else run_one(args)
    if outcome.error is None:
        push(args, outcome)
    text = render(args, outcome)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    write_outputs(outcome)
    if outcome.error is not None:
        print(f"rrstore-ci: error: {outcome.error}", file=sys.stderr)
    return outcome.exit_status


def write_outputs(outcome: Outcome) -> None:
    """``checkpoint-id``, ``exit-code``, ``failure-type``, ``pushed`` for later steps (GitHub only)."""
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    failed = outcome.failed_step or {}
    kind = (failed.get("classification") or {}).get("failure_type", "")
    ids = outcome.checkpoint_ids
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"checkpoint-id={(failed.get('checkpoint_id') or (ids[-1] if ids else ''))}\n"
                 f"exit-code={outcome.exit_status}\nfailure-type={kind}\npushed={str(bool(outcome.pushed)).lower()}\n")


if __name__ == "__main__":
    sys.exit(main())
