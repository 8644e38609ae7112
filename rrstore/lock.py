"""Store locks (foundations): who may change the working tree right now.

Checkpoints share the work-tree lock, a restore holds it alone, so a
checkpoint never records a half-restored tree and two restores never
interleave. ``flock`` locks vanish with their process, so a killed rrstore
never leaves a stale lock behind (``rrstore cleanup`` leaves lock files
alone); a lock file removed by hand, or by an older rrstore's cleanup, is
harmless, as a lock is only taken once the file locked is still the one at
the path. On a store this process cannot write (restore ``--no-undo``
from read-only media), ``read_only`` locks an existing lock file through a
read-only descriptor, which ``flock`` allows, and goes on unlocked only when
there is no lock file and none can be made: then no rrstore can have taken
or take that lock in this store either, unless it can write where we cannot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PermissionDenied, RRStoreError, StoreLocked, from_oserror


@contextmanager
def locked(store_path: Path, name: str, *, exclusive: bool, wait: float = 30.0,
           claim: bool = True, read_only: bool = False) -> Iterator[None]:
    """Hold lock ``name`` of the store, waiting up to ``wait`` seconds for it.

    An exclusive holder writes its pid into the lock file (StoreLocked names
    it) unless ``claim`` is False: a lock held for an instant leaves the file as it was.
    ``read_only``: the store may be unwritable (see the module docstring).
    """
    folder = store_path / "locks"
    path = folder / f"{name}.lock"
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + wait
    fd = _open_readable(folder, path) if read_only else _open(folder, path)
    if fd is None:
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreLocked(str(store_path), _holder(fd)) from None
                time.sleep(0.05)
                continue
            if _still_there(fd, path):
                break
            # the file was removed between our open and flock: lock the new one
            fresh = _open_readable(folder, path) if read_only else _open(folder, path)
            if fresh is None:
                break
            os.close(fd)
            fd = fresh
        if exclusive and claim:
            with contextlib.suppress(OSError):  # only a hint for StoreLocked; a full disk or a read-only fd
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _open(folder: Path, path: Path) -> int:
    """Open (or create) the lock file; a symlink planted there is removed, never followed or truncated."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        folder.mkdir(exist_ok=True)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(path)  # a lock file is derived: a link in its place is replaced
            fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise from_oserror(exc, str(path), "lock") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RRStoreError(f"lock file {path} is not a regular file; remove it and retry")
    return fd


def _open_readable(folder: Path, path: Path) -> int | None:
    """``_open``, or where the store cannot be written, the existing lock file read-only (None: there is none)."""
    try:
        return _open(folder, path)
    except PermissionDenied:
        pass
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise from_oserror(exc, str(path), "lock") from exc


def _still_there(fd: int, path: Path) -> bool:
    """True when ``path`` is still the file ``fd`` locked (a lock on a removed file guards nothing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> str:
    """Who holds the lock, as it wrote itself ("pid N"); garbage in the file gives ""."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace")
    except OSError:
        return ""
    first = text.partition("\n")[0].strip()
    return first if first.startswith("pid ") and first[4:].isdigit() else ""
