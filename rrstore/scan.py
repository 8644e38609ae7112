"""The snapshot scope (layer beside trees): which paths a checkpoint holds.

In a git work tree: tracked files plus untracked files that are not ignored
(what ``git stash -u`` takes), listed by git itself, plus empty untracked
directories. Elsewhere: every path under the root minus the gitignore-style
patterns in ``.rrstoreignore``. Never the store, and never a name that is
never written (``tree.never_written``: ``.git`` and ``.checkpoints`` in any
case and at any depth), so a checkpoint cannot hold one. A caller may add
``extra`` paths outside the ignore rules (restore's undo checkpoint: every
path the restore would overwrite, ignored ones included).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import gitrepo
from .tree import never_written, paths_never_written

IGNORE_FILE = ".rrstoreignore"

# Restore replaces a file through ``.<name>.rrstore-<8 hex>.tmp`` beside it. One
# left behind by a killed restore is never part of a checkpoint, and the next
# checkpoint or restore removes it (``snapshot``).
_TEMP = re.compile(r"\.[^/]*\.rrstore-[0-9a-f]{8}\.tmp")
TEMP_MARK = ".rrstore-"


def worktree_temp(name: str) -> str:
    """A fresh temporary name for replacing file ``name`` in place (recognised by ``is_worktree_temp``)."""
    return f".{name[:40]}{TEMP_MARK}{os.urandom(4).hex()}.tmp"


def is_worktree_temp(path: str) -> bool:
    """True for a restore's temporary file (callers test ``TEMP_MARK in path`` first: it is cheaper)."""
    return _TEMP.fullmatch(path.rpartition("/")[2]) is not None


@dataclass
class Scope:
    root: Path
    mode: str
    paths: list[str] = field(default_factory=list)
    empty_dirs: list[str] = field(default_factory=list)
    git: gitrepo.GitState = gitrepo.NO_GIT
    # Those of ``paths`` the rules above leave out, held because the caller asked (``scan_scope``).
    extra: list[str] = field(default_factory=list)


def _excluded_prefixes(root: Path, exclude: list[Path]) -> list[str]:
    out = []
    real_root = os.path.realpath(root)
    for path in exclude:
        rel = os.path.relpath(os.path.realpath(path), real_root)
        if rel != "." and not rel.startswith(".."):
            out.append(rel.replace(os.sep, "/"))
        rel_plain = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if rel_plain != "." and not rel_plain.startswith(".."):
            out.append(rel_plain.replace(os.sep, "/"))
    return out


def store_prefixes(root: Path, store: Path) -> list[str]:
    """The store's path relative to ``root`` (as reached through links and as written), if inside it."""
    return _excluded_prefixes(root, [store])


def _is_excluded(path: str, prefixes: list[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def scan_scope(root: Path, exclude: list[Path], *, git_state: bool = False,
               extra: list[str] | None = None) -> Scope:
    """List what a checkpoint of ``root`` holds, leaving out ``exclude``.

    ``git_state`` also records commit, branch and dirtiness (for records).
    ``extra`` paths are added to ``paths`` (and listed in ``Scope.extra``),
    ignored or not, never ``.git`` or ``exclude``; the snapshot holds those
    that exist. Costs one set of the scope's paths, nothing without ``extra``.
    """
    prefixes = _excluded_prefixes(root, exclude)
    if gitrepo.find_git_root(root) is not None:
        scope = _git_scope(root, prefixes, git_state)
    else:
        scope = _walk_scope(root, prefixes)
    if extra:
        listed = set(scope.paths)
        reserved = set(paths_never_written(extra))  # never .git or the store, whoever asks
        scope.extra = sorted(p for p in extra if p and p not in listed and p not in reserved
                             and not _is_excluded(p, prefixes))
        scope.paths.extend(scope.extra)
    return scope


def _git_scope(root: Path, prefixes: list[str], git_state: bool) -> Scope:
    listing = gitrepo.list_scope(root, with_state=git_state)
    untracked_dirs = listing.untracked_dirs
    files = listing.files
    if prefixes:  # only a store inside the work tree needs filtering
        inside = tuple(prefixes)
        below = tuple(p + "/" for p in prefixes)
        files = [p for p in files if p not in inside and not p.startswith(below)]
    # git lists neither the root .git nor nested repositories, but does list sub/.GIT/x and .checkpoints/x
    reserved = set(paths_never_written(files))
    if reserved:
        files = [p for p in files if p not in reserved]
    scope = Scope(root, "git", files, git=listing.state)
    candidates: list[str] = []
    for top in untracked_dirs:
        top = top.rstrip("/")
        if _is_excluded(top, prefixes) or paths_never_written([top]):
            continue
        candidates.extend(_empty_dirs(root, top, prefixes))
    if candidates:
        ignored = gitrepo.ignored(root, candidates)
        scope.empty_dirs = [d for d in candidates if d not in ignored and d + "/" not in ignored]
    return scope


def _empty_dirs(root: Path, top: str, prefixes: list[str]) -> list[str]:
    """Empty directories at or below ``top``, in os.walk's order, without recursion (any depth)."""
    found: list[str] = []
    stack = [top]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root / rel) as it:
                items = list(it)
        except OSError:
            continue
        if not items:
            found.append(rel)
        subdirs = [f"{rel}/{i.name}" for i in items if i.is_dir(follow_symlinks=False) and not never_written(i.name)]
        stack.extend(reversed([d for d in subdirs if not _is_excluded(d, prefixes)]))
    return found


def _walk_scope(root: Path, prefixes: list[str]) -> Scope:
    import pathspec

    spec = None
    ignore_path = root / IGNORE_FILE
    if ignore_path.is_file():
        spec = pathspec.GitIgnoreSpec.from_lines(ignore_path.read_text(errors="surrogateescape").splitlines())
    scope = Scope(root, "ignorefile")
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        empty = True
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for item in it:
                empty = False
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                is_dir = item.is_dir(follow_symlinks=False)
                if never_written(item.name) or _is_excluded(rel, prefixes):
                    continue
                if spec is not None and spec.match_file(rel + "/" if is_dir else rel):
                    continue
                if is_dir:
                    stack.append(rel)
                else:
                    scope.paths.append(rel)
        if empty and rel_dir:
            scope.empty_dirs.append(rel_dir)
    scope.paths.sort()  # as git lists them: neighbours end up side by side in packs
    scope.empty_dirs.sort()
    return scope
