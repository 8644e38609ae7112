"""A store on disk (composition layer): backend + objects + refs + its config.

``config.json`` marks a directory as a store and records the format. The
store ignores itself (a ``.gitignore`` of ``*``), so it never shows in
``git status`` of the project it sits in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .backends import LocalBackend
from .config import Settings
from .errors import RRStoreError, StoreNotFound, UsageError, from_oserror
from .fsutil import atomic_write
from .lock import locked
from .objects import ObjectStore, hash_bytes
from .refs import Pins, Refs
from .statcache import StatCache

STORE_FORMAT = "rrstore-store-1"
OBJECTS_LOCK = "objects"
# How long a checkpoint or restore waits for a running gc before giving up.
GC_WAIT = 600.0


@dataclass
class Store:
    path: Path
    backend: LocalBackend
    objects: ObjectStore
    refs: Refs
    settings: Settings
    pins: Pins

    @classmethod
    def open(cls, path: Path, settings: Settings, *, create: bool = False) -> Store:
        """Open the store at ``path``; with ``create`` make it if it does not exist."""
        if path.exists() and not path.is_dir():
            raise UsageError(f"store path is not a directory: {path}")
        config = path / "config.json"
        if not config.is_file():
            if not create:
                raise StoreNotFound(str(path))
            _init(path)
        else:
            _check_config(config)
        backend = LocalBackend(path)
        objects = ObjectStore(backend, settings.compression_level, durable=settings.fsync == "always",
                              sync_packs=settings.fsync != "never")
        refs = Refs(backend, durable=settings.fsync != "never")
        return cls(path, backend, objects, refs, settings, Pins(backend))

    def stat_cache(self, root: Path) -> StatCache:
        """The stat cache of work tree ``root`` (a store may serve several)."""
        name = hash_bytes(os.fsencode(os.path.realpath(root)))[:16]
        return StatCache(self.path / "cache" / f"stat-{name}", self.path / "tmp", root).load()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Shared object lock: held while objects are written or a checkpoint's objects are read.

        gc takes it exclusively, so it never sweeps an object that an
        in-flight checkpoint reuses or a running restore still needs. A
        writer waits for a running gc up to ``GC_WAIT`` seconds, then reloads
        the pack indexes, since that gc may have rewritten packs.
        """
        with locked(self.path, OBJECTS_LOCK, exclusive=False, wait=GC_WAIT):
            self.objects.reload()
            yield

    def collecting(self, wait: float = 30.0) -> AbstractContextManager[None]:
        """Exclusive object lock, for gc."""
        return locked(self.path, OBJECTS_LOCK, exclusive=True, wait=wait)

    def barrier(self) -> None:
        """Objects written so far become durable before a ref may point at them."""
        if self.settings.fsync == "batch":
            self.objects.sync()


def _init(path: Path) -> None:
    try:
        for sub in ("objects", "packs", "refs/checkpoints", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        tmp = path / "tmp"
        if not (path / ".gitignore").exists():
            atomic_write(path / ".gitignore", b"# rrstore store: never part of a snapshot\n*\n", tmp, fsync=True)
        doc = {"format": STORE_FORMAT, "hash": "blake3-256", "compression": "zstd",
               "object_path": "objects/<oid[0:2]>/<oid[2:]>"}
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(path / "config.json", data, tmp, fsync=True, exclusive=True)
    except OSError as exc:
        raise from_oserror(exc, str(path), "create") from exc


def _check_config(config: Path) -> None:
    try:
        doc = json.loads(config.read_bytes())
    except OSError as exc:
        raise from_oserror(exc, str(config), "read") from exc
    except ValueError:
        raise RRStoreError(f"{config} is not valid JSON; is this an rrstore store?") from None
    if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else doc
        raise RRStoreError(f"{config}: unsupported store format {found!r}")

