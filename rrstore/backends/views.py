"""Read-only views of a backend (wrap a backend, like restic's caching layers), used by transfers.

``ListedView`` answers from one listing taken up front: a key not listed is
missing without a request, and prefetched keys (pack indexes) are kept. On S3 that
saves a round trip for every object looked up in the wrong place, and reads
each pack index once per transfer. ``OverlayView`` puts the local store in
front of such a view, so objects are read from wherever they already are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import RRStoreError
from .base import Backend


class ListedView:
    """A backend seen through one listing: keys not listed are missing without a request.

    Keys read by ``prefetch`` are kept, so they are fetched once however
    many readers load them.
    """

    def __init__(self, backend: Backend, keys: set[str]) -> None:
        self.backend = backend
        self.keys = keys
        self.location = backend.location
        self._cache: dict[str, bytes] = {}

    def read(self, key: str) -> bytes:
        if key not in self.keys:
            raise KeyError(key)
        cached = self._cache.get(key)
        return cached if cached is not None else self.backend.read(key)

    def prefetch(self, keys: list[str], workers: int) -> None:
        """Read ``keys`` in parallel and keep them (small, immutable, read several times: pack indexes)."""
        def fetch(key: str) -> None:
            with contextlib.suppress(KeyError):
                self._cache[key] = self.backend.read(key)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(fetch, keys):
                pass

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if key not in self.keys:
            raise KeyError(key)
        return self.backend.read_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return key in self.keys

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(k for k in self.keys if k.startswith(prefix)))

    def list_tokens(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Tokens are not kept from the listing: an empty token each (never cached)."""
        return ((key, "") for key in self.list(prefix))

    def version(self, prefix: str) -> object:
        return "listed once"

    def write(self, key: str, data: bytes, *, durable: bool = False, exclusive: bool = False) -> bool:
        raise RRStoreError(f"internal: {self.location} is read-only here")

    def delete(self, key: str) -> None:
        raise RRStoreError(f"internal: {self.location} is read-only here")

    def staging(self) -> Path:
        return self.backend.staging()

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        raise RRStoreError(f"internal: {self.location} is read-only here")

    def stat(self, key: str) -> tuple[int, float]:
        return self.backend.stat(key)

    def sync(self) -> None:
        pass


class OverlayView(ListedView):
    """Local keys first, then the remote's (read-only): trees are read from wherever they are."""

    def __init__(self, local: Backend, remote: ListedView) -> None:
        super().__init__(remote, remote.keys)
        self.local = local
        self.remote = remote

    def read(self, key: str) -> bytes:
        try:
            return self.local.read(key)
        except KeyError:
            return self.remote.read(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.local.read_range(key, offset, length)
        except KeyError:
            return self.remote.read_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return key in self.keys or self.local.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(set(self.local.list(prefix)) | {k for k in self.keys if k.startswith(prefix)}))
