"""The backend protocol (lowest storage layer): bytes by key, nothing else.

A key is a '/'-separated relative name such as ``objects/ab/cdef…`` or
``refs/checkpoints/ID``. Backends know nothing of hashes, compression or
checkpoints; every backend passes the same contract tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Backend(Protocol):
    """Storage for a store's keys. Missing keys raise ``KeyError``."""

    location: str

    def read(self, key: str) -> bytes: ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the value)."""
        ...

    def write(self, key: str, data: bytes, *, durable: bool = False,
              exclusive: bool = False) -> bool:
        """Store ``data`` under ``key`` atomically.

        ``durable`` makes this write survive a power cut before returning;
        ``exclusive`` refuses to replace an existing key and returns False.
        """
        ...

    def staging(self) -> Path:
        """A local directory for files on their way to ``install`` (local: the store's ``tmp/``,
        on the same filesystem, so that installing is a rename)."""
        ...

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        """Store the finished local file at ``path`` (in ``staging()``) under ``key``, atomically,
        and take the file away: a value larger than memory never passes through it.

        ``durable`` as for ``write``. On failure ``key`` is as it was; ``path`` may remain.
        """
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in '/')."""
        ...

    def list_tokens(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every key under ``prefix`` with a change token: a string that differs whenever the key's
        value may have changed (a cache of what a key held is valid while its token is the same).

        Local: inode, mtime, ctime and size; S3: the ETag and size the listing returns (no extra
        request). An empty token means "changed too recently to tell": never cache it.
        Same keys and order as ``list``.
        """
        ...

    def delete(self, key: str) -> None: ...

    def stat(self, key: str) -> tuple[int, float]:
        """(size in bytes, modification time as a Unix timestamp); KeyError if missing."""
        ...

    def version(self, prefix: str) -> object:
        """A value that changes when keys under ``prefix`` are added or removed, or None if unknown."""
        ...

    def sync(self) -> None:
        """Make every earlier non-durable write durable (a write barrier)."""
        ...


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (``..``, absolute, empty parts)."""
    if not key or key[0] == "/" or "\0" in key or "//" in key or key[-1] == "/" or (
            "." in key and any(p in (".", "..") for p in key.split("/"))):
        raise ValueError(f"invalid store key: {key!r}")
    return key
