"""What a recovery plan's commands need from the project: workflows, git, its docs checker.

The planner asks ``ProjectFacts`` before it shows a command, so a plan only
suggests what can run here. Each fact is read once per plan and only when a
command needs it; none raises (a broken configuration or an unreadable git
directory means "not available", and the plan says why).

The documentation check (``{docs_check}``) is chosen by one rule, first
match wins:

1. ``[recovery] docs_check`` in the project's configuration, as written;
2. Sphinx, when ``docs/``, ``doc/`` (or their ``source/``) holds a
   ``conf.py``: ``sphinx-build -W -b dummy SRC BUILD`` (every warning an
   error, no output written but the doctrees under ``_build``) when
   ``sphinx-build`` is installed, else ``PYTHON -m sphinx …`` when the
   project's interpreter (``interpreter.project_interpreter``) imports sphinx,
   else no command and the reason;
3. otherwise, by the files present in ``docs/`` or ``doc/`` (else the
   project root's own ``*.md`` / ``*.rst``):

   - Markdown: the first installed of ``mdl``, ``markdownlint-cli2``,
     ``markdownlint``, ``pymarkdown`` (installed: on ``PATH`` or in the
     project's ``.venv/bin``, ``venv/bin`` or ``node_modules/.bin``);
   - reStructuredText: docutils' ``rst2html --strict FILE /dev/null`` when
     installed, else ``PYTHON -m docutils --strict FILE /dev/null`` when the
     project's interpreter imports docutils (0.19 or later), one per file,
     at most ``MAX_RST_FILES``.

No docs, or docs no installed tool checks: no command, and the reason.

Every other program a plan names (``program``) must be installed too (a
shell builtin, on ``PATH``, or in the project's bin dirs, which then name
it); ``tests`` is pytest's test directory as this project has it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

DOC_DIRS = ("docs", "doc")
MARKDOWN_LINTERS = (("mdl", "{tool} {md}"), ("markdownlint-cli2", "{tool} {md_glob}"),
                    ("markdownlint", "{tool} {md}"), ("pymarkdown", "{tool} scan {md}"))
PROJECT_BINS = (".venv/bin", "venv/bin", "node_modules/.bin")
MAX_RST_FILES = 10
TEST_DIRS = ("tests", "test")
SHELL_BUILTINS = frozenset({":", ".", "[", "cd", "echo", "exit", "export", "false", "set", "test", "true", "unset"})
MAX_SCANNED = 5000  # directory entries read while looking for docs: a plan must stay cheap
SKIPPED_DIRS = {"_build", "node_modules", "__pycache__", "build", "site"}


@dataclass(frozen=True)
class Check:
    """A command that can run here, or None and the reason it cannot."""

    command: str | None
    reason: str = ""


def find_tool(name: str, root: Path | None) -> str | None:
    """How to call ``name``: its bare name when on PATH, else its path in the project's own bin dirs."""
    if shutil.which(name):
        return name
    if root is None:
        return None
    for folder in PROJECT_BINS:
        candidate = root / folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return f"{folder}/{name}"
    return None


def _doc_files(folder: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    seen = 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if recursive and not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(files):
            seen += 1
            if name.endswith((".md", ".rst")):
                found.append(Path(top, name))
        if seen > MAX_SCANNED:
            break
    return found


def _sphinx(root: Path) -> Check | None:
    for folder in DOC_DIRS:
        for source in (folder, f"{folder}/source"):
            if (root / source / "conf.py").is_file():
                args = f"-W -b dummy {source} {folder}/_build/dummy"
                tool = find_tool("sphinx-build", root)
                if tool:
                    return Check(f"{tool} {args}")
                python = python_with(root, "sphinx")
                if python.command:
                    return Check(f"{python.command} -m sphinx {args}")
                return Check(None, f"Sphinx is not installed (no sphinx-build, and {python.reason}): "
                                   "install it, or set [recovery] docs_check")
    return None


# Run by the project's interpreter: whether it imports the module (the project's files left off sys.path).
_IMPORTABLE = ("import sys\nsys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
               "import importlib.util\nsys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)")


def python_with(root: Path, module: str) -> Check:
    """How to call the project's interpreter when it imports ``module``, or why not."""
    from ..errors import RRStoreError
    from .interpreter import project_interpreter

    try:
        found = project_interpreter(root)
    except RRStoreError as exc:  # a broken [recovery] python: validate reports it
        return Check(None, str(exc))
    if isinstance(found, str):
        return Check(None, found)
    try:
        done = subprocess.run([str(found.path), "-c", _IMPORTABLE, module], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return Check(None, f"cannot run {found.said}")
    if done.returncode != 0:
        return Check(None, f"{found.said} cannot import {module}")
    return Check(_call(found.path, root))


def _call(path: Path, root: Path) -> str:
    """``path`` as a command: relative inside the project, its bare name when PATH finds that one."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        pass
    on_path = shutil.which(path.name)
    if on_path and Path(on_path) == path:
        return path.name
    return shlex.quote(str(path))


def docs_check(root: Path | None, declared: str | None = None) -> Check:
    """The command that checks this project's documentation (the rule in the module docstring)."""
    if declared:
        return Check(declared)
    if root is None:
        return Check(None, "no project to look for documentation in")
    sphinx = _sphinx(root)
    if sphinx:
        return sphinx
    folder = next((d for d in DOC_DIRS if (root / d).is_dir()), None)
    files = _doc_files(root / folder, recursive=True) if folder else []
    if not files:
        folder, files = None, _doc_files(root, recursive=False)
    if not files:
        return Check(None, "no documentation here (.md or .rst in docs/, doc/ or the project root)")
    md = [f for f in files if f.suffix == ".md"]
    rst = [f for f in files if f.suffix == ".rst"]
    commands, missing = [], []
    if md:
        names = folder or " ".join(shlex.quote(str(f.relative_to(root))) for f in md)
        glob = shlex.quote(f"{folder}/**/*.md") if folder else names
        tool = next(((found, form) for name, form in MARKDOWN_LINTERS if (found := find_tool(name, root))), None)
        if tool:
            commands.append(tool[1].format(tool=tool[0], md=names, md_glob=glob))
        else:
            missing.append("no Markdown linter is installed (mdl, markdownlint-cli2, markdownlint or pymarkdown)")
    if rst:
        rst2html = find_tool("rst2html", root) or find_tool("rst2html.py", root)
        python = python_with(root, "docutils") if rst2html is None else Check(None)
        runner = rst2html or (f"{python.command} -m docutils" if python.command else None)
        if runner:
            commands += [f"{runner} --strict {shlex.quote(str(f.relative_to(root)))} /dev/null"
                         for f in rst[:MAX_RST_FILES]]
        else:
            why = f"; {python.reason}" if python.reason else ""
            missing.append(f"docutils is not installed (for the .rst files{why})")
    if commands:
        return Check(" && ".join(commands))
    return Check(None, "; ".join(missing) + ": install one, or set [recovery] docs_check")


class ProjectFacts:
    """The project a plan is for; ``root=None`` is no project in particular (the seed's bare planner).

    Without a root, git commands keep the seed's form (``origin``) and no
    workflow or docs command is offered: nothing is known to exist.
    """

    def __init__(self, root: Path | None = None, store: Path | None = None,
                 declared_docs_check: str | None = None) -> None:
        self.root, self.store, self.declared_docs_check = root, store, declared_docs_check

    @cached_property
    def git_root(self) -> Path | None:
        from ..worktree.gitrepo import find_git_root

        return find_git_root(self.root) if self.root is not None else None

    @property
    def git(self) -> bool:
        return self.root is None or self.git_root is not None

    @property
    def workflows(self) -> frozenset[str]:
        """Lanes with a declared workflow; none when the configuration cannot be read."""
        return frozenset(self.workflow_steps)

    @cached_property
    def workflow_steps(self) -> dict[str, tuple[str, ...]]:
        """Each declared workflow's step names, in order (step N is the N-th)."""
        if self.root is None:
            return {}
        from .workflow import load_workflows

        try:
            return {lane: tuple(s.name for s in flow.steps) for lane, flow in load_workflows(self.root).items()}
        except Exception:  # a broken configuration is validate's to report; the plan offers no workflow
            return {}

    @cached_property
    def tests(self) -> str:
        """pytest's test directory argument: ``tests/``, ``test/``, or '' (none: plain pytest)."""
        if self.root is None:
            return "tests/"
        return next((f"{d}/" for d in TEST_DIRS if (self.root / d).is_dir()), "")

    def program(self, word: str) -> Check:
        """How to call the program ``word`` names here, or why it cannot run (not installed)."""
        if word in SHELL_BUILTINS:
            return Check(word)
        if "/" in word:
            path = Path(word).expanduser()
            if self.root is not None and not path.is_absolute():
                path = self.root / path
            if self.root is None or (path.is_file() and os.access(path, os.X_OK)):
                return Check(word)
            return Check(None, f"{word} does not exist or is not executable")
        found = find_tool(word, self.root)
        if found:
            return Check(found)
        bins = f" or in the project's {', '.join(PROJECT_BINS)}" if self.root is not None else ""
        return Check(None, f"{word} is not installed (not on PATH{bins})")

    def path_exists(self, path: str) -> bool:
        """Whether a path a command is given exists in the project (anything goes without one)."""
        return self.root is None or (self.root / path).exists()

    @cached_property
    def remote(self) -> Check:
        if self.root is None:
            return Check("origin")
        if self.git_root is None:
            return Check(None, "not a git repository")
        from ..worktree.gitrepo import remote_names

        names = remote_names(self.git_root)
        if names is None:
            return Check(None, "git did not run")
        if not names:
            return Check(None, "no git remote is configured")
        return Check("origin" if "origin" in names else names[0])

    @cached_property
    def docs(self) -> Check:
        return docs_check(self.root, self.declared_docs_check)

    @cached_property
    def operation(self) -> tuple[str | None, str | None]:
        """(operation, MERGE_HEAD) of a merge, rebase, cherry-pick, revert or bisect waiting."""
        if self.git_root is None:
            return None, None
        from ..worktree.gitrepo import operation_in_progress

        return operation_in_progress(self.git_root)

    @cached_property
    def keep(self) -> str:
        """``git clean`` exclude options that spare rrstore's configuration and its store."""
        patterns = ["rrstore.toml", ".rrstoreignore"]
        store = ".checkpoints"
        if self.root is not None and self.store is not None:
            try:
                store = self.store.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                store = ""  # outside the project: git clean cannot reach it
            except OSError:
                store = self.store.name
        if store and store != ".":
            patterns.append(store)
        return " ".join(f"-e {shlex.quote(p)}" for p in patterns)
