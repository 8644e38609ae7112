"""State validation before recovery: the seed's checks plus the store's health.

Every check runs and reports, even after one fails (a person fixing things
wants the whole list). A check that does not apply here (no git, no store,
nothing declared) is skipped, not failed. Only reads: nothing is written,
except the local stat cache that hashing the tree may refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_settings, pyproject_problem
from ..diff import against_checkpoint, change_lines, left_out_note
from ..errors import CorruptObject, ObjectMissing, RRStoreError, StoreNotFound, UsageError
from ..record import CheckpointRecord
from .interpreter import marker_applies, parse_requirement, probe_interpreter, project_interpreter, unmet_reason
from .settings import DEFAULT_CRITICAL_FILES, load_recovery_settings

if TYPE_CHECKING:
    from .ports import System

PASS, FAIL, SKIP = "pass", "fail", "skip"
MARKS = {PASS: "✓", FAIL: "✗", SKIP: "-"}


@dataclass
class Check:
    name: str
    status: str
    reason: str
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    @property
    def line(self) -> str:
        return f"{MARKS[self.status]} {self.name}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "reason": self.reason,
                "details": self.details}


@dataclass
class ValidationResult:
    checks: list[Check] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def message(self) -> str:
        if self.success:
            return "State validation passed"
        names = ", ".join(c.name for c in self.failed)
        return f"validation failed: {len(self.failed)} of {len(self.checks)} checks failed ({names})"

    def to_json(self) -> dict[str, Any]:
        return {"success": self.success, "checks": [c.to_json() for c in self.checks]}


def _in_git(root: Path) -> bool:
    from ..worktree.gitrepo import find_git_root

    return find_git_root(root) is not None


def check_critical_files(system: System) -> Check:
    name = "critical files exist"
    configured = load_recovery_settings(system.root).critical_files
    if configured is None:  # the usual project files this project has (in git, or in its newest checkpoint)
        known = _known_paths(system, DEFAULT_CRITICAL_FILES)
        wanted = [f for f in DEFAULT_CRITICAL_FILES if f in known]
        if not wanted:
            return Check(name, SKIP, "none configured ([recovery] critical_files) and no usual project file "
                                     "is tracked or checkpointed")
    else:
        wanted = list(configured)
    missing = [f for f in wanted if not (system.root / f).exists()]
    if missing:
        return Check(name, FAIL, f"missing: {', '.join(missing)}", wanted)
    return Check(name, PASS, ", ".join(wanted), wanted)


def _known_paths(system: System, names: tuple[str, ...]) -> set[str]:
    if _in_git(system.root):
        from ..worktree.gitrepo import tracked_paths

        return tracked_paths(system.root, names, timeout=60) or set()
    try:
        newest = system.checkpoint_manager.newest()
    except RRStoreError:
        return set()
    if newest is None:
        return set()
    from ..tree import read_tree

    store = system.open_store()
    return {e.name for e in read_tree(store.objects, newest.state_hash)} & set(names)


def check_git(system: System) -> Check:
    """The repository opens and HEAD's commit and root tree can be read from its object database.

    Through GitPython (the user's choice of git library): validate runs
    rarely, so its import cost does not matter here, unlike on the
    checkpoint path, which calls plain git.
    """
    name = "git repository accessible"
    if not _in_git(system.root):
        return Check(name, SKIP, "not a git work tree")
    try:
        import git
    except ImportError:  # pragma: no cover - a declared dependency
        return Check(name, FAIL, "GitPython is not installed")
    try:
        repo = git.Repo(system.root, search_parent_directories=True)
        on = "detached HEAD" if repo.head.is_detached else f"on {repo.active_branch.name}"
        if not repo.head.is_valid():
            return Check(name, PASS, f"repository readable, no commit yet ({on})")
        commit = repo.head.commit
        len(commit.tree)  # reads the commit and its root tree from the object database
    except (git.GitError, ValueError, OSError) as exc:
        return Check(name, FAIL, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
    waiting = _waiting_operation(Path(repo.working_tree_dir or system.root))
    return waiting or Check(name, PASS, f"HEAD {commit.hexsha[:7]} {on}")


def _waiting_operation(work_tree: Path) -> Check | None:
    """A failing check when a merge, rebase, cherry-pick, revert or bisect waits for the user.

    Recovery on top of one (a restore, a retried step) mixes its half-done
    state into the result, so it is named with how to end it; the paths still
    unmerged are the details.
    """
    from ..worktree.gitrepo import describe_operation, operation_in_progress, unmerged_paths

    operation, merge_head = operation_in_progress(work_tree)
    if operation is None:
        return None
    try:
        unmerged = unmerged_paths(work_tree)
    except RRStoreError:
        unmerged = []
    shown = f"; {len(unmerged)} unmerged path(s)" if unmerged else ""
    return Check("git repository accessible", FAIL, describe_operation(operation, merge_head) + shown,
                 [f"U {path}" for path in unmerged])


def check_clean(system: System) -> Check:
    name = "working directory clean"
    if _in_git(system.root):
        from ..worktree.gitrepo import uncommitted

        try:
            changes = uncommitted(system.root)
        except RRStoreError as exc:
            return Check(name, FAIL, str(exc))
        if changes:
            shown = ", ".join(c[3:] for c in changes[:5]) + (" …" if len(changes) > 5 else "")
            return Check(name, FAIL, f"{len(changes)} uncommitted change(s): {shown}", changes)
        return Check(name, PASS, "no uncommitted changes (git status)")
    try:
        status = system.status()
    except StoreNotFound:
        return Check(name, SKIP, "not a git work tree and no checkpoints to compare with")
    if status.newest is None:
        return Check(name, SKIP, "not a git work tree and no checkpoints to compare with")
    if status.clean:
        return Check(name, PASS, f"matches the newest checkpoint {status.newest.checkpoint_id}")
    return Check(name, FAIL, status.message, _changed(status.changes))


def _changed(changes: Any) -> list[str]:
    if changes is None:
        return []
    return change_lines(changes)


def declared_dependencies(root: Path) -> tuple[list[str], str]:
    """Requirement strings the project declares, and where: pyproject's [project], else requirements.txt.

    A pyproject.toml that does not parse, or whose ``dependencies`` is not an
    array of strings, raises a UsageError saying so: "nothing declared" would
    hide it.
    """
    import tomllib

    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        problem = pyproject_problem(root)
        if problem is not None:
            raise UsageError(problem.summary)
        with open(pyproject, "rb") as fh:
            project = tomllib.load(fh).get("project", {})
        deps = project.get("dependencies") if isinstance(project, dict) else None
        if deps is not None and not (isinstance(deps, list) and all(isinstance(d, str) for d in deps)):
            raise UsageError(f"pyproject.toml [project] dependencies is malformed: it must be an array of "
                             f"requirement strings (dependencies = [\"requests>=2\"]), not {_shape(deps)}")
        if deps is not None:
            return list(deps), "pyproject.toml"
    requirements = root / "requirements.txt"
    if requirements.is_file():
        lines = [line.split("#", 1)[0].strip() for line in requirements.read_text(errors="replace").splitlines()]
        return [line for line in lines if line and not line.startswith("-")], "requirements.txt"
    return [], ""


def _shape(value: object) -> str:
    if isinstance(value, list):
        return "an array holding " + ", ".join(sorted({type(v).__name__ for v in value if not isinstance(v, str)}))
    return {str: "a string", dict: "a table", bool: "a boolean"}.get(type(value), f"a {type(value).__name__}")


def check_dependencies(system: System) -> Check:
    """The declared requirements resolve in the interpreter the project runs (``project_interpreter``),
    asked in a subprocess: rrstore's own interpreter (pipx, a tools venv) says nothing about the project's."""
    name = "dependencies installed"
    try:
        deps, source = declared_dependencies(system.root)
    except UsageError as exc:
        return Check(name, FAIL, str(exc))
    if not deps:
        return Check(name, SKIP, "no dependencies declared (pyproject.toml [project] or requirements.txt)")
    python = project_interpreter(system.root)
    if isinstance(python, str):
        return Check(name, FAIL, python)
    parsed = [parse_requirement(d) for d in deps]
    probe = probe_interpreter(python, sorted({r.name for r in parsed if not isinstance(r, str)}))
    if isinstance(probe, str):
        return Check(name, FAIL, probe)
    applies = [r for r in parsed if isinstance(r, str) or marker_applies(r, probe)]
    skipped = [r for r in parsed if not isinstance(r, str) and not marker_applies(r, probe)]
    problems = [p for p in (r if isinstance(r, str) else unmet_reason(r, probe) for r in applies) if p]
    checked = f"checked {python.said}"
    if problems:
        shown = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
        return Check(name, FAIL, f"{checked}: {shown}", problems)
    by_markers = f" ({len(skipped)} skipped by their markers)" if skipped else ""
    return Check(name, PASS, f"{checked}: {len(applies)} from {source} resolve{by_markers}",
                 [str(r) for r in applies] + [f"{r} (skipped: its marker does not apply)" for r in skipped])


def check_configuration(system: System) -> Check:
    name = "configuration valid"
    from ..remoteconfig import load_remote_settings
    from .workflow import input_warnings, load_workflows

    try:
        settings = load_settings(system.root)
        load_recovery_settings(system.root, system.command_check)
        lanes = load_workflows(system.root)
        load_remote_settings(system.root)  # a bad [remote] fails here, before a CI job's first push
    except RRStoreError as exc:
        return Check(name, FAIL, str(exc))
    flows = f"; workflows: {', '.join(lanes)}" if lanes else ""
    warnings = input_warnings(system, list(lanes.values()))
    more = f"; {len(warnings)} inputs pattern(s) match no file: {warnings[0]}" if warnings else ""
    source = settings.source
    if source == "defaults":
        has = (system.root / "pyproject.toml").is_file()
        source = f"defaults (no rrstore.toml, {'no [tool.rrstore] in pyproject.toml' if has else 'no pyproject.toml'})"
    problem = pyproject_problem(system.root)
    if problem is not None:  # the settings were read around it (see rrstore.config); the project is still broken
        return Check(name, FAIL, f"{problem.summary}; rrstore's settings: {source}{flows}{more}", warnings)
    return Check(name, PASS, f"{source}{flows}{more}", warnings)


def check_store(system: System, deep: bool) -> Check:
    """Refs point to readable records whose root trees exist; ``deep`` runs ``rrstore check`` without
    reading file contents (every ref, record, tree, index and object's presence; see rrstore/check.py)."""
    name = "store healthy"
    try:
        store = system.open_store()
    except StoreNotFound:
        return Check(name, SKIP, f"no store at {system.store_path} yet")
    except RRStoreError as exc:
        return Check(name, FAIL, str(exc))
    if deep:
        from ..check import Checker, CheckOptions

        result = Checker(store, CheckOptions()).run()
        if result.problems:
            lines = [f"{', '.join(p.checkpoints) or 'no checkpoint'}: {p.kind} {p.target}: {p.reason}"
                     for p in result.problems]
            return Check(name, FAIL, f"{len(result.damaged)} of {result.checkpoints} checkpoint(s) damaged: "
                                     f"{lines[0]}", lines)
        return Check(name, PASS, f"{result.checkpoints} checkpoint(s), every object present")
    problems: list[str] = []
    count = 0
    manager = system.checkpoint_manager
    for checkpoint_id in list(store.refs):
        count += 1
        try:
            record = manager.get(checkpoint_id)
            if not store.objects.has(record.state_hash):
                problems.append(f"{checkpoint_id}: root tree {record.state_hash} is missing")
        except (ObjectMissing, CorruptObject) as exc:
            problems.append(f"{checkpoint_id}: {exc}")
    if problems:
        return Check(name, FAIL, f"{len(problems)} of {count} checkpoint(s) damaged: {problems[0]}", problems)
    return Check(name, PASS, f"{count} checkpoint(s), records and root trees present")


def check_matches(system: System, record: CheckpointRecord) -> Check:
    name = f"working tree matches {record.checkpoint_id}"
    snap = system.checkpoint_manager.snapshot(store=False)
    if snap.root_oid == record.state_hash:
        return Check(name, PASS, f"state {record.state_hash[:12]}")
    with system.checkpoint_manager.explain_damage():
        changes = against_checkpoint(system.checkpoint_manager.store.objects, record, snap.entries)
    if not changes.changed:
        return Check(name, PASS, f"state {record.state_hash[:12]}{left_out_note(changes)}")
    lines = _changed(changes)
    return Check(name, FAIL, f"state {snap.root_oid[:12]} differs from {record.state_hash[:12]}: "
                             f"{len(changes.added)} added, {len(changes.removed)} removed, "
                             f"{len(changes.modified)} modified{left_out_note(changes)}", lines)


def validate(system: System, *, verbose: bool = False,
             checkpoint_id: str | None = None) -> ValidationResult:
    """Run every check; ``verbose`` makes the store check read every tree (deep validation).

    An unknown ``checkpoint_id`` raises CheckpointNotFound before anything runs.
    """
    record = system.show(checkpoint_id) if checkpoint_id else None
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("critical files exist", lambda: check_critical_files(system)),
        ("git repository accessible", lambda: check_git(system)),
        ("working directory clean", lambda: check_clean(system)),
        ("dependencies installed", lambda: check_dependencies(system)),
        ("configuration valid", lambda: check_configuration(system)),
        ("store healthy", lambda: check_store(system, verbose)),
    ]
    if record is not None:
        checks.append((f"working tree matches {record.checkpoint_id}", lambda: check_matches(system, record)))
    result = ValidationResult()
    for name, run in checks:
        try:
            result.checks.append(run())
        except RRStoreError as exc:  # one broken check must not hide the others
            result.checks.append(Check(name, FAIL, str(exc)))
    return result
