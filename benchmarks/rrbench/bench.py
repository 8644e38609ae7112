"""The scenarios: one tool's sequence of timed steps on one tree, and the history replay."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import measure, trees
from .tools import Cmd, Ctx, RRStore, Tool

SCENARIOS = ("cold", "unchanged", "status", "churn", "restore_full", "restore_churn", "export", "gc")
SCENARIO_TITLES = {
    "cold": "cold checkpoint",
    "unchanged": "unchanged re-checkpoint",
    "status": "status (unchanged)",
    "churn": "checkpoint after 1% churn",
    "restore_full": "full restore (wiped tree)",
    "restore_churn": "restore after 1% churn",
    "export": "export",
    "gc": "gc",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class TreeCase:
    """A prepared tree: where it is, where its pristine content comes from, what to run."""

    name: str
    title: str
    tree: Path
    source: Path
    expected: trees.Manifest
    has_git: bool
    scenarios: tuple[str, ...]
    tool_names: tuple[str, ...] | None = None  # None: every available tool
    peer_scenarios: tuple[str, ...] | None = None  # fewer steps for the peers (smoke runs)
    keep: Callable[[str], bool] | None = None
    churn_big_threshold: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    pristine: bool = False  # the last sequence verified the tree equal to ``expected``

    def reset(self) -> int:
        """Make the work tree pristine again (copies only what differs); returns paths fixed."""
        fixed = trees.sync(self.source, self.tree, self.expected, keep=None)
        if self.has_git:
            refresh_index(self.tree)
        return fixed


def refresh_index(tree: Path) -> None:
    """Bring the tree's own git index up to date, so every tool starts from the same git state."""
    import subprocess

    subprocess.run(["git", "-C", str(tree), "update-index", "-q", "--refresh"], capture_output=True, check=False)
    subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, check=False)


class StepFailed(Exception):
    pass


class Runner:
    def __init__(self, case: TreeCase, tool: Tool, run_index: int, stores: Path, verify: bool = True) -> None:
        self.case = case
        self.tool = tool
        self.run_index = run_index
        self.verify = verify
        self.with_metrics = True
        base = stores / case.name / tool.name
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        self.ctx = Ctx(tree=case.tree, store=base / "store", scratch=base / "scratch", tree_has_git=case.has_git)
        self.ctx.scratch.mkdir()
        self.records: dict[str, dict[str, Any]] = {}

    def measure(self, scenario: str, cmd: Cmd) -> measure.Measurement:
        # every timed step starts with no dirty pages: a tool that fsyncs must not pay for
        # writing back what the harness (or the previous tool) left in the page cache
        os.sync()
        try:
            m = measure.run(cmd.argv, cwd=cmd.cwd, env=cmd.env, ok_codes=cmd.ok_codes)
        except measure.CommandFailed as exc:
            self.records[scenario] = {**exc.measurement.to_json(), "ok": False, "error": str(exc)}
            raise StepFailed(str(exc)) from exc
        except OSError as exc:
            self.records[scenario] = {"ok": False, "error": f"{cmd.argv[0]}: {exc}"}
            raise StepFailed(str(exc)) from exc
        rec: dict[str, Any] = {**m.to_json(), "ok": True}
        usage = self.tool.store_usage(self.ctx)
        rec["store_disk"] = usage.disk
        rec["store_apparent"] = usage.apparent
        rec["store_files"] = usage.files
        rec["cache_disk"] = self.tool.cache_usage(self.ctx).disk
        self.records[scenario] = rec
        return m

    def check(self, scenario: str, expected: trees.Manifest) -> None:
        if not self.verify:
            return
        problems = trees.compare(expected, trees.manifest(self.case.tree))
        self.records[scenario]["verified"] = not problems
        if problems:
            self.records[scenario]["verify_problems"] = problems
            log(f"  !! {self.tool.name} {scenario}: restored tree differs: {'; '.join(problems)}")

    def checkpoint(self, scenario: str, label: str, unchanged: bool = False) -> str:
        cmd = self.tool.unchanged(self.ctx, label) if unchanged else self.tool.checkpoint(self.ctx, label)
        m = self.measure(scenario, cmd)
        ref = self.tool.after_checkpoint(self.ctx, label, m)
        if isinstance(self.tool, RRStore) and self.with_metrics:
            self.records[scenario]["rrstore_metrics"] = self.tool.metrics(self.ctx, ref)
        return ref

    def restore(self, scenario: str, ref: str, expected: trees.Manifest) -> None:
        self.measure(scenario, self.tool.restore(self.ctx, ref))
        self.check(scenario, expected)
        if isinstance(self.tool, RRStore) and self.with_metrics:
            undo = self.tool.undo_metrics(self.ctx)
            if undo:
                self.records[scenario]["rrstore_undo_checkpoint_metrics"] = undo

    def sequence(self, churn_seed: int, once: bool = True) -> dict[str, dict[str, Any]]:
        """The steps in order; ``once`` adds export and gc (slow for git, so measured in the first run)."""
        case, tool, ctx = self.case, self.tool, self.ctx
        want = case.scenarios if case.peer_scenarios is None or isinstance(tool, RRStore) else case.peer_scenarios
        try:
            tool.init(ctx)
            ref0 = self.checkpoint("cold", "c0")
            if "unchanged" in want:
                self.checkpoint("unchanged", "c1", unchanged=True)
            if "status" in want and (cmd := tool.status(ctx)) is not None:
                self.measure("status", cmd)
            target_ref, target_manifest = ref0, case.expected
            if "churn" in want:
                paths = trees.churn_paths(case.expected, 0.01, churn_seed, case.churn_big_threshold)
                churned = trees.apply_churn(case.tree, paths, case.expected, churn_seed)
                ref2 = self.checkpoint("churn", "c2")
                self.records["churn"]["churned_files"] = len(paths)
                target_ref, target_manifest = ref2, churned
            if "restore_full" in want:
                trees.wipe(case.tree)
                self.restore("restore_full", target_ref, target_manifest)
            if "restore_churn" in want and "churn" in want:
                self.restore("restore_churn", ref0, case.expected)
            if "export" in want and once:
                refs = [ref0, target_ref] if target_ref != ref0 else [ref0]
                out = ctx.scratch / "export.out"
                if (cmd := tool.export(ctx, refs, out)) is not None:
                    self.measure("export", cmd)
                    self.records["export"]["export_bytes"] = out.stat().st_size if out.exists() else None
            if "gc" in want and once and tool.gc_in_trees and (cmd := tool.gc(ctx)) is not None:
                self.measure("gc", cmd)
        except StepFailed as exc:
            log(f"  !! {tool.name}: {exc}")
        except Exception as exc:  # a broken adapter must not stop the other tools
            log(f"  !! {tool.name}: {type(exc).__name__}: {exc}")
            self.records.setdefault("_error", {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return self.records


def run_case(case: TreeCase, tools: list[Tool], runs: int, stores: Path, seed: int,
             verify: bool = True, metrics: bool = True) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every tool's sequence on ``case``, ``runs`` times; tool order rotates between runs."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {t.name: {} for t in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            fixed = 0
            if not case.pristine:
                fixed = case.reset()
            elif case.has_git:
                refresh_index(case.tree)
            case.pristine = False
            if fixed:
                log(f"  reset {case.name}: {fixed} paths repaired")
            start = time.perf_counter()
            runner = Runner(case, tool, r, stores, verify=verify)
            runner.with_metrics = metrics
            records = runner.sequence(churn_seed=seed, once=r == 0)
            last = records.get("restore_churn" if "churn" in case.scenarios else "restore_full") or {}
            case.pristine = bool(last.get("verified"))
            summary = ", ".join(f"{k} {v['wall_s']:.2f}s" for k, v in records.items()
                                if isinstance(v, dict) and "wall_s" in v)
            log(f"  {case.name} run {r + 1}/{runs} {tool.name}: {summary} "
                f"({time.perf_counter() - start:.0f}s with checks)")
            for scenario, rec in records.items():
                out[tool.name].setdefault(scenario, []).append(rec)
            shutil.rmtree(runner.ctx.store.parent, ignore_errors=True)
    case.reset()
    return out


# --- history --------------------------------------------------------------------

def run_history(work: Path, commits: list[str], tools: list[Tool], runs: int, stores: Path,
                name: str = "history") -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Check out each commit in turn into ``work`` and let every tool checkpoint it."""
    import subprocess

    out: dict[str, dict[str, list[dict[str, Any]]]] = {t.name: {} for t in tools}
    for r in range(runs):
        runners: dict[str, Runner] = {}
        failed: set[str] = set()
        dummy = TreeCase(name=name, title=name, tree=work, source=work, expected={}, has_git=True, scenarios=())
        for tool in tools:
            runners[tool.name] = Runner(dummy, tool, r, stores, verify=False)
            try:
                tool.init(runners[tool.name].ctx)
            except Exception as exc:
                failed.add(tool.name)
                log(f"  !! {tool.name} init: {exc}")
        steps: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tools}
        for i, commit in enumerate(commits):
            subprocess.run(["git", "-C", str(work), "checkout", "-q", "-f", "--detach", commit], check=True,
                           capture_output=True)
            subprocess.run(["git", "-C", str(work), "clean", "-q", "-f", "-d", "-x"], check=True,
                           capture_output=True)
            refresh_index(work)
            for tool in tools:
                if tool.name in failed:
                    continue
                runner = runners[tool.name]
                try:
                    runner.checkpoint(f"step{i}", f"h{i}")
                except (StepFailed, RuntimeError) as exc:
                    failed.add(tool.name)
                    log(f"  !! {tool.name} history step {i}: {exc}")
                    continue
                steps[tool.name].append(runner.records.pop(f"step{i}"))
        for tool in tools:
            recs = steps[tool.name]
            if not recs:
                continue
            rest = recs[1:]
            summary = {
                "ok": tool.name not in failed and len(recs) == len(commits),
                "commits": len(recs),
                "cold_wall_s": recs[0]["wall_s"],
                "incremental_wall_s": sum(x["wall_s"] for x in rest),
                "incremental_cpu_s": sum(x["cpu_s"] for x in rest),
                "incremental_median_wall_s": measure.median([x["wall_s"] for x in rest]) if rest else 0.0,
                "total_wall_s": sum(x["wall_s"] for x in recs),
                "total_cpu_s": sum(x["cpu_s"] for x in recs),
                "max_rss_kib": max(x["max_rss_kib"] for x in recs),
                "store_disk": recs[-1]["store_disk"],
                "store_apparent": recs[-1]["store_apparent"],
                "store_files": recs[-1]["store_files"],
                "store_disk_steps": [x["store_disk"] for x in recs],
                "wall_steps": [round(x["wall_s"], 4) for x in recs],
            }
            if tool.name == "git" and summary["ok"]:
                runner = runners[tool.name]
                cmd = tool.gc(runner.ctx)
                if cmd is not None:
                    try:
                        runner.measure("gc", cmd)
                        summary["after_gc_store_disk"] = runner.records["gc"]["store_disk"]
                        summary["gc_wall_s"] = runner.records["gc"]["wall_s"]
                    except StepFailed as exc:
                        log(f"  !! git gc: {exc}")
            out[tool.name].setdefault("history", []).append(summary)
            log(f"  {name} run {r + 1}/{runs} {tool.name}: {len(recs)} checkpoints, "
                f"{summary['total_wall_s']:.2f}s, store {summary['store_disk'] / 1e6:.2f} MB")
        for runner in runners.values():
            shutil.rmtree(runner.ctx.store.parent, ignore_errors=True)
    return out
