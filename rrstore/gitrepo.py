"""Git facts about a working tree, through GitPython (imported lazily).

Only the checkpoint path needs git; ``rrstore --help`` and ``rrstore list``
never import GitPython, which keeps the CLI quick to start.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RRStoreError


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool | None


def find_git_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (dir or file)."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _repo(root: Path) -> Any:
    import git

    return git.Repo(root, search_parent_directories=True)


def _split_z(raw: bytes) -> list[str]:
    return [os.fsdecode(item) for item in raw.split(b"\0") if item]


def _git(root: Path, *args: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)) -> bytes:
    """Run git for its byte output (paths may be any bytes, so no decoding here)."""
    proc = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True)
    if proc.returncode not in ok:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RRStoreError(f"git {args[0]} failed in {root}: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def list_scope(root: Path) -> tuple[list[str], list[str]]:
    """Paths in scope below ``root``: (tracked + untracked-not-ignored, untracked dirs).

    Untracked directories (as ``git ls-files --directory`` reports them, with a
    trailing '/') are where empty directories can live; git never lists those.
    Plain git rather than GitPython: the output is raw bytes and can be large.
    """
    files = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    dirs = _git(root, "ls-files", "-z", "--others", "--exclude-standard", "--directory")
    return _split_z(files), [d for d in _split_z(dirs) if d.endswith("/")]


def ignored(root: Path, paths: list[str]) -> set[str]:
    """The subset of ``paths`` that git's ignore rules exclude."""
    if not paths:
        return set()
    data = b"\0".join(os.fsencode(p) for p in paths) + b"\0"
    return set(_split_z(_git(root, "check-ignore", "-z", "--stdin", stdin=data, ok=(0, 1))))


def git_state(root: Path) -> GitState:
    """Commit, branch and dirtiness; Nones when ``root`` is not in a repository."""
    import git

    try:
        repo = _repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return GitState(None, None, None)
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        commit = None
    branch = None if repo.head.is_detached else repo.active_branch.name
    return GitState(commit, branch, repo.is_dirty(untracked_files=True))
