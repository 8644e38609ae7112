"""The snapshot scope (working-tree layer): which paths a checkpoint holds.

In a git work tree: tracked files plus untracked files that are not ignored
(what ``git stash -u`` takes), listed by git itself, plus empty untracked
directories. Elsewhere: every path under the root minus the gitignore-style
patterns in ``.rrstoreignore``. Never the store, and never a name that is
never written (``tree.never_written``: ``.git`` and ``.checkpoints`` in any
case and at any depth), so a checkpoint cannot hold one. A caller may add
``extra`` paths outside the ignore rules (restore's undo checkpoint: every
path the restore would overwrite, ignored ones included).

Directories that are the project's environment or a cache, not its work, are
left out on purpose and named in ``Scope.left_out``: one holding a
``pyvenv.cfg`` (a virtual environment) or a ``CACHEDIR.TAG`` that starts with
the Cache Directory Tagging signature (what restic's and borg's
``--exclude-caches`` skip). In git mode only their untracked files are left
out (git owns the tracked ones); the root itself never is. ``include`` paths
(the ``scope_include`` setting) are exempt, and in git mode the files git
ignores below them are kept as well (one more ``ls-files``, only then): the
way to carry an ignored ``build/`` a later step reads to another runner. Detection costs nothing extra:
git mode looks for the marker names among the listed paths, the walker looks
when it enters a directory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..tree import never_written, paths_never_written, under
from . import gitrepo

IGNORE_FILE = ".rrstoreignore"
PYVENV = "pyvenv.cfg"
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
VENV_REASON = "a virtual environment: pyvenv.cfg"
CACHE_REASON = "a cache directory: CACHEDIR.TAG"

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
    # Directories left out on purpose (a venv, a cache directory) -> why; restore leaves them alone.
    left_out: dict[str, str] = field(default_factory=dict)


def marker_reason(root: Path, rel_dir: str, name: str) -> str | None:
    """Why directory ``rel_dir`` is left out because it holds file ``name``, or None.

    A ``pyvenv.cfg`` marks a virtual environment; a ``CACHEDIR.TAG`` counts
    only when it starts with the spec's signature (a file of that name
    written for another reason does not hide a directory).
    """
    full = root / rel_dir / name
    try:
        if not stat.S_ISREG(os.lstat(full).st_mode):
            return None
        if name == PYVENV:
            return VENV_REASON
        if name == CACHEDIR_TAG:
            with open(full, "rb") as fh:
                return CACHE_REASON if fh.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE else None
    except OSError:
        return None
    return None


def clean_include(include: Iterable[str]) -> list[str]:
    """``scope_include`` entries as tree paths ("./.venv/" -> ".venv"); "." or "" includes everything."""
    out = []
    for raw in include:
        path = raw.strip().replace(os.sep, "/").strip("/")
        while path.startswith("./"):
            path = path[2:]
        out.append("" if path in (".", "") else path)
    return out


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
               extra: list[str] | None = None, include: Iterable[str] = ()) -> Scope:
    """List what a checkpoint of ``root`` holds, leaving out ``exclude``.

    ``git_state`` also records commit, branch and dirtiness (for records).
    ``extra`` paths are added to ``paths`` (and listed in ``Scope.extra``),
    ignored or not, never ``.git``, ``exclude`` or a left-out directory; the
    snapshot holds those that exist. Costs one set of the scope's paths,
    nothing without ``extra``. ``include``: directories (and what lies below
    them) never left out as a venv or a cache, nor, in git, as ignored.
    """
    prefixes = _excluded_prefixes(root, exclude)
    wanted = set(clean_include(include))
    if gitrepo.find_git_root(root) is not None:
        scope = _git_scope(root, prefixes, git_state, wanted)
    else:
        scope = _walk_scope(root, prefixes, wanted)
    if extra:
        listed = set(scope.paths)
        reserved = set(paths_never_written(extra))  # never .git or the store, whoever asks
        scope.extra = sorted(p for p in extra if p and p not in listed and p not in reserved
                             and not _is_excluded(p, prefixes) and not under(p, scope.left_out))
        scope.paths.extend(scope.extra)
    return scope


def _marked_dirs(root: Path, files: list[str], include: set[str]) -> dict[str, str]:
    """The outermost directories below the root that ``files`` show holding a venv or cache marker."""
    found: dict[str, str] = {}
    for path in files:
        if not path.endswith(("/" + PYVENV, "/" + CACHEDIR_TAG)):
            continue
        folder, _, name = path.rpartition("/")
        if folder in found or under(folder, include):
            continue
        reason = marker_reason(root, folder, name)
        if reason is not None:
            found[folder] = reason
    return {d: why for d, why in sorted(found.items()) if not under(d.rpartition("/")[0], found)}


def _leave_out_untracked(root: Path, listing: gitrepo.GitScope, include: set[str]) -> dict[str, str]:
    """Drop from ``listing.files`` the untracked files inside venvs and caches; return those directories.

    Tracked files there stay: git owns them, and a checkpoint that dropped
    them would restore a commit's files incompletely.
    """
    marked = _marked_dirs(root, listing.files, include)
    if not marked:
        return {}
    untracked = set(listing.untracked)
    dropped: set[str] = set()
    kept = []
    for path in listing.files:
        if path in untracked and under(path.rpartition("/")[0], marked):
            folder = path.rpartition("/")[0]
            while folder not in marked:
                folder = folder.rpartition("/")[0]
            dropped.add(folder)
        else:
            kept.append(path)
    listing.files = kept
    return {d: why for d, why in marked.items() if d in dropped}


def _git_scope(root: Path, prefixes: list[str], git_state: bool, include: set[str]) -> Scope:
    listing = gitrepo.list_scope(root, with_state=git_state)
    left_out = _leave_out_untracked(root, listing, include)
    untracked_dirs = listing.untracked_dirs
    files = listing.files
    if include:  # what git ignores there is kept too (a build directory a later step reads)
        listed = set(files)
        files = files + [p for p in gitrepo.ignored_files(root, sorted(include)) if p not in listed]
    if prefixes:  # only a store inside the work tree needs filtering
        inside = tuple(prefixes)
        below = tuple(p + "/" for p in prefixes)
        files = [p for p in files if p not in inside and not p.startswith(below)]
    # git lists neither the root .git nor nested repositories, but does list sub/.GIT/x and .checkpoints/x
    reserved = set(paths_never_written(files))
    if reserved:
        files = [p for p in files if p not in reserved]
    scope = Scope(root, "git", files, git=listing.state, left_out=left_out)
    candidates: list[str] = []
    skip = [*prefixes, *left_out]  # no walk into a left-out venv or cache for its empty directories
    for top in untracked_dirs:
        top = top.rstrip("/")
        if _is_excluded(top, skip) or paths_never_written([top]):
            continue
        candidates.extend(_empty_dirs(root, top, skip))
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


def _walk_scope(root: Path, prefixes: list[str], include: set[str]) -> Scope:
    import pathspec

    spec = None
    ignore_path = root / IGNORE_FILE
    if ignore_path.is_file():
        spec = pathspec.GitIgnoreSpec.from_lines(ignore_path.read_text(errors="surrogateescape").splitlines())
    scope = Scope(root, "ignorefile")
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            items = list(it)
        reason = _walk_marker(root, rel_dir, items, include) if rel_dir else None
        if reason is not None:
            scope.left_out[rel_dir] = reason
            continue
        for item in items:
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
        if not items and rel_dir:
            scope.empty_dirs.append(rel_dir)
    scope.paths.sort()  # as git lists them: neighbours end up side by side in packs
    scope.empty_dirs.sort()
    scope.left_out = dict(sorted(scope.left_out.items()))
    return scope


def _walk_marker(root: Path, rel_dir: str, items: list[os.DirEntry[str]], include: set[str]) -> str | None:
    """Why the walker leaves out ``rel_dir`` (just entered, its entries ``items``), or None."""
    for item in items:
        if item.name in (PYVENV, CACHEDIR_TAG) and not under(rel_dir, include):
            reason = marker_reason(root, rel_dir, item.name)
            if reason is not None:
                return reason
    return None
