"""Staged downloads (verbs layer, for ``transfer.pull``): files that become visible together or not at all.

A pull downloads every file into the store's ``tmp/``, verified, and only
once all arrived renames them into place, objects and packs before indexes;
a pull that fails on the way removes what it staged, so the store is as it was.
"""

from __future__ import annotations

import threading
from types import TracebackType

from .errors import from_oserror
from .fsutil import AtomicFile, syncfs
from .store.store import Store


class Staging:
    """Verified downloads in the store's ``tmp/``, renamed into place together once all arrived.

    Each is an ``AtomicFile`` finished but not installed; leaving the block
    with an exception removes them all, so a failed pull changes nothing.
    """

    def __init__(self, store: Store) -> None:
        self.root = store.path
        self.tmp = store.path / "tmp"
        self.files: list[tuple[AtomicFile, str]] = []
        self.lock = threading.Lock()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.discard()

    def add(self, key: str, data: bytes) -> None:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            out = AtomicFile(self.root / key, self.tmp, mode=0o666)
            try:
                out.write(data)
                out.finish()
            except BaseException:
                out.abort()
                raise
        except OSError as exc:
            raise from_oserror(exc, str(self.tmp)) from exc
        with self.lock:
            self.files.append((out, key))

    def discard(self) -> None:
        for out, _ in self.files:
            out.abort()
        self.files.clear()

    def install(self, durable: bool) -> None:
        """Rename into place: objects and packs first, indexes last (an index makes its pack visible).

        With ``durable``, one syncfs afterwards, before any ref may point at them
        (the store's batch discipline: no ref ever reaches a file not yet on disk).
        """
        ordered = sorted(self.files, key=lambda f: (f[1].endswith(".idx"), f[1]))
        try:
            for out, _ in ordered:
                out.dest.parent.mkdir(parents=True, exist_ok=True)
                out.install()
        except OSError as exc:
            self.discard()
            raise from_oserror(exc, str(self.root)) from exc
        self.files.clear()
        if durable and ordered:
            syncfs(self.root)
