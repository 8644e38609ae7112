"""Safe local writes (bottom layer): the one place that writes a file atomically.

Every durable write in rrstore goes through :class:`AtomicFile` (in the shape
of dulwich's ``GitFile``), or :func:`atomic_write` for bytes already in
memory: write to a unique temporary name (in the store's ``tmp`` directory,
or beside the destination), optionally fsync, then rename into place; on any
error the temporary file is removed. Readers therefore see either the old
file or the whole new one, never a prefix.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
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


class AtomicFile:
    """A file written in place of ``dest`` through a temporary file: the old file or the whole new one.

    Use it as a context manager (dulwich's ``GitFile``): writes stream to
    the temporary file; leaving the block without an exception installs it
    (``close``), and any exception (KeyboardInterrupt too) removes it
    (``abort``), leaving ``dest`` as it was. The temporary file is ``temp``,
    else a fresh name in ``tmp_dir``, else a hidden fresh name beside
    ``dest``. With ``fsync`` the file is flushed to disk before the rename
    and the directory after it. With ``exclusive`` an existing ``dest`` is
    never replaced (a hard link, not a rename): ``installed`` is then False
    and the temporary file is gone. ``finish`` and ``install`` split ``close``
    for a batch whose files must all arrive before any is renamed.
    Raises plain ``OSError``: callers name it (``errors.from_oserror``).
    """

    def __init__(self, dest: str | os.PathLike[str], tmp_dir: Path | None = None, *,
                 temp: str | os.PathLike[str] | None = None, fsync: bool = False, exclusive: bool = False,
                 mode: int = 0o644) -> None:
        self.dest = Path(dest)
        if temp is not None:
            self.temp = Path(temp)
        elif tmp_dir is not None:
            self.temp = temp_name(tmp_dir, self.dest.name)
        else:
            self.temp = self.dest.with_name(f".{self.dest.name[:40]}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        self.fsync, self.exclusive = fsync, exclusive
        self.installed = False
        self.fd: int | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:  # a signal right after the open must not leave the temporary file behind
            self.fd = os.open(self.temp, flags, mode)
        except FileExistsError:  # that name is another writer's file: leave it
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            raise

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError(f"{self.temp} is closed")
        return self.fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        fd = self.fileno()
        while view:
            view = view[os.write(fd, view):]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: writes go straight to the file (unbuffered)."""

    def finish(self) -> None:
        """Close the temporary file (fsynced first, with ``fsync``); not yet in place (``install``)."""
        fd, self.fd = self.fileno(), None
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def install(self) -> bool:
        """Rename the finished file onto ``dest`` (link, with ``exclusive``); False if ``dest`` was kept."""
        if self.exclusive:
            try:
                linked = _link_new(self.temp, self.dest)
            finally:  # linked or not, the temporary name goes
                if os.path.lexists(self.temp):
                    os.unlink(self.temp)
            if not linked:
                return False
        else:
            os.replace(self.temp, self.dest)  # if it fails, ``abort`` removes the temporary file
        self.installed = True
        if self.fsync:
            fsync_dir(self.dest.parent)
        return True

    def close(self) -> bool:
        """Finish and install; on any error the temporary file is removed and ``dest`` left as it was."""
        try:
            self.finish()
            return self.install()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard what was written: close and remove the temporary file (``dest`` is untouched)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.installed:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.abort()
        else:
            self.close()


def _link_new(temp: Path, dest: Path) -> bool:
    """Hard-link ``temp`` to ``dest`` unless ``dest`` exists (False then)."""
    try:
        os.link(temp, dest)
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
        os.replace(temp, dest)
    return True


def atomic_write(dest: Path, data: bytes, tmp_dir: Path, *, fsync: bool,
                 exclusive: bool = False, mode: int = 0o644) -> bool:
    """Write ``data`` to ``dest`` through a temporary file in ``tmp_dir`` (an ``AtomicFile``).

    With ``exclusive`` the final step is a hard link instead of a rename, so
    an existing ``dest`` is never replaced; returns False in that case.
    Raises the named errors of :mod:`rrstore.errors` for a full disk or a
    permission problem, after removing the temporary file.
    """
    try:
        with AtomicFile(dest, tmp_dir, fsync=fsync, exclusive=exclusive, mode=mode) as out:
            out.write(data)
    except OSError as exc:
        raise from_oserror(exc, str(dest)) from exc
    return out.installed


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
