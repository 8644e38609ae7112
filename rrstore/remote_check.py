"""``check --remote``: verify what a remote's refs reach (verbs layer, beside ``check`` and ``remote_gc``).

The remote is read as a store over its backend (``Store.over``) by the same ``check.Checker`` as a
local store: every ref, record and tree is read and hash-checked, every content object must be in
an indexed pack or loose, and with ``read_data`` every one is downloaded and re-hashed. It holds a
shared ``check`` lease while it reads (a remote gc waits for it; without write access it reads
unleased and says so), so a gc never removes a checkpoint under it.

What a killed gc or push leaves behind is garbage, not damage: a pack without its index, or a
pack or loose object that no checkpoint reaches, is a note (exit 0). Damage that a checkpoint
reaches is a problem naming it (exit 13).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .backends import Backend
from .check import Checker, CheckOptions, CheckResult, Problem
from .config import Settings
from .errors import PermissionDenied, RRStoreError, StoreConfigDamaged
from .remote import RemoteNotFound, check_remote_config
from .remote_lease import Lease
from .store.store import Store

GARBAGE = ("index-missing", "pack-block-damaged")


class RemoteChecker(Checker):
    """``Checker`` over a remote: its config.json is read by key, and leftovers no checkpoint reaches are notes."""

    def __init__(self, remote: Backend, settings: Settings, scratch: Path, options: CheckOptions) -> None:
        super().__init__(Store.over(remote, settings, scratch), options)
        self.remote = remote
        self.result.store = remote.location

    def _config(self) -> None:
        try:
            check_remote_config(self.remote)
        except RemoteNotFound:
            raise
        except StoreConfigDamaged as exc:
            self.index_problems.append(Problem("config-damaged", "config.json", str(exc)))
        except RRStoreError as exc:
            self.index_problems.append(Problem("config-invalid", "config.json", str(exc)))

    def run(self) -> CheckResult:
        result = super().run()
        garbage = [p for p in result.problems if p.kind in GARBAGE and not p.checkpoints]
        for problem in garbage:
            result.problems.remove(problem)
            result.notes.append(f"garbage: {problem.target}: {problem.reason} (no checkpoint reaches it; "
                                "rrstore gc --remote removes it)")
        return result


def check_remote(remote: Backend, settings: Settings, scratch: Path, options: CheckOptions) -> CheckResult:
    """Check the remote under a shared lease; RemoteNotFound if it holds no store. ``scratch``: a local
    directory the store object may name (nothing is written there)."""
    check_remote_config(remote)
    with _lease(remote) as note:
        result = RemoteChecker(remote, settings, scratch, options).run()
    if note:
        result.notes.append(note)
    return result


@contextlib.contextmanager
def _lease(remote: Backend) -> Iterator[str]:
    """A ``check`` lease, or none (with the note why) where the credentials may only read."""
    try:
        lease = Lease(remote, "check")
        lease.acquire()
    except PermissionDenied:
        yield "no lease taken (read-only access): a gc running meanwhile could make a removed checkpoint look damaged"
        return
    try:
        yield ""
    finally:
        lease.release()
