"""Cleanup of failed execution state: store leftovers, git's stale index.lock, caches (the seed's list).

What may go, and why it is safe:

- files in the store's ``tmp/`` older than ``TMP_AGE``: interrupted writes
  (an atomic write renames its temporary file into place, so an old one is
  a leftover; a young one may belong to a running checkpoint);
- git's ``index.lock`` when it is older than ``GIT_LOCK_AGE`` and no git
  process runs in the project (a crashed git leaves it, and every later
  git command then fails with 'File exists');
- caches matching the configured patterns (default ``__pycache__``,
  ``*.pyc``, ``*.pyo``, ``.pytest_cache``) outside ``.git``, the store,
  virtual environments and nested repositories.

Never removed: a file git tracks, anything under ``.git`` but that lock,
any checkpoint (records, refs and objects of the store), and rrstore's own
lock files in the store's ``locks/``: they are ``flock`` locks, which die
with their process, so a file there is never a stale leftover, whatever
'pid N' line an exclusive holder (every restore) left in it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fsutil import walk
from ..store.store import TMP_GRACE, sweep_tmp_if_idle

# As gc's default grace: a pull or an S3 export stages files in tmp/ for as
# long as the transfer takes, so only clearly abandoned ones go.
TMP_AGE = TMP_GRACE
GIT_LOCK_AGE = 600.0


@dataclass
class Removed:
    path: str
    kind: str  # "tmp", "git-lock" or "cache"
    files: int = 1
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "files": self.files, "bytes": self.bytes}


@dataclass
class CleanupResult:
    removed: list[Removed] = field(default_factory=list)
    kept_tracked: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def success(self) -> bool:
        return not self.errors

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    @property
    def message(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        files = sum(r.files for r in self.removed)
        text = f"cleanup {verb} {len(self.removed)} item(s) ({files} file(s)), freeing {self.bytes_freed} bytes"
        if self.kept_tracked:
            text += f"; kept {len(self.kept_tracked)} tracked file(s) that match a cache pattern"
        if self.errors:
            text += f"; {len(self.errors)} could not be removed"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"removed": [r.to_json() for r in self.removed], "bytes_freed": self.bytes_freed,
                "kept_tracked": self.kept_tracked, "errors": self.errors, "dry_run": self.dry_run}


@dataclass
class CleanupOptions:
    root: Path
    store_path: Path
    patterns: tuple[str, ...]
    dry_run: bool = False
    now: float | None = None


def cleanup(options: CleanupOptions) -> CleanupResult:
    """Remove (or with ``dry_run`` list) failed execution state; see the module docstring."""
    now = time.time() if options.now is None else options.now
    result = CleanupResult(dry_run=options.dry_run)
    _store_tmp(options, now, result)
    _git_index_lock(options, now, result)
    _caches(options, result)
    return result


def _rel(options: CleanupOptions, path: Path) -> str:
    try:
        return path.relative_to(options.root).as_posix()
    except ValueError:
        return str(path)


def _unlink(path: Path, options: CleanupOptions, result: CleanupResult) -> bool:
    if options.dry_run:
        return True
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        result.errors[_rel(options, path)] = exc.strerror or str(exc)
        return False


def _store_tmp(options: CleanupOptions, now: float, result: CleanupResult) -> None:
    """Sweep ``tmp/`` as writers do, only while no other rrstore uses the store (``sweep_tmp_if_idle``)."""
    swept = sweep_tmp_if_idle(options.store_path, now - TMP_AGE, dry_run=options.dry_run)
    if swept is None:
        return
    for path, size in swept.removed:
        result.removed.append(Removed(_rel(options, path), "tmp", 1, size))
    for path_text, why in swept.errors.items():
        result.errors[_rel(options, Path(path_text))] = why


def _git_processes_in(root: Path) -> bool | None:
    """Whether a git process works in ``root`` (None: cannot tell, e.g. no /proc)."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    real = os.path.realpath(root)
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        try:
            if (proc / pid / "comm").read_text().strip() not in ("git", "git-remote-http", "git-remote-https"):
                continue
            cwd = os.readlink(proc / pid / "cwd")
        except OSError:
            continue
        if cwd == real or cwd.startswith(real + os.sep):
            return True
    return False


def _git_index_lock(options: CleanupOptions, now: float, result: CleanupResult) -> None:
    lock = options.root / ".git" / "index.lock"
    try:
        st = lock.lstat()
    except OSError:
        return
    if now - st.st_mtime < GIT_LOCK_AGE or _git_processes_in(options.root) is not False:
        return
    if _unlink(lock, options, result):
        result.removed.append(Removed(_rel(options, lock), "git-lock", 1, st.st_size))


def _tracked(root: Path) -> set[str] | None:
    """Paths (relative to ``root``) git tracks, also when ``root`` is a folder inside a work tree."""
    from ..worktree.gitrepo import find_git_root, tracked_paths

    if find_git_root(root) is None:
        return None
    return tracked_paths(root)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _caches(options: CleanupOptions, result: CleanupResult) -> None:
    tracked = _tracked(options.root) or set()
    store_real = os.path.realpath(options.store_path)
    for top, dirs, files in walk(options.root):
        here = Path(top)
        keep_dirs = []
        for name in dirs:
            path = here / name
            if (name == ".git" or os.path.realpath(path) == store_real or (path / "pyvenv.cfg").exists()
                    or (path / ".git").exists()  # a nested repository or submodule: its own tracked files
                    or (path.is_symlink() and not _matches(name, options.patterns))):
                continue
            if _matches(name, options.patterns):
                _remove_tree(path, options, tracked, result)
            else:
                keep_dirs.append(name)
        dirs[:] = keep_dirs
        for name in files:
            if _matches(name, options.patterns):
                _remove_files([here / name], here / name, options, tracked, result)


def _remove_tree(path: Path, options: CleanupOptions, tracked: set[str], result: CleanupResult) -> None:
    if path.is_symlink():
        _remove_files([path], path, options, tracked, result)
        return
    files = []
    for top, _dirs, names in walk(path):
        files += [Path(top) / n for n in names]
        files += [Path(top) / d for d in _dirs if (Path(top) / d).is_symlink()]
    _remove_files(files, path, options, tracked, result, is_dir=True)


def _remove_files(files: list[Path], shown: Path, options: CleanupOptions, tracked: set[str],
                  result: CleanupResult, *, is_dir: bool = False) -> None:
    count = size = 0
    for path in files:
        rel = _rel(options, path)
        if rel in tracked:
            result.kept_tracked.append(rel)
            continue
        try:
            length = path.lstat().st_size
        except OSError:
            continue
        if _unlink(path, options, result):
            count += 1
            size += length
    if is_dir and not options.dry_run:
        for top, _dirs, _names in walk(shown, topdown=False):
            with contextlib.suppress(OSError):  # not empty: holds a tracked file, or something appeared
                os.rmdir(top)
    if count or (is_dir and not files):
        result.removed.append(Removed(_rel(options, shown) + ("/" if is_dir else ""), "cache", count, size))
