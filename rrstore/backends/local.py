"""Local-directory backend: keys are files under the store directory."""

from __future__ import annotations

import os
import stat as stat_mode
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import from_oserror
from ..fsutil import atomic_write, fsync_dir, fsync_file, syncfs
from .base import check_key

# A key modified less than this long before it is listed gets an empty change token
# (``list_tokens``): a filesystem keeps times in coarse ticks, so a same-size rewrite within
# one tick could keep its inode, mtime, ctime and size (git's "racy" index entries).
RACY_NS = 2_000_000_000
# Up to this many files written since the last sync are fsynced one by one;
# beyond, one syncfs(2) is cheaper. A quiet re-checkpoint writes one record, a
# cold one a few packs; syncfs would also flush other programs' writes.
FSYNC_EACH_MAX = 64


class LocalBackend:
    """Keys as files below ``root``; temporary files live in ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.tmp = root / "tmp"
        self._prefix = f"{os.fspath(root)}/"
        self._dirs: set[Path] = set()
        self._unsynced: list[Path] = []
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise from_oserror(exc, str(path), "read") from exc

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise from_oserror(exc, str(path), "read") from exc
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def write(self, key: str, data: bytes, *, durable: bool = False,
              exclusive: bool = False) -> bool:
        path = self._path(key)
        self._ensure_dir(path.parent)
        done = atomic_write(path, data, self.tmp, fsync=durable, exclusive=exclusive)
        if done and not durable:
            with self._lock:
                if len(self._unsynced) <= FSYNC_EACH_MAX:
                    self._unsynced.append(path)
        return done

    def staging(self) -> Path:
        return self.tmp

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        """Rename ``path`` onto ``key``'s file (fsynced first and its directory after, with ``durable``)."""
        dest = self._path(key)
        self._ensure_dir(dest.parent)
        try:
            if durable:
                fsync_file(path)
            os.replace(path, dest)
            if durable:
                fsync_dir(dest.parent)
        except OSError as exc:
            raise from_oserror(exc, str(dest)) from exc
        if not durable:
            with self._lock:
                if len(self._unsynced) <= FSYNC_EACH_MAX:
                    self._unsynced.append(dest)

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._dirs:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_oserror(exc, str(folder), "create") from exc
        self._dirs.add(folder)

    def exists(self, key: str) -> bool:
        return os.path.isfile(f"{self._prefix}{check_key(key)}")

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")

    def list_tokens(self, prefix: str) -> Iterator[tuple[str, str]]:
        """``list`` with each key's ``f"{inode}:{mtime_ns}:{ctime_ns}:{size}"`` (one stat per key): a ref
        is replaced by a rename, so any update changes the inode or the ctime. Keys modified within
        ``RACY_NS`` of now get an empty token."""
        base = self.root / check_key(prefix.rstrip("/")) if prefix else self.root
        racy = time.time_ns() - RACY_NS
        yield from _scan_tokens(os.fspath(base), "" if not prefix else f"{prefix.rstrip('/')}/", racy)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise from_oserror(exc, str(self._path(key)), "delete") from exc

    def stat(self, key: str) -> tuple[int, float]:
        try:
            st = os.stat(f"{self._prefix}{check_key(key)}")
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        return st.st_size, st.st_mtime

    def version(self, prefix: str) -> object:
        try:
            st = os.stat(f"{self._prefix}{check_key(prefix.rstrip('/'))}")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)

    def sync(self) -> None:
        """Flush the files written since the last sync: one by one when few, else the whole filesystem."""
        with self._lock:
            paths, self._unsynced = self._unsynced, []
        if len(paths) > FSYNC_EACH_MAX:
            syncfs(self.root)
            return
        for path in paths:
            fsync_file(path)
        for folder in {path.parent for path in paths}:
            fsync_dir(folder)


def _scan_tokens(folder: str, rel: str, racy: int) -> Iterator[tuple[str, str]]:
    """Keys below ``folder`` (named ``rel`` + name) with their tokens, in ``list``'s order."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise from_oserror(exc, folder, "list") from exc
    folders = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            continue
        if stat_mode.S_ISDIR(st.st_mode):
            if not entry.is_symlink():  # as os.walk: a linked folder is not descended into
                folders.append(entry)
        elif stat_mode.S_ISREG(st.st_mode):
            token = "" if st.st_mtime_ns >= racy else f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_size}"
            yield f"{rel}{entry.name}", token
    for entry in folders:
        yield from _scan_tokens(entry.path, f"{rel}{entry.name}/", racy)
