"""Safe local writes (bottom layer): the one place that writes a file atomically.

Every durable write in rrstore goes through :func:`atomic_write`: write to a
unique temporary name in the destination's ``tmp`` directory, optionally
fsync, then rename into place. Readers therefore see either the old file or
the whole new one, never a prefix.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import from_oserror

_libc: Any = None
_NO_HARDLINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every dirty page of the filesystem holding ``path`` in one call.

    Used to make a batch of object writes durable before the ref that reaches
    them is written, instead of one fsync per object.
    """
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    if not _libc or not hasattr(_libc, "syncfs"):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def temp_name(tmp_dir: Path, hint: str = "") -> Path:
    return tmp_dir / f"{hint[:16]}.{os.getpid()}.{os.urandom(6).hex()}.tmp"


def atomic_write(dest: Path, data: bytes, tmp_dir: Path, *, fsync: bool,
                 exclusive: bool = False, mode: int = 0o644) -> bool:
    """Write ``data`` to ``dest`` through a temporary file in ``tmp_dir``.

    With ``exclusive`` the final step is a hard link instead of a rename, so
    an existing ``dest`` is never replaced; returns False in that case.
    Raises the named errors of :mod:`rrstore.errors` for a full disk or a
    permission problem, after removing the temporary file.
    """
    tmp = temp_name(tmp_dir, dest.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_HARDLINKS:
                    raise
                # vfat, exFAT and some network mounts have no hard links: fall
                # back to check-then-rename, exclusive except against a racer
                # on such a filesystem.
                if os.path.lexists(dest):
                    return False
                os.replace(tmp, dest)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        else:
            os.replace(tmp, dest)
        if fsync:
            fsync_dir(dest.parent)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise from_oserror(exc, str(dest)) from exc


def walk(top: str | os.PathLike[str], *, topdown: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` without recursion: Python 3.11's recurses, and fails on trees ~1,000 levels deep.

    Same shape and rules: symlinks to directories are listed in ``dirnames``
    but never entered; top-down, the caller may prune ``dirnames`` in place.
    Directories that cannot be listed are skipped.
    """
    stack: list[tuple[str, tuple[list[str], list[str]] | None]] = [(os.fspath(top), None)]
    while stack:
        folder, listing = stack.pop()
        if listing is not None:
            yield folder, *listing
            continue
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        dirs = [e.name for e in entries if _is_dir(e)]
        files = [e.name for e in entries if not _is_dir(e)]
        if topdown:
            yield folder, dirs, files
        else:
            stack.append((folder, (dirs, files)))
        for name in reversed(dirs):
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                stack.append((path, None))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
