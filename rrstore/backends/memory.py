"""In-memory backend (lowest storage layer): a dict of keys, for fast contract tests; the CLI never uses it.

It answers as ``LocalBackend`` does: the same ``ValueError`` for invalid
keys, ``KeyError`` for missing ones, exclusive writes that never replace a
key, and listings in the order of a top-down directory walk (a folder's
keys by name, then its sub-folders by name). Folders are implied by keys
and, as on disk, stay once made (``version`` of an emptied folder is not
None).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .base import check_key


def walk_order(key: str) -> tuple[tuple[int, str], ...]:
    """Sort key giving ``LocalBackend.list``'s order: in each folder, keys by name before sub-folders by name."""
    *folders, name = key.split("/")
    return (*((1, folder) for folder in folders), (0, name))


class MemoryBackend:
    """Keys and their bytes in a dict; ``location`` names it in messages."""

    def __init__(self, location: str = "memory:") -> None:
        self.location = location
        self._values: dict[str, tuple[bytes, float]] = {}
        self._folders: dict[str, int] = {}  # folder -> changes to its direct keys (version)
        self._lock = threading.Lock()
        self._writes = 0  # every write gets the next number: its change token
        self._tokens: dict[str, int] = {}

    def read(self, key: str) -> bytes:
        return self._get(key)[0]

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self._get(key)[0][offset:offset + length]

    def write(self, key: str, data: bytes, *, durable: bool = False, exclusive: bool = False) -> bool:
        check_key(key)
        with self._lock:
            if exclusive and key in self._values:
                return False
            self._values[key] = (bytes(data), time.time())
            self._writes += 1
            self._tokens[key] = self._writes
            self._touch(key)
        return True

    def staging(self) -> Path:
        return Path(tempfile.gettempdir())

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        """Take the file's bytes in as the value of ``key`` and remove the file."""
        self.write(key, Path(path).read_bytes(), durable=durable)
        os.unlink(path)

    def exists(self, key: str) -> bool:
        return check_key(key) in self._values

    def list(self, prefix: str) -> Iterator[str]:
        folder = f"{check_key(prefix.rstrip('/'))}/" if prefix else ""
        with self._lock:
            keys = [key for key in self._values if key.startswith(folder)]
        yield from sorted(keys, key=walk_order)

    def list_tokens(self, prefix: str) -> Iterator[tuple[str, str]]:
        """``list`` with each key's write number as its token (every write changes it)."""
        folder = f"{check_key(prefix.rstrip('/'))}/" if prefix else ""
        with self._lock:
            found = [(key, str(self._tokens[key])) for key in self._values if key.startswith(folder)]
        yield from sorted(found, key=lambda item: walk_order(item[0]))

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            if self._values.pop(key, None) is None:
                raise KeyError(key)
            self._touch(key)

    def stat(self, key: str) -> tuple[int, float]:
        data, mtime = self._get(key)
        return len(data), mtime

    def version(self, prefix: str) -> object:
        with self._lock:
            changes = self._folders.get(check_key(prefix.rstrip("/")))
        return None if changes is None else (prefix, changes)

    def sync(self) -> None:
        """Nothing to flush: every write is in place when it returns."""

    def _get(self, key: str) -> tuple[bytes, float]:
        try:
            return self._values[check_key(key)]
        except KeyError:
            raise KeyError(key) from None

    def _touch(self, key: str) -> None:
        """Count a change in the folder of ``key``, making missing folders as ``mkdir -p`` would
        (a new folder is a change in its parent). The caller holds the lock."""
        parts = key.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:depth])
            known = folder in self._folders
            self._folders[folder] = self._folders.get(folder, 0) + 1
            if known:
                break
