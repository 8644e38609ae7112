"""A store (store layer, composing the rest of it): backend + objects + refs + its config.

``config.json`` marks a directory as a store and records the format. The
store ignores itself (a ``.gitignore`` of ``*``), so it never shows in
``git status`` of the project it sits in.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import Backend, LocalBackend
from ..config import Settings
from ..errors import RRStoreError, StoreConfigDamaged, StoreConfigMissing, StoreNotFound, UsageError, from_oserror
from ..fsutil import atomic_write
from ..lock import locked
from .objects import ObjectStore
from .refs import Pins, Refs

# Format 2 (issue 8): refs carry their local add time on a second line, packs are RRPK2 (self-describing
# blocks). This rrstore reads format 1 too and upgrades its config.json on the first write, so an older
# rrstore meets a clear "unsupported store format" instead of refs and packs it would misread.
STORE_FORMAT = "rrstore-store-2"
READABLE_FORMATS = ("rrstore-store-1", STORE_FORMAT)
_NEWER_FORMAT = re.compile(r"rrstore-store-[0-9]+")
OBJECTS_LOCK = "objects"
# How long a checkpoint or restore waits for a running gc before giving up.
GC_WAIT = 600.0
# Temporary files younger than this may belong to a running write (gc's default grace).
TMP_GRACE = 900.0


@dataclass
class Store:
    path: Path
    backend: Backend
    objects: ObjectStore
    refs: Refs
    settings: Settings
    pins: Pins
    format: str = STORE_FORMAT

    @classmethod
    def open(cls, path: Path, settings: Settings, *, create: bool = False) -> Store:
        """Open the store at ``path``; with ``create`` make it if it does not exist."""
        if path.exists() and not path.is_dir():
            raise UsageError(f"store path is not a directory: {path}")
        config = path / "config.json"
        if not config.is_file():
            if holds_store_data(path):
                raise StoreConfigMissing(str(path))
            if not create:
                raise StoreNotFound(str(path))
            _init(path)
            found = STORE_FORMAT
        else:
            found = _check_config(config)
        return cls.over(LocalBackend(path), settings, format=found)

    @classmethod
    def over(cls, backend: Backend, settings: Settings, path: Path | None = None, *,
             format: str = STORE_FORMAT) -> Store:
        """One database over any backend: objects, refs and pins share ``backend`` and ``settings``.

        Checks nothing (``open`` checks the config; ``check`` opens a store
        that lacks one). ``path`` is the local directory of the store's
        locks and ``tmp/``: a ``LocalBackend``'s root unless given; another
        backend needs one for ``writing`` and ``collecting``.
        """
        if path is None:
            if not isinstance(backend, LocalBackend):
                raise TypeError(f"Store.over({backend.location}): give the local path of its locks")
            path = backend.root
        objects = ObjectStore(backend, settings.compression_level, durable=settings.fsync == "always",
                              sync_packs=settings.fsync != "never")
        refs = Refs(backend, durable=settings.fsync != "never")
        return cls(path, backend, objects, refs, settings, Pins(backend), format)

    @contextmanager
    def writing(self, *, read_only: bool = False) -> Iterator[None]:
        """Shared object lock: held while objects are written or a checkpoint's objects are read.

        gc takes it exclusively, so it never sweeps an object that an
        in-flight checkpoint reuses or a running restore still needs. A
        writer waits for a running gc up to ``GC_WAIT`` seconds, then reloads
        the pack indexes, since that gc may have rewritten packs. First it
        sweeps what killed operations left in ``tmp/`` (``sweep_leftovers``).
        ``read_only``: only reading, maybe from a store it cannot write (see ``lock``).
        """
        if not read_only:
            self.sweep_leftovers()
            self._upgrade_format()
        with locked(self.path, OBJECTS_LOCK, exclusive=False, wait=GC_WAIT, read_only=read_only):
            self.objects.reload()
            yield

    def sweep_leftovers(self, now: float | None = None) -> int:
        """Remove ``tmp/`` files older than ``TMP_GRACE``, if no other rrstore is using the store.

        Run by every writer (checkpoint, restore, import, pull) on its way in,
        so killed operations' leftovers do not pile up until a gc. Only when
        the object lock is free right now (taken exclusively without waiting):
        a running pull may keep staged files in ``tmp/`` longer than the grace.
        Costs one listing of ``tmp/``; never fails the command (a read-only
        store or a busy one is simply not swept). Returns the files removed.
        """
        swept = sweep_tmp_if_idle(self.path, (time.time() if now is None else now) - TMP_GRACE)
        return 0 if swept is None else len(swept.removed)

    def _upgrade_format(self) -> None:
        """Before the first write, a format-1 store's config says format 2 (what this rrstore writes)."""
        if self.format == STORE_FORMAT:
            return
        config = self.path / "config.json"
        try:
            (self.path / "tmp").mkdir(exist_ok=True)  # a store made by hand or by another tool may lack it
            atomic_write(config, upgraded_config(config.read_bytes()), self.path / "tmp", fsync=True)
        except OSError as exc:
            raise from_oserror(exc, str(config), "write") from exc
        self.format = STORE_FORMAT

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
        write_config(path)
    except OSError as exc:
        raise from_oserror(exc, str(path), "create") from exc


def write_config(path: Path) -> bool:
    """Write the store's ``config.json`` (what marks ``path`` as a store); False if one is there already.

    ``_init`` uses it for a new store, and ``check --repair`` to give a
    damaged store (objects and refs, no config) its config back. Never
    replaces an existing config.
    """
    tmp = path / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_oserror(exc, str(tmp), "create") from exc
    doc = {"format": STORE_FORMAT, "hash": "blake3-256", "compression": "zstd",
           "object_path": "objects/<oid[0:2]>/<oid[2:]>"}
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return atomic_write(path / "config.json", data, tmp, fsync=True, exclusive=True)


def holds_store_data(path: Path) -> bool:
    """Whether ``path`` holds any object, pack or ref: then, without config.json, it is a damaged store.

    Only asked when config.json is missing; stops at the first file found.
    """
    for sub in ("refs", "packs", "objects"):
        for _top, _dirs, files in os.walk(path / sub):
            if files:
                return True
    return False


@dataclass
class TmpSweep:
    """What one sweep of a store's ``tmp/`` removed (or, dry, would remove): (path, size) pairs."""

    removed: list[tuple[Path, int]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def sweep_tmp(path: Path, before: float, *, dry_run: bool = False) -> TmpSweep:
    """Remove the files in store ``path``'s ``tmp/`` last changed before ``before`` (a timestamp).

    Every write goes through a temporary file there and renames it into
    place, so an old one is what a killed operation left; a young one may
    belong to a running write. One listing of ``tmp/``, one lstat per entry.
    The one sweeper of ``tmp/``: gc, cleanup and every writer call it.
    """
    result = TmpSweep()
    try:
        entries = list(os.scandir(path / "tmp"))
    except OSError:
        return result
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= before:
                continue
            if not dry_run:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.errors[entry.path] = exc.strerror or str(exc)
            continue
        result.removed.append((Path(entry.path), st.st_size))
    return result


def sweep_tmp_if_idle(path: Path, before: float, *, dry_run: bool = False) -> TmpSweep | None:
    """``sweep_tmp`` only while no other rrstore uses store ``path`` (its object lock taken exclusively,
    without waiting): a pull running longer than the grace keeps its staged files in ``tmp/``.
    None when the store is busy or the lock cannot be taken (a read-only store): left to the next writer."""
    try:
        with locked(path, OBJECTS_LOCK, exclusive=True, wait=0, claim=False):
            return sweep_tmp(path, before, dry_run=dry_run)
    except (RRStoreError, OSError):
        return None


def upgraded_config(data: bytes) -> bytes:
    """A format-1 ``config.json`` as format 2, its other settings kept."""
    doc = json.loads(data)
    doc["format"] = STORE_FORMAT
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _check_config(config: Path) -> str:
    """The store format ``config`` names (one this rrstore reads), or the error saying why not."""
    try:
        data = config.read_bytes()
    except OSError as exc:
        raise from_oserror(exc, str(config), "read") from exc
    return check_config(data, str(config))


def check_config(data: bytes, where: str, *, remote: bool = False) -> str:
    """The store format a ``config.json`` holding ``data`` names, if this rrstore reads it; else the error.

    The one check of a store's config, local (``where`` is the file: damage
    is StoreConfigDamaged, exit 13, which ``check --repair`` fixes) or
    ``remote`` (``where`` is the remote's location: a plain error, since no
    local repair fixes a remote).
    """
    try:
        doc = json.loads(data)
    except ValueError:
        if remote:
            raise RRStoreError(f"{where}/config.json is not valid JSON; is this an rrstore store?") from None
        raise StoreConfigDamaged(where, "is not valid JSON") from None
    found = doc.get("format") if isinstance(doc, dict) else (doc if remote else None)
    if found in READABLE_FORMATS:
        return str(found)
    if remote:
        raise RRStoreError(f"{where}: unsupported store format {found!r}")
    if isinstance(found, str) and _NEWER_FORMAT.fullmatch(found):
        raise RRStoreError(f"{where}: unsupported store format {found!r} (made by a newer rrstore?)")
    raise StoreConfigDamaged(where, f"does not name a store format (format: {found!r:.40})")
