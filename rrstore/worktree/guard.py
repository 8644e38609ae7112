"""What a restore's scan saw of each path (beside snapshot): a path changed since is left alone.

A restore plans from one scan, which becomes its undo checkpoint. A file the
user edits after that scan holds bytes the undo checkpoint lacks, so
replacing or removing it would lose the edit for good. Before it touches an
existing path, restore asks ``ScanGuard.check`` with the lstat it takes
anyway: a regular file must have the stamp (size, mtime, ctime, inode, mode)
the scan recorded in the stat cache, a symlink the target the scan read, a
directory must still be one.

A stamp only proves "unchanged" when the file's last change lies before the
scan began (git's racy-clean rule, as the stat cache uses it): an edit in
the same clock tick as the scan's lstat keeps every field. Such a file, or
one with no recorded stamp, is hashed again (read stably, so its stamp is
trustworthy afterwards) and must still hold what the scan hashed. So is a
file whose ctime alone moved (same size, mtime, inode and mode): dropping a
hard link to it, as replacing another of its names does, moves its ctime.

What restore tells the stat cache about a file it changed must be true of
the file as it is: ``written_stamp`` gives the stamp only if nothing but
rrstore's own change (a rename, a chmod) happened to it since rrstore last
saw it.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable

from ..errors import TornRead
from ..store.objects import ObjectStore
from ..tree import DIR, SYMLINK, Entry
from .snapshot import store_file
from .statcache import Stamp, StatCache, stamp

CHANGED = "changed during the restore; left alone"


class Changed(OSError):
    """The path is not what the scan (and so the undo checkpoint) saw: touching it would lose data."""

    def __init__(self) -> None:
        super().__init__(0, CHANGED)


class ScanGuard:
    """The scan's view of the paths a restore may replace or remove, checked just before each change.

    ``scanned``: the scan's entries (the plan's current side); ``cache``: the stat cache that scan
    filled (a stamp per file it met), whose ``scan_start`` is the racy boundary: a ctime before it
    is at least a settle window before the scan's lstat, so any later edit moves it.
    ``check`` runs in the write pool's threads too.
    """

    def __init__(self, scanned: dict[str, Entry], cache: StatCache, objects: ObjectStore,
                 paths: Iterable[str]) -> None:
        """``paths``: those the plan may replace or remove (their stamps are looked up once, here)."""
        self.scanned = scanned
        self.objects = objects
        self.boundary = cache.scan_start
        entries = cache.entries
        self.stamps: dict[str, Stamp] = {p: entries[p].stamp for p in paths if p in entries}
        self.proven: set[str] = set()  # stamps taken by a settled read here: trusted however recent
        self._lock = threading.Lock()

    def check(self, path: str, full: str, st: os.stat_result) -> None:
        """Raise Changed unless ``st`` (an lstat of ``full``, taken now) shows what the scan saw."""
        entry = self.scanned.get(path)
        if entry is None:
            raise Changed()
        if entry.kind == DIR:
            if not stat.S_ISDIR(st.st_mode):
                raise Changed()
        elif entry.kind == SYMLINK:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(full) != entry.target:
                raise Changed()
        elif not stat.S_ISREG(st.st_mode):
            raise Changed()
        else:
            self._check_file(path, full, entry, st)

    def _check_file(self, path: str, full: str, entry: Entry, st: os.stat_result) -> None:
        now = stamp(st)
        with self._lock:
            seen, proven = self.stamps.get(path), path in self.proven
        if seen is not None and now != seen:
            if now[:2] != seen[:2] or now[3:] != seen[3:]:  # more than its ctime moved
                raise Changed()
        elif proven or (seen is not None and seen[2] < self.boundary):
            return
        try:  # racy, unknown or only its ctime moved: what is there must hash to what the scan hashed
            stored, read_st = store_file(full, self.objects, store=False, settle=True)
        except (TornRead, OSError):
            raise Changed() from None
        if (stored.oid, stored.chunks) != (entry.oid, entry.chunks) or stamp(read_st) != now:
            raise Changed()
        with self._lock:  # a settled read: a later edit moves ctime to a later tick
            self.stamps[path] = now
            self.proven.add(path)


def untouched(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether ``after`` shows the file ``before`` did, written to by nobody since: the same inode, size
    and mtime (its ctime moves with a chmod, a rename, a hard link made or dropped)."""
    return (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def with_exec(mode: int, executable: bool) -> int:
    """``mode``'s permission bits with the exec bit set (``x`` wherever ``r`` is) or cleared (every ``x``)."""
    mode &= 0o7777
    if executable:
        return mode | ((mode & 0o444) >> 2)
    return mode & ~0o111


def written_stamp(mine: os.stat_result, full: str, executable: bool) -> Stamp | None:
    """The stamp of ``full`` now, if it is the file rrstore left there with the exec bit ``executable``
    (``mine``: its stat when rrstore last saw it, before a rename or chmod); None if anyone else
    changed it meanwhile.

    The stat cache files the target's hash under this stamp: a stamp of someone's edit would make
    it call the edit the old bytes, and the next checkpoint would store those instead.
    """
    after = os.lstat(full)
    mode = with_exec(mine.st_mode, executable)
    if untouched(mine, after) and stat.S_IMODE(after.st_mode) == mode and stat.S_ISREG(after.st_mode):
        return stamp(after)
    return None
