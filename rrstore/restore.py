"""Restore (a verb): make the working tree's scope equal a checkpoint, with an undo point first.

First diff the working tree against the target, then change only what
differs: remove what the target lacks, create directories, write files that
differ (a new file is created in place; a file that exists is replaced
atomically through a temporary file and a rename), fix
exec bits and symlinks. An existing path that changed since the scan the plan
was made from (an edit the undo checkpoint lacks) is left alone and reported
as failed. The working-tree side of the diff is the scope plus
whatever is on disk at the target's paths (ignored or not), so an ignored
file is touched only where the target itself holds that path; a file that
appears where the plan saw nothing is left alone. Per-path failures are
collected and reported together instead of stopping at the first; a full
disk stops the restore (no file is left half-written).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import CheckpointManager, NewCheckpoint
from .errors import (
    DiskFull,
    ForeignCheckpoint,
    Interrupted,
    RestoreDiskFull,
    RRStoreError,
    Signalled,
    StoreReadOnly,
    UnsafeTree,
    UsageError,
)
from .fsutil import AtomicFile
from .heap import one_arena
from .lock import locked
from .record import CheckpointRecord
from .store.objects import ObjectStore
from .tree import DIR, MAX_PATH_BYTES, SYMLINK, Entry, check_paths, content_oids, flatten_except, split_below
from .worktree.guard import ScanGuard, with_exec, written_stamp
from .worktree.scan import store_prefixes, under, worktree_temp
from .worktree.snapshot import Snapshot, store_hashed
from .worktree.statcache import Stamp, stamp
from .worktree.workers import PARALLEL_MIN_SIZE, Progress, run_split

# Verified content kept between the verify and the write phase. Beyond it the write phase reads
# (and verifies) objects again, block by block: restore's memory does not grow with what it writes.
KEEP_BYTES = 8 << 20


@dataclass
class RestorePlan:
    remove: list[str] = field(default_factory=list)
    mkdir: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    symlink: list[str] = field(default_factory=list)
    chmod: list[str] = field(default_factory=list)
    unchanged: int = 0
    # Written paths where nothing was when planning: nothing there may be overwritten.
    absent: set[str] = field(default_factory=set)
    # Left-out paths (a venv, a cache, a file that never settled) -> why: neither they nor
    # anything below them is removed or written.
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.remove or self.mkdir or self.write or self.symlink or self.chmod)


@dataclass
class RestoreResult:
    checkpoint_id: str
    state_hash: str
    plan: RestorePlan
    dry_run: bool = False
    undo_checkpoint_id: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    no_undo: bool = False
    # What the caller must hear although nothing failed (a dry run of another project's checkpoint).
    warnings: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def message(self) -> str:
        p = self.plan
        verb = "would restore" if self.dry_run else "restored"
        if p.empty:
            kept = f" (left alone: {', '.join(p.kept)})" if p.kept else ""
            return f"working tree already matches {self.checkpoint_id}{kept}"
        done = self.done
        text = (f"{verb} {self.checkpoint_id}: {len(done(p.write))} written, {len(done(p.remove))} removed, "
                f"{len(done(p.mkdir))} dirs created, {len(done(p.symlink))} symlinks, "
                f"{len(done(p.chmod))} modes, {p.unchanged} unchanged")
        if p.kept:
            text += f"; left alone (left out of the scope): {', '.join(p.kept)}"
        if self.undo_checkpoint_id:
            text += f"; undo with: rrstore restore --checkpoint-id {self.undo_checkpoint_id}"
        elif self.no_undo and not self.dry_run:
            text += "; no undo checkpoint (--no-undo)"
        return text

    def done(self, paths: list[str]) -> list[str]:
        """Those of the plan's ``paths`` that were changed (or would be, in a dry run): not the failures."""
        return [p for p in paths if p not in self.failures] if self.failures else paths

    def to_json(self) -> dict[str, object]:
        p, done = self.plan, self.done
        return {"checkpoint_id": self.checkpoint_id, "state_hash": self.state_hash,
                "dry_run": self.dry_run, "undo_checkpoint_id": self.undo_checkpoint_id,
                "written": done(p.write), "removed": done(p.remove), "dirs_created": done(p.mkdir),
                "symlinks": done(p.symlink), "modes_changed": done(p.chmod), "unchanged": p.unchanged, "kept": p.kept,
                "failures": self.failures, "success": self.success, "warnings": self.warnings}


def in_paths(path: str, paths: list[str] | None) -> bool:
    return not paths or under(path, paths)  # no paths: the whole tree


def plan_restore(current: dict[str, Entry], target: dict[str, Entry],
                 paths: list[str] | None = None, keep: dict[str, str] | None = None) -> RestorePlan:
    """What must change so ``current`` becomes ``target`` (within ``paths``).

    ``keep``: left-out paths (the target record's ``left_out`` and the
    working tree's) -> why; nothing at or below one is removed or written,
    so a restore never rewinds a venv or deletes a log that was being written.
    """
    plan = RestorePlan(kept={p: why for p, why in sorted((keep or {}).items()) if p})  # "" would be the root
    holding = _parents_of(plan.kept)
    for path in sorted(current.keys() | target.keys()):
        if not in_paths(path, paths) or (plan.kept and under(path, plan.kept)):
            continue
        have, want = current.get(path), target.get(path)
        if path in holding and (want is None or want.kind != DIR):
            continue  # a directory holding a kept path is not removed or replaced
        if want is None:
            plan.remove.append(path)
            continue
        if have is not None and have.kind != want.kind:
            plan.remove.append(path)
            have = None
        if want.kind == DIR:
            if have is None:
                plan.mkdir.append(path)
            else:
                plan.unchanged += 1
        elif want.kind == SYMLINK:
            if have is None:
                plan.symlink.append(path)
            elif have.target != want.target:
                plan.remove.append(path)
                plan.symlink.append(path)
            else:
                plan.unchanged += 1
        elif have is None or have.oid != want.oid:
            plan.write.append(path)
            if path not in current:
                plan.absent.add(path)
        elif have.executable != want.executable:
            plan.chmod.append(path)
        else:
            plan.unchanged += 1
    if paths:
        _add_missing_parents(plan, current, target)
    plan.remove.sort(key=lambda p: (-p.count("/"), p))
    plan.mkdir.sort(key=lambda p: (p.count("/"), p))
    return plan


def _parents_of(paths: dict[str, str]) -> set[str]:
    """Every directory above ``paths`` (the root excluded)."""
    out: set[str] = set()
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in out:
            out.add(parent)
            parent = parent.rpartition("/")[0]
    return out


def _add_missing_parents(plan: RestorePlan, current: dict[str, Entry], target: dict[str, Entry]) -> None:
    """A subset restore creates the directories above its paths that are gone.

    A file or symlink standing where such a directory belongs goes first, as
    in a full restore (the undo checkpoint holds it).
    """
    wanted = set(plan.mkdir)
    removed = set(plan.remove)
    for path in [*plan.write, *plan.symlink, *plan.mkdir]:
        parent = path.rpartition("/")[0]
        while parent and parent not in wanted:
            have = current.get(parent)
            if have is not None and have.kind == DIR:
                break
            if target.get(parent) is not None and target[parent].kind == DIR:
                wanted.add(parent)
                plan.mkdir.append(parent)
                if have is not None and parent not in removed:
                    removed.add(parent)
                    plan.remove.append(parent)
            parent = parent.rpartition("/")[0]


class VerifiedContent:
    """Every object a plan writes, read and hash-checked before anything changes.

    A corrupt or missing object then stops the restore while the working tree
    is still untouched. Up to ``budget`` bytes of verified content are kept so
    a small restore does not read them twice; the rest is read again (and
    verified again, by ``ObjectStore.get``) one object at a time as it is
    written, so memory stays a few blocks whatever the size of the files.
    """

    def __init__(self, objects: ObjectStore, budget: int = KEEP_BYTES) -> None:
        self.objects = objects
        self.budget = budget
        self.kept: dict[str, bytes] = {}
        self.verified: set[str] = set()
        self._lock = threading.Lock()
        one_arena()  # see rrstore.heap (the scan before has set it already)

    def verify(self, target: dict[str, Entry], paths: list[str], workers: int) -> None:
        sizes: dict[str, int] = {}
        for path in paths:
            entry = target[path]
            for oid in content_oids(entry):
                if oid not in self.verified:
                    sizes[oid] = entry.size
        ordered = sorted(sizes, key=self.objects.locality)
        for _ in run_split(ordered, lambda oid: sizes[oid] >= PARALLEL_MIN_SIZE, self._check, workers):
            pass

    def _check(self, oid: str) -> None:
        data = self.objects.get(oid)
        with self._lock:
            self.verified.add(oid)
            if len(data) <= self.budget:
                self.budget -= len(data)
                self.kept[oid] = data

    def get(self, oid: str) -> bytes:
        data = self.kept.get(oid)
        return data if data is not None else self.objects.get(oid)


class _Writer:
    """Applies a plan below ``root``, refusing to write through symlinked parents."""

    def __init__(self, root: Path, objects: VerifiedContent, target: dict[str, Entry], absent: set[str],
                 guard: ScanGuard) -> None:
        self.root = root
        self.objects = objects
        self.target = target
        self.absent = absent
        self.guard = guard
        self.failures: dict[str, str] = {}
        self.stamps: dict[str, Stamp] = {}
        self._safe: set[str] = {""}

    def _check_parent(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        chain = []
        while parent not in self._safe:
            chain.append(parent)
            parent = parent.rpartition("/")[0]
        for folder in reversed(chain):
            st = os.lstat(self.root / folder)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, f"parent {folder} is not a directory")
            self._safe.add(folder)

    def remove(self, path: str) -> None:
        full = self.root / path
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        self.guard.check(path, os.fspath(full), st)
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(full)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or path in self.target:
                    raise
        else:
            os.unlink(full)

    def mkdir(self, path: str) -> None:
        self._check_parent(path)
        try:
            os.mkdir(self.root / path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(self.root / path).st_mode):
                raise
        self._safe.add(path)

    def write(self, path: str) -> None:
        """Write one file: created in place when new, else replaced atomically by rename.

        A new file needs no rename (nothing to protect); creating it with
        O_EXCL and the final mode saves three system calls per file, which is
        most of a restore into an empty tree.
        """
        entry = self.target[path]
        self._check_parent(path)
        full = f"{self.root}/{path}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(full, flags, 0o777 if entry.executable else 0o666)
        except FileExistsError:
            if path in self.absent:  # it appeared after planning: not in the undo checkpoint
                raise OSError(errno.EEXIST, "appeared during the restore; left alone") from None
            self._replace(path, entry, full)
            return
        try:
            self._fill(fd, entry)
            self.stamps[path] = stamp(os.fstat(fd))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(full)
            raise
        os.close(fd)

    def _replace(self, path: str, entry: Entry, full: str) -> None:
        """Replace an existing file, unless it changed since the scan (``guard``): the user's edit is in
        no checkpoint. A large file is checked again just before the rename, its write having taken time."""
        st = os.lstat(full)
        self.guard.check(path, full, st)
        mode = with_exec(st.st_mode, entry.executable)
        tmp = f"{full.rpartition('/')[0]}/{worktree_temp(entry.name)}"
        if len(os.fsencode(tmp)) > MAX_PATH_BYTES:  # a file just short of PATH_MAX: its temp goes in the root
            tmp = f"{self.root}/{worktree_temp(entry.name)}"
        out = AtomicFile(full, temp=tmp, mode=0o600)
        try:  # on any error, the temporary file is removed
            self._fill(out.fileno(), entry)
            os.fchmod(out.fileno(), mode)
            mine = os.fstat(out.fileno())
            out.finish()
            if entry.size >= PARALLEL_MIN_SIZE:
                self.guard.check(path, full, os.lstat(full))
            out.install()
        except BaseException:
            out.abort()
            raise
        self._remember(path, mine, full)

    def _fill(self, fd: int, entry: Entry) -> None:
        for oid in content_oids(entry):
            view = memoryview(self.objects.get(oid))
            while view:
                view = view[os.write(fd, view):]

    def symlink(self, path: str) -> None:
        self._check_parent(path)
        os.symlink(self.target[path].target, self.root / path)

    def chmod(self, path: str) -> None:
        """Change a file's exec bit, unless it changed since the scan (``guard``) or has it already (a hard link)."""
        self._check_parent(path)
        full = f"{self.root}/{path}"
        st = os.lstat(full)
        mode = with_exec(st.st_mode, self.target[path].executable)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode:
            return  # another name of this file got the new exec bit: nothing to change
        self.guard.check(path, full, st)
        os.chmod(full, mode)
        self._remember(path, st, full)

    def _remember(self, path: str, mine: os.stat_result, full: str) -> None:
        """Keep for the stat cache the stamp of ``full``, unless changed since ``mine`` (before a rename, chmod)."""
        written = written_stamp(mine, full, self.target[path].executable)
        if written is not None:
            self.stamps[path] = written

    def write_sized(self, path: str) -> int:
        """Write ``path`` (a failure is listed); its size, for progress in bytes."""
        self.attempt(self.write, path)
        return self.target[path].size

    def attempt(self, action: Callable[[str], None], path: str) -> None:
        try:
            action(path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # every later write would fail too
                raise DiskFull(f"{self.root}/{path}") from exc
            self.failures[path] = exc.strerror or str(exc)


def apply_plan(root: Path, content: VerifiedContent, target: dict[str, Entry], plan: RestorePlan,
               *, workers: int, guard: ScanGuard,
               progress: Progress | None = None) -> tuple[dict[str, str], dict[str, Stamp]]:
    """Carry out ``plan``: (path -> reason for every path that failed, path -> stat just after writing it).

    ``content`` has verified every object already. Small files are written in
    this thread and large ones in a pool (see ``workers``). A full disk raises
    DiskFull naming the file (removed, never left half-written). An existing
    path that changed since the scan the plan was made from (``guard``) is
    left alone and listed as failed; one changed right after rrstore gets no stat.
    """
    writer = _Writer(root, content, target, plan.absent, guard)
    for path in plan.remove:
        writer.attempt(writer.remove, path)
    for path in plan.mkdir:
        writer.attempt(writer.mkdir, path)
    large = lambda path: target[path].size >= PARALLEL_MIN_SIZE  # noqa: E731
    locality = content.objects.locality
    ordered = sorted(plan.write, key=lambda path: locality(content_oids(target[path])[0]))
    total, done = sum(target[path].size for path in ordered), 0
    for size in run_split(ordered, large, writer.write_sized, workers):
        if progress is not None:
            done += size
            progress(done, total)
    for path in plan.symlink:
        writer.attempt(writer.symlink, path)
    for path in plan.chmod:
        writer.attempt(writer.chmod, path)
    return writer.failures, writer.stamps


def check_target(root: Path, store: Path, checkpoint_id: str, target: dict[str, Entry]) -> None:
    """Refuse, before anything is written, a target tree holding a path that is never written.

    Whatever made the tree (an older rrstore, a store written by hand), a
    ``.git`` or ``.checkpoints`` at any depth, or the store's own path when
    the store lives inside ``root``, makes the whole restore an UnsafeTree
    (exit 17): no undo checkpoint, no file touched. Symlinks are not judged
    here: a local checkpoint may hold any link the working tree held.
    """
    try:
        check_paths(checkpoint_id, target, store_prefixes(root, store))
    except UnsafeTree as exc:
        raise exc.with_lead("restore refused, nothing was changed") from None


# the verb: plan, verify, undo point, write --------------------------------------------------------------

# The git operations (``gitrepo.OPERATIONS``) that stop on a conflict, leaving markers in files.
CONFLICTING = ("merge", "rebase", "cherry-pick", "revert")
WORKTREE_LOCK = "worktree"  # checkpoints share it, a restore holds it alone (see rrstore.lock)


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore and how; ``paths`` are tree paths (None: the whole tree), ``shown`` as the user gave them."""

    checkpoint_id: str
    paths: list[str] | None = None
    shown: tuple[str, ...] = ()
    dry_run: bool = False
    undo: bool = True
    force: bool = False
    workers: int = 1


def writable(store: Path) -> bool:
    """Whether this process may write the store (``os.access`` knows read-only mounts and permissions)."""
    folders = [store, *(store / sub for sub in ("objects", "packs", "refs/checkpoints", "tmp", "locks"))]
    return all(os.access(folder, os.W_OK) for folder in folders if folder.exists())


def restore_checkpoint(manager: CheckpointManager, request: RestoreRequest,
                       progress: Progress | None = None) -> RestoreResult:
    """Make the working tree (or ``request.paths`` of it) identical to a checkpoint, under the locks.

    A dry run only reads (a read-only store, beside a running restore). With
    ``undo`` a store this process cannot write raises StoreReadOnly before
    anything changes; see ``RollbackRecoverySystem.restore`` for the rest.
    """
    if request.dry_run:
        with manager.explain_damage():
            return _restore(manager, request, progress)
    store = manager.store
    if request.undo and not writable(store.path):
        raise StoreReadOnly(str(store.path))
    with (locked(store.path, WORKTREE_LOCK, exclusive=True, read_only=not request.undo),
          store.writing(read_only=not request.undo), manager.explain_damage()):
        return _restore(manager, request, progress)


def _restore(manager: CheckpointManager, request: RestoreRequest, progress: Progress | None) -> RestoreResult:
    """Plan from one hash-only scan of the working tree, which then becomes the undo checkpoint
    (``store_hashed``); only the target's directories that differ from the scan's are read."""
    root, record = manager.root, manager.get(request.checkpoint_id)
    manager.store.objects.list_loose()  # every tree and file read below: found in the pack index, no loose probe
    storing = request.undo and not request.dry_run
    snap = manager.snapshot(store=False, git_state=storing, save_cache=False)
    side = _Sides(manager, record, snap, request.paths)
    check_target(root, manager.store.path, record.checkpoint_id, side.target)
    foreign = None
    if not request.force and not manager.owns(record):
        foreign = ForeignCheckpoint(record.checkpoint_id, record.project, record.root, manager.project)
        if not request.dry_run:
            raise foreign
    tree_paths = request.paths
    if tree_paths and not side.holds(tree_paths):
        raise UsageError(f"{', '.join(request.shown)}: not in checkpoint {record.checkpoint_id}")
    # Whatever is on disk at the target's paths, ignored or not, is part of the working-tree side,
    # except below what the record left out: restore leaves that alone. A path below a directory both
    # sides share is in the scope already; one elsewhere that the scan did not hold but is on disk
    # (an ignored file the target has) needs a scan that holds it.
    left_out = {p for p in record.left_out if p}  # "" (the root) is never left out
    held = [p for p in side.target if in_paths(p, tree_paths) and not under(p, left_out)]
    if any(p not in snap.entries and os.path.lexists(f"{root}/{p}") for p in held):
        snap = manager.snapshot(store=False, extra=held, git_state=storing, save_cache=False)
        side = _Sides(manager, record, snap, request.paths)
        check_target(root, manager.store.path, record.checkpoint_id, side.target)
    plan = side.plan(tree_paths, {**snap.left_out, **record.left_out})
    result = RestoreResult(record.checkpoint_id, record.state_hash, plan, request.dry_run,
                           no_undo=not request.undo)
    result.warnings.extend(_warnings(record, foreign))
    cache = manager.stat_cache()
    if request.dry_run or plan.empty:
        cache.save(snap.seen)  # the scan is used: nothing was refused
        return result
    content = VerifiedContent(manager.store.objects)
    content.verify(side.target, plan.write, request.workers)
    if request.undo:  # only now, with every needed object known good
        write, removed = set(plan.write), set(plan.remove)
        if not store_hashed(snap, str(root), manager.store.objects,
                            lambda p: p in write or (bool(removed) and under(p, removed))):
            # a file changed since the scan: scan again, storing, and plan from what is there now
            snap = manager.snapshot(store=True, extra=held)
            side = _Sides(manager, record, snap, request.paths)
            check_target(root, manager.store.path, record.checkpoint_id, side.target)
            result.plan = plan = side.plan(tree_paths, {**snap.left_out, **record.left_out})
            content.verify(side.target, plan.write, request.workers)
        result.undo_checkpoint_id = _undo_point(manager, record, snap, plan, request.workers)
    target = side.target
    guard = ScanGuard(side.current, cache, manager.store.objects,
                      [p for p in [*plan.remove, *plan.write, *plan.chmod] if p not in plan.absent])
    try:
        result.failures, stamps = apply_plan(root, content, target, plan, workers=request.workers,
                                             progress=progress, guard=guard)
    except DiskFull as exc:
        raise RestoreDiskFull(exc.path, result.undo_checkpoint_id) from exc
    except (KeyboardInterrupt, Signalled) as exc:  # the tree is partly restored: say how to undo it
        raise Interrupted(record.checkpoint_id, result.undo_checkpoint_id,
                          getattr(exc, "exit_code", 130)) from None
    written = {p: (target[p].oid, target[p].chunks, stamps[p]) for p in [*plan.write, *plan.chmod]
               if p in stamps and p not in result.failures}
    cache.remember_written(str(root), written, keep=snap.seen)  # one write: the scan's files and these
    return result


class _Sides:
    """The two sides of a restore's plan, without what they share.

    ``target``: the checkpoint's entries, read only where its trees differ from the scan's (a
    directory whose tree both sides share keeps its own entry, nothing below it). ``current``: the
    scan's entries less what lies below those shared directories.
    """

    def __init__(self, manager: CheckpointManager, record: CheckpointRecord, snap: Snapshot,
                 paths: list[str] | None = None) -> None:
        known = {p: e.oid for p, e in snap.entries.items() if e.kind == DIR}
        known[""] = snap.root_oid
        self.target, shared = flatten_except(manager.store.objects, record.state_hash, known,
                                             None if not paths or "" in paths else set(paths))
        self.current: dict[str, Entry] = snap.entries
        self.below: list[str] = []  # the scan's paths below a shared directory (the same on both sides)
        if shared:
            self.current, self.below = split_below(snap.entries, set(shared))

    def holds(self, paths: list[str]) -> bool:
        """Whether the checkpoint holds anything at or below ``paths``."""
        return any(in_paths(p, paths) for p in self.target) or any(in_paths(p, paths) for p in self.below)

    def plan(self, paths: list[str] | None, kept: dict[str, str]) -> RestorePlan:
        """``plan_restore`` of the two sides; the shared paths count as unchanged, as it counts them."""
        plan = plan_restore(self.current, self.target, paths, kept)
        keep = {p for p in kept if p}
        plan.unchanged += sum(1 for p in self.below if in_paths(p, paths) and not (keep and under(p, keep)))
        return plan


def _warnings(record: CheckpointRecord, foreign: ForeignCheckpoint | None) -> list[str]:
    """What a restore of ``record`` says before it writes: another project's, or taken mid-conflict."""
    said = [str(foreign)] if foreign is not None else []
    if record.git_operation in CONFLICTING:
        head = f" (MERGE_HEAD {record.git_merge_head[:7]})" if record.git_merge_head else ""
        said.append(f"checkpoint {record.checkpoint_id} was taken during a {record.git_operation}"
                    f"{head}: its files may hold conflict markers")
    return said


def _undo_point(manager: CheckpointManager, record: CheckpointRecord, snap: Snapshot, plan: RestorePlan,
                workers: int) -> str:
    """Record the scan the plan was made from (its objects stored) as the undo checkpoint, and prove
    it holds what the plan changes: its id."""
    spec = NewCheckpoint(record.lane, record.step_number, f"before restore to {record.checkpoint_id}",
                         kind="pre-restore")
    undo = manager.record_snapshot(spec, snap)
    try:
        from .undo import at_risk, prove_undo  # only a restore that writes needs it (start-up time)

        prove_undo(manager.store, manager.root, snap, undo, at_risk(plan, snap.entries), workers)
    except RRStoreError:
        with contextlib.suppress(RRStoreError, KeyError):
            manager.store.refs.delete(undo.checkpoint_id)  # nothing was restored: no undo point either
        raise
    return undo.checkpoint_id
