"""State validation before recovery: the seed's checks plus the store's health.

Every check runs and reports, even after one fails (a person fixing things
wants the whole list). A check that does not apply here (no git, no store,
nothing declared) is skipped, not failed. Only reads: nothing is written,
except the local stat cache that hashing the tree may refresh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from packaging.requirements import InvalidRequirement, Requirement

from ..checkpoint import CheckpointRecord
from ..config import load_settings
from ..errors import CorruptObject, ObjectMissing, RRStoreError, StoreNotFound
from .settings import DEFAULT_CRITICAL_FILES, load_recovery_settings

if TYPE_CHECKING:
    from ..system import RollbackRecoverySystem

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


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def _in_git(root: Path) -> bool:
    from ..gitrepo import find_git_root

    return find_git_root(root) is not None


def check_critical_files(system: RollbackRecoverySystem) -> Check:
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


def _known_paths(system: RollbackRecoverySystem, names: tuple[str, ...]) -> set[str]:
    if _in_git(system.root):
        done = _git(system.root, "ls-files", "--", *names)
        return set(done.stdout.splitlines()) if done.returncode == 0 else set()
    try:
        newest = system.checkpoint_manager.newest()
    except RRStoreError:
        return set()
    if newest is None:
        return set()
    from ..tree import read_tree

    store = system.open_store()
    return {e.name for e in read_tree(store.objects, newest.state_hash)} & set(names)


def check_git(system: RollbackRecoverySystem) -> Check:
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
    from ..gitrepo import describe_operation, operation_in_progress, unmerged_paths

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


def check_clean(system: RollbackRecoverySystem) -> Check:
    name = "working directory clean"
    if _in_git(system.root):
        done = _git(system.root, "status", "--porcelain", "--untracked-files=normal")
        if done.returncode != 0:
            return Check(name, FAIL, (done.stderr.strip().splitlines() or ["git status failed"])[-1])
        changes = [line for line in done.stdout.splitlines() if line.strip()]
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
    return ([f"A {p}" for p in changes.added] + [f"D {p}" for p in changes.removed]
            + [f"M {p}" for p in changes.modified])


def declared_dependencies(root: Path) -> tuple[list[str], str]:
    """Requirement strings the project declares, and where: pyproject's [project], else requirements.txt."""
    import tomllib

    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            with open(pyproject, "rb") as fh:
                deps = tomllib.load(fh).get("project", {}).get("dependencies")
        except (OSError, tomllib.TOMLDecodeError):
            deps = None
        if isinstance(deps, list):
            return [d for d in deps if isinstance(d, str)], "pyproject.toml"
    requirements = root / "requirements.txt"
    if requirements.is_file():
        lines = [line.split("#", 1)[0].strip() for line in requirements.read_text(errors="replace").splitlines()]
        return [line for line in lines if line and not line.startswith("-")], "requirements.txt"
    return [], ""


def check_dependencies(system: RollbackRecoverySystem) -> Check:
    """The declared requirements resolve in the interpreter the project runs (``project_interpreter``),
    asked in a subprocess: rrstore's own interpreter (pipx, a tools venv) says nothing about the project's."""
    name = "dependencies installed"
    deps, source = declared_dependencies(system.root)
    if not deps:
        return Check(name, SKIP, "no dependencies declared (pyproject.toml [project] or requirements.txt)")
    python = project_interpreter(system.root)
    if isinstance(python, str):
        return Check(name, FAIL, python)
    parsed = [_requirement(d) for d in deps]
    probe = _probe(python, sorted({r.name for r in parsed if not isinstance(r, str)}))
    if isinstance(probe, str):
        return Check(name, FAIL, probe)
    problems = [p for p in (r if isinstance(r, str) else _unmet(r, probe) for r in parsed) if p]
    checked = f"checked {python.said}"
    if problems:
        shown = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
        return Check(name, FAIL, f"{checked}: {shown}", problems)
    return Check(name, PASS, f"{checked}: {len(deps)} from {source} resolve", deps)


class Interpreter(NamedTuple):
    """The Python the project runs, and why that one (validate says both)."""

    path: Path
    why: str

    @property
    def said(self) -> str:
        return f"{self.path} ({self.why})"


class Probe(NamedTuple):
    """What the project's interpreter answered: its marker environment and the installed versions."""

    environment: dict[str, str]
    versions: dict[str, str | None]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def project_interpreter(root: Path) -> Interpreter | str:
    """The interpreter the project at ``root`` runs, or why none was found.

    In this order: an active ``VIRTUAL_ENV``; the project's own venv
    (``.venv``, then ``venv``, recognised by its ``pyvenv.cfg``); ``[recovery]
    python`` (a path, relative to the root, or a command on PATH); ``python3``
    on PATH.
    """
    active = os.environ.get("VIRTUAL_ENV", "").strip()
    if active:
        return Interpreter(_venv_python(Path(active)), "the active VIRTUAL_ENV")
    for folder in (".venv", "venv"):
        if (root / folder / "pyvenv.cfg").is_file():
            return Interpreter(_venv_python(root / folder), f"the project's {folder}")
    settings = load_recovery_settings(root)
    if settings.python is not None:
        why = f"python in {settings.source}"
        if "/" in settings.python or settings.python.startswith("~"):
            return Interpreter(root / Path(settings.python).expanduser(), why)
        found = shutil.which(settings.python)
        if found is None:
            return f"{settings.python!r} ({why}) is not on PATH"
        return Interpreter(Path(found), why)
    found = shutil.which("python3")
    if found is None:
        return ("no Python to check: no active VIRTUAL_ENV, no .venv or venv with a pyvenv.cfg, "
                "no [recovery] python and no python3 on PATH")
    return Interpreter(Path(found), "python3 on PATH")


# Run by the project's interpreter (any Python 3.8+): the environment markers are evaluated
# against (as packaging's default_environment builds it) and the version of each named distribution.
# The script's own folder ('' for -c) leaves sys.path first, so no project file shadows json or os.
_PROBE = """import sys
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
import json, os, platform
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
info = sys.implementation.version
impl = '%d.%d.%d' % (info.major, info.minor, info.micro)
if info.releaselevel != 'final':
    impl += info.releaselevel[0] + str(info.serial)
env = {'implementation_name': sys.implementation.name, 'implementation_version': impl,
       'os_name': os.name, 'platform_machine': platform.machine(), 'platform_release': platform.release(),
       'platform_system': platform.system(), 'platform_version': platform.version(),
       'python_full_version': platform.python_version(),
       'platform_python_implementation': platform.python_implementation(),
       'python_version': '.'.join(platform.python_version_tuple()[:2]), 'sys_platform': sys.platform}
print(json.dumps({'environment': env, 'versions': {n: version(n) for n in sys.argv[1:]}}))
"""


def _probe(python: Interpreter, names: list[str]) -> Probe | str:
    """Ask ``python`` for its marker environment and the versions of ``names``; a string says why it
    could not answer (missing, not executable, not a Python 3.8+, broken)."""
    try:
        done = subprocess.run([str(python.path), "-c", _PROBE, *names], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60, errors="replace")
    except subprocess.TimeoutExpired:
        return f"cannot run {python.said}: no answer within 60 s"
    except OSError as exc:
        return f"cannot run {python.said}: {exc.strerror or exc}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"cannot run {python.said}: {last}"
    try:
        doc = json.loads(lines[-1])
        environment, versions = doc["environment"], doc["versions"]
        if not (isinstance(environment, dict) and all(isinstance(v, str) for v in environment.values())
                and isinstance(versions, dict) and all(isinstance(v, str | None) for v in versions.values())):
            raise TypeError(doc)
    except (ValueError, KeyError, TypeError):
        return f"cannot run {python.said}: it did not answer as a Python 3.8+ does"
    return Probe(environment, versions)


def _requirement(text: str) -> Requirement | str:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return f"{text!r} is not a valid requirement"


def _unmet(req: Requirement, probe: Probe) -> str | None:
    """Why ``req`` is not met in the probed interpreter, or None when it is (or its marker excludes it there)."""
    if req.marker is not None and not req.marker.evaluate({**probe.environment, "extra": ""}):
        return None
    version = probe.versions.get(req.name)
    if version is None:
        return f"{req.name} is not installed"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {version} does not satisfy {req.specifier}"
    return None


def check_configuration(system: RollbackRecoverySystem) -> Check:
    name = "configuration valid"
    from .workflow import load_workflows

    try:
        settings = load_settings(system.root)
        load_recovery_settings(system.root, system.command_check)
        lanes = load_workflows(system.root)
    except RRStoreError as exc:
        return Check(name, FAIL, str(exc))
    flows = f"; workflows: {', '.join(lanes)}" if lanes else ""
    return Check(name, PASS, f"{settings.source}{flows}")


def check_store(system: RollbackRecoverySystem, deep: bool) -> Check:
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


def check_matches(system: RollbackRecoverySystem, record: CheckpointRecord) -> Check:
    name = f"working tree matches {record.checkpoint_id}"
    snap = system.checkpoint_manager.snapshot(store=False)
    if snap.root_oid == record.state_hash:
        return Check(name, PASS, f"state {record.state_hash[:12]}")
    changes = system.diff(record.checkpoint_id)
    lines = _changed(changes)
    return Check(name, FAIL, f"state {snap.root_oid[:12]} differs from {record.state_hash[:12]}: "
                             f"{len(changes.added)} added, {len(changes.removed)} removed, "
                             f"{len(changes.modified)} modified", lines)


def validate(system: RollbackRecoverySystem, *, verbose: bool = False,
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
