"""``RollbackRecoverySystem``: the facade the seed's Python examples use.

It finds the project root and the store, and offers each verb as a method
returning a small result value. ``run(command, **kwargs)`` is the seed's
dispatcher: it never raises for rrstore errors, it returns a result whose
``success`` is False and whose ``message`` says why. The CLI calls the
methods directly so it can map errors to exit codes.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .checkpoint import (
    CheckpointManager,
    CheckpointResult,
    NewCheckpoint,
    ProjectView,
    latest_of,
    links_leading_out,
    others_note,
)
from .config import Settings, find_project_root, load_section, load_settings
from .diff import DiffResult, against_checkpoint, diff
from .errors import (
    CheckpointNotFound,
    RRStoreError,
    UsageError,
)
from .gc import GCResult, Retention, gc
from .lanes import check_lane
from .lock import locked
from .patch import Patch, checkpoint_patch
from .record import CheckpointRecord
from .restore import WORKTREE_LOCK, RestoreRequest, RestoreResult, restore_checkpoint
from .status import StatusResult, status
from .store.store import Store
from .tree import flatten
from .worktree.gitrepo import find_git_root
from .worktree.workers import Progress, default_workers

if TYPE_CHECKING:
    from .archive.files import ExportResult, ImportResult, VerifyResult
    from .backends.s3 import S3Backend, S3Options
    from .browse import Browser
    from .check import CheckOptions, CheckResult
    from .examine import Examined
    from .recovery.classify import Classification
    from .recovery.cleanup import CleanupResult
    from .recovery.planner import RecoveryPlan, RecoveryPlanner
    from .recovery.run import RetryPolicy, RunHooks, StepResult
    from .recovery.validate import ValidationResult
    from .recovery.vocabulary import FailureType
    from .recovery.workflow import WorkflowResult
    from .remote_gc import RemoteGCResult
    from .remoteconfig import RemoteSettings, RemoteTarget
    from .stats import StoreStats
    from .transfer import TransferResult


@dataclass
class ListResult:
    """The readable checkpoints, newest first; ``success`` is False when some records could not be read
    (``damaged``: id -> error), which hides none of the others."""

    checkpoints: list[CheckpointRecord]
    success: bool = True
    damaged: dict[str, RRStoreError] = field(default_factory=dict)
    # Checkpoints of other projects this view hides, and this project's identity (said when the view is empty).
    others: int = 0
    project: str = ""
    pinned: set[str] | None = None  # the store's pinned ids (None: not asked of a remote)

    @property
    def note(self) -> str | None:
        """One line for stderr when this project has none but other projects have some, else None."""
        return others_note(self.project, self.others) if self.others and not self.checkpoints else None

    @property
    def message(self) -> str:
        return "\n".join(f"{r.checkpoint_id}: {r.step_name} ({r.lane})" for r in self.checkpoints)


@dataclass
class FailedResult:
    """What ``run`` returns when the command raised an rrstore error."""

    message: str
    error: RRStoreError
    success: bool = False
    checkpoint_id: str | None = None
    checkpoints: list[CheckpointRecord] = field(default_factory=list)


def find_root(start: Path | None = None) -> Path:
    """The project root: the given directory, else the enclosing git work tree, else the nearest
    directory at or above cwd holding the store or an rrstore.toml (``find_project_root``), else cwd."""
    if start is not None:
        if not start.exists():
            raise UsageError(f"no such directory: {start}")
        if not start.is_dir():
            raise UsageError(f"not a directory: {start}")
        return start.resolve()
    cwd = Path.cwd()
    return find_git_root(cwd) or find_project_root(cwd) or cwd


class RollbackRecoverySystem:
    """Checkpoints, restores and inspects one project's working tree."""

    # Parses the 'rrstore ...' a plan override suggests (recovery.plans.CommandCheck); the CLI sets it.
    command_check: Callable[[list[str]], str | None] | None = None

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 store: str | os.PathLike[str] | None = None) -> None:
        self.root = find_root(Path(root) if root is not None else None)
        self.settings: Settings = load_settings(self.root)
        chosen = store if store is not None else os.environ.get("RRSTORE_DIR") or None
        self.store_path = Path(chosen).absolute() if chosen else self.root / self.settings.store
        self._store: Store | None = None
        self._remote_settings: RemoteSettings | None = None
        self.view = ProjectView(self.root)  # asks git only when a command needs it

    # plumbing ---------------------------------------------------------------

    def open_store(self, create: bool = False) -> Store:
        if self._store is None or not self._store.path.exists():
            self._store = Store.open(self.store_path, self.settings, create=create)
        return self._store

    @property
    def project(self) -> str:
        """This project's identity (``gitrepo.project_identity``: its remote, first commit or path),
        which its checkpoints carry; asked of git once per system."""
        return self.view.identity

    @property
    def checkpoint_manager(self) -> CheckpointManager:
        return CheckpointManager(self.root, self.open_store(), self.view)

    def _workers(self) -> int:
        return self.settings.workers or default_workers()

    def relative_paths(self, paths: Sequence[str]) -> list[str]:
        """User paths (relative to cwd or absolute) as root-relative tree paths."""
        out = []
        for raw in paths:
            full = Path(os.path.abspath(raw))
            try:
                rel = full.relative_to(self.root)
            except ValueError:
                raise UsageError(f"path is outside the project root {self.root}: {raw}") from None
            out.append("" if str(rel) == "." else rel.as_posix())
        return out

    # verbs ------------------------------------------------------------------

    def checkpoint(self, lane: str, step_number: int, step_name: str, *, success: bool | None = None,
                   error_message: str | None = None, progress: Progress | None = None,
                   strict: bool = False) -> CheckpointResult:
        """Record the working tree as a new checkpoint (creates the store if needed).

        ``success`` defaults to whether there is no ``error_message``: an error
        message records a failed step, and ``success=True`` with one is a UsageError.
        Venvs, cache directories and files that never settle while read are
        left out (``record.left_out``); with ``strict`` such a file raises
        TornRead instead and nothing is recorded.
        """
        check_lane(lane)
        if success is None:
            success = error_message is None
        elif success and error_message is not None:
            raise UsageError("a step recorded as successful cannot carry an error message "
                             "(an error message alone records a failed step)")
        return self.take_checkpoint(NewCheckpoint(lane, step_number, step_name, success, error_message,
                                                  strict=strict), progress)

    def take_checkpoint(self, spec: NewCheckpoint, progress: Progress | None = None) -> CheckpointResult:
        """``checkpoint`` with every field of the new record given (``run_step`` adds the workflow and
        the command it runs); the store is created if needed."""
        store = self.open_store(create=True)
        manager = CheckpointManager(self.root, store, self.view)
        with locked(store.path, WORKTREE_LOCK, exclusive=False), store.writing():
            record, snap = manager.create(spec, progress=progress)
        return CheckpointResult(record.checkpoint_id, record, skipped=snap.stats.skipped,
                                links_out=links_leading_out(snap.entries))

    def list(self, lane: str | None = None, *, all_projects: bool = False) -> ListResult:
        """This project's checkpoints (every project's with ``all_projects``), newest first."""
        if lane is not None:
            check_lane(lane)
        manager = self.checkpoint_manager
        every = manager.list_checkpoints(lane, all_projects=True)
        records = every if all_projects else self.view.mine(every)
        return ListResult(records, success=not manager.damaged, damaged=manager.damaged,
                          others=len(every) - len(records), project="" if all_projects else self.project,
                          pinned=set(manager.store.pins))

    def show(self, checkpoint_id: str) -> CheckpointRecord:
        return self.checkpoint_manager.get(checkpoint_id)

    def diff(self, old_id: str, new_id: str | None = None) -> DiffResult:
        """Changes from checkpoint ``old_id`` to ``new_id`` (default: the working tree)."""
        manager = self.checkpoint_manager
        objects = manager.store.objects
        with manager.explain_damage():
            old = manager.get(old_id)
            if new_id is None:  # what the checkpoint left out is no change (restore leaves it alone)
                return against_checkpoint(objects, old, manager.snapshot(store=False).entries)
            return diff(flatten(objects, old.state_hash), flatten(objects, manager.get(new_id).state_hash))

    def patch(self, old_id: str, new_id: str | None = None, *, context: int = 3) -> Patch:
        """``diff``'s changes with their content: ``Patch.chunks()`` is a git-style unified diff."""
        return checkpoint_patch(self.checkpoint_manager, old_id, new_id, context)

    def status(self, *, all_projects: bool = False) -> StatusResult:
        """The working tree's state hash and how it relates to this project's checkpoints (every
        project's with ``all_projects``)."""
        return status(self.checkpoint_manager, all_projects=all_projects)

    def restore(self, checkpoint_id: str, *, paths: Sequence[str] | None = None, dry_run: bool = False,
                undo: bool = True, progress: Progress | None = None, force: bool = False) -> RestoreResult:
        """Make the working tree (or ``paths`` of it) identical to a checkpoint.

        Unless ``dry_run``, the current state is checkpointed first (its id is
        ``undo_checkpoint_id``), so the restore itself can be undone: it holds
        every path the restore overwrites or deletes, ignored ones included,
        and each object it needs for them is read back first (see ``undo``).
        ``undo=False`` restores without it, also from a read-only store; with
        it, a store this process cannot write raises StoreReadOnly before
        anything changes. A full working tree raises RestoreDiskFull. Another project's
        checkpoint raises ForeignCheckpoint before anything changes unless ``force`` (a dry
        run plans it and carries the refusal in ``warnings``).
        """
        request = RestoreRequest(checkpoint_id, self.relative_paths(paths) if paths else None, tuple(paths or ()),
                                 dry_run, undo, force, self._workers())
        return restore_checkpoint(self.checkpoint_manager, request, progress)

    def gc(self, policy: Retention | None = None, *, now: datetime | None = None,
           dry_run: bool = False) -> GCResult:
        """Delete checkpoints the retention policy does not keep, then unreachable objects."""
        return gc(self.checkpoint_manager, policy or Retention(), now=now, dry_run=dry_run)

    def pin(self, checkpoint_id: str) -> tuple[str, bool]:
        """Exempt a checkpoint from gc: (its id, False if it was pinned already)."""
        manager = self.checkpoint_manager
        with manager.store.writing():  # not while a gc decides what to keep
            resolved = manager.get(checkpoint_id).checkpoint_id
            return resolved, manager.store.pins.add(resolved)

    def unpin(self, checkpoint_id: str) -> tuple[str, bool]:
        """Let gc's retention policy apply again: (its id, False if it was not pinned)."""
        manager = self.checkpoint_manager
        with manager.store.writing():
            resolved = manager.get(checkpoint_id).checkpoint_id
            return resolved, manager.store.pins.remove(resolved)

    def delete(self, checkpoint_ids: Sequence[str], *, force: bool = False) -> tuple[str, ...]:
        """Forget checkpoints, a damaged one too; a pinned one only with ``force`` (see ``gc.forget``)."""
        from .gc import forget

        return forget(self.checkpoint_manager, checkpoint_ids, force=force)

    def examine(self, checkpoint_id: str, *, read_data: bool = False) -> Examined:
        """``show``: one checkpoint's record, pin and every damage in it, named with its paths (see
        ``examine``); never raises for damage. An unknown id is CheckpointNotFound."""
        from .examine import examine

        manager = self.checkpoint_manager
        return examine(manager.store, manager.ref_id(checkpoint_id), read_data=read_data)

    def stats(self, top: int = 10) -> StoreStats:
        """Checkpoints, logical and stored sizes, dedup and compression, biggest files and directories,
        growth per day (see ``stats``); damage is counted and named in the result, never raised."""
        from .stats import stats

        return stats(self.checkpoint_manager, top=top)

    @property
    def browser(self) -> Browser:
        """ls, cat, dump, find and log over this project's checkpoints (``rrstore.browse``)."""
        from .browse import Browser

        return Browser(self.checkpoint_manager)

    def pinned(self) -> set[str]:
        return set(self.open_store().pins)

    # archives (rrstore/archive/, imported here only when used) --------------------------------
    # The imports inside the methods below are on purpose: measured with ``python -X importtime`` on
    # top of ``rrstore.system`` (2-core machine, busy), archive.files adds ~17 ms, transfer (boto3
    # only when a remote is opened) ~16 ms, recovery.workflow ~30 ms, recovery.validate ~38 ms and
    # recovery.planner ~28 ms to a command that needs none of them (a checkpoint at every step).

    def export(self, ids: Sequence[str], output: str | os.PathLike[str] | BinaryIO, fmt: str = "rrstore", *,
               progress: Progress | None = None, force: bool = False,
               endpoint_url: str | None = None) -> ExportResult:
        """Write checkpoints ``ids`` ('latest' allowed) to one archive, or one checkpoint's files as a .tar.zst.

        ``output`` may be ``s3://bucket/key``: the archive is written to the
        store's tmp/ first, complete and checked like any other, then uploaded.
        """
        from .archive import files as archive

        if isinstance(output, str) and output.startswith("s3://"):
            return self._export_to_s3(ids, output, fmt, progress, force, endpoint_url)

        if fmt not in ("rrstore", "tar"):
            raise UsageError(f"unknown archive format {fmt!r}: choose rrstore or tar")
        if fmt == "tar" and len(ids) != 1:
            raise UsageError("--format tar exports exactly one checkpoint")
        manager = self.checkpoint_manager
        with manager.explain_damage():
            records = [manager.get(checkpoint_id) for checkpoint_id in ids]
            if fmt == "tar":
                return archive.export_tar(manager.store, records[0], output, progress, force=force)
            return archive.export(manager.store, records, output, progress, force=force)

    def _export_to_s3(self, ids: Sequence[str], url: str, fmt: str, progress: Progress | None,
                      force: bool, endpoint_url: str | None) -> ExportResult:
        from .archive.location import s3_archive, s3_errors
        from .fsutil import temp_name

        remote, key = s3_archive(url, *self._s3_access(endpoint_url))
        with s3_errors(url, "write"):
            exists = remote.exists(key)
        if exists and not force:
            raise UsageError(f"{url} exists; --force replaces it")
        staging = temp_name(self.open_store().path / "tmp", "export")
        try:
            result = self.export(ids, staging, fmt, progress=progress, force=True)
            with s3_errors(url, "write"):
                remote.upload_file(key, str(staging))
        finally:
            staging.unlink(missing_ok=True)
        result.output = url
        return result

    def import_archive(self, path: str | os.PathLike[str], *, progress: Progress | None = None,
                       endpoint_url: str | None = None) -> ImportResult:
        """Add an archive's checkpoints, creating the store if needed, once the whole archive checks out.
        ``path`` may be ``s3://bucket/key`` (streamed, as for ``export``'s ``endpoint_url``)."""
        from .archive import files as archive

        endpoint, options = self._s3_access(endpoint_url)
        return archive.import_archive(lambda: self.open_store(create=True), path, progress,
                                      endpoint_url=endpoint, options=options)

    def verify_archive(self, path: str | os.PathLike[str], *, progress: Progress | None = None,
                       endpoint_url: str | None = None) -> VerifyResult:
        """Check an archive completely without importing it (no store needed); ``path`` may be
        ``s3://bucket/key``, streamed without a local copy."""
        from .archive import files as archive

        endpoint, options = self._s3_access(endpoint_url)
        return archive.verify_archive(path, progress, endpoint_url=endpoint, options=options)

    def _s3_access(self, endpoint_url: str | None) -> tuple[str | None, S3Options]:
        """The endpoint and boto3 options of an S3 URL that is not the remote (an archive, a repair's
        ``--from``): as for the remote (``--endpoint-url`` > ``[remote] endpoint_url``; region, profile,
        encryption, storage class)."""
        settings = self.remote_settings
        return endpoint_url or settings.endpoint_url, settings.options

    def check(self, options: CheckOptions | None = None) -> CheckResult:
        """Read the whole store and report every damage with the checkpoints it affects; with
        ``options.repair`` rebuild derived data (and replace damaged objects from ``options.source``).
        Opens a store whose config.json is missing, which ``open_store`` refuses."""
        from .check import CheckOptions, check, open_for_check

        options = options or CheckOptions()
        if (options.source or "").startswith("s3://"):  # as for push and pull
            endpoint, s3_options = self._s3_access(options.endpoint_url)
            options = replace(options, endpoint_url=endpoint, s3_options=s3_options)
        store = open_for_check(self.store_path, self.settings)
        if options.repair:
            from .repair import repair

            # opened only when asked: before the repair the store may lack the config.json it needs
            return repair(store, options, refill=lambda oids: self.checkpoint_manager.refill(oids))
        return check(store, options)

    # shared remote (rrstore/transfer.py, imported here only when used) -------------------------

    @property
    def push_setting(self) -> str:
        """``[remote] push``; "never" without reading the S3 layer when the project has no ``[remote]``
        table (every ``run`` and ``workflow`` step asks: importing it costs ~8 ms)."""
        if self._remote_settings is None and not load_section(self.root, "remote")[0]:
            return "never"
        return self.remote_settings.push

    @property
    def remote_settings(self) -> RemoteSettings:
        """The project's ``[remote]`` settings (``remoteconfig``), read and checked when first asked."""
        if self._remote_settings is None:
            from .remoteconfig import load_remote_settings

            self._remote_settings = load_remote_settings(self.root)
        return self._remote_settings

    def remote_target(self, remote: str | None = None, endpoint_url: str | None = None) -> RemoteTarget:
        """The remote a command uses: ``remote`` (``--remote``) > ``RRSTORE_REMOTE`` > ``[remote] url``;
        ``endpoint_url`` > ``[remote] endpoint_url`` > the AWS chain. UsageError when none is named."""
        from .remoteconfig import resolve_remote

        return resolve_remote(self.remote_settings, remote, endpoint_url)

    def open_remote(self, remote: str | None = None, endpoint_url: str | None = None) -> S3Backend:
        """The backend of ``remote_target(remote, endpoint_url)``, with the configured region, profile,
        encryption and storage class: every command that talks to a remote opens it here."""
        from .remote import open_remote

        target = self.remote_target(remote, endpoint_url)
        return open_remote(target.url, target.endpoint_url, target.options)

    def push(self, ids: Sequence[str], remote: str | None = None, endpoint_url: str | None = None, *,
             progress: Progress | None = None, rename_conflicts: bool = False) -> TransferResult:
        """Upload checkpoints (all when ``ids`` is empty) to ``remote`` (s3://bucket/prefix; None: the
        configured one, see ``remote_target``), sending only
        what it lacks. A remote id naming another record is a conflict in the result, never overwritten;
        with ``rename_conflicts`` the local checkpoint gets a new id and is pushed under it."""
        from . import transfer

        backend = self.open_remote(remote, endpoint_url)  # a bad or missing remote first: no request made
        manager = self.checkpoint_manager  # 'latest' is this project's newest
        ids = [manager.get(i).checkpoint_id if i == "latest" else i for i in ids]
        return transfer.push(manager.store, backend, ids, progress,
                             rename_conflicts=rename_conflicts)

    def pull(self, ids: Sequence[str], remote: str | None = None, endpoint_url: str | None = None, *,
             progress: Progress | None = None, all_projects: bool = False,
             rename_conflicts: bool = False) -> TransferResult:
        """Download checkpoints from ``remote`` (creating the local store if needed), fetching only what
        the store lacks; everything is verified before it becomes visible. 'latest' is this project's
        newest step checkpoint on the remote (with ``all_projects``, the remote's newest). A local id
        naming another record is a conflict; with ``rename_conflicts`` the local one gets a new id."""
        from . import transfer
        from .errors import NoProjectCheckpoint

        backend = self.open_remote(remote, endpoint_url)
        # every project's listing: pull takes any id, and a fresh runner may not be the project that pushed
        listing = shlex.join(["rrstore", "list", "--remote", *([remote] if remote else []),
                              *(["--endpoint-url", endpoint_url] if endpoint_url else []), "--all-projects"])
        try:
            if "latest" in ids:
                records = transfer.list_remote(backend, cache=self.store_path).checkpoints
                newest = latest_of(records, self.view, all_projects=all_projects).checkpoint_id
                ids = [newest if i == "latest" else i for i in ids]
            return transfer.pull(self.open_store(create=True), backend, ids, progress,
                                 rename_conflicts=rename_conflicts)
        except NoProjectCheckpoint as exc:  # the remote holds only other projects' checkpoints
            raise NoProjectCheckpoint(exc.checkpoint_id, exc.project, exc.others, where=backend.location,
                                      list_command=listing) from None
        except CheckpointNotFound as exc:  # name the remote, and how to list it (not the local store)
            raise CheckpointNotFound(exc.checkpoint_id, exc.suggestions, where=backend.location,
                                     list_command=listing) from None

    def gc_remote(self, remote: str | None = None, endpoint_url: str | None = None, policy: Retention | None = None, *,
                  dry_run: bool = False) -> RemoteGCResult:
        """Apply ``policy`` to the checkpoints on ``remote`` and delete what no kept one reaches, safely
        while other runners push (docs/remote-gc.md). This store's pins count too, when it exists."""
        from .remote_gc import gc_remote

        store = self.open_store() if (self.store_path / "config.json").is_file() else None
        return gc_remote(self.open_remote(remote, endpoint_url), policy or Retention(), store=store,
                         dry_run=dry_run)

    def pin_remote(self, checkpoint_id: str, remote: str | None = None, endpoint_url: str | None = None, *,
                   pinned: bool = True) -> bool:
        """Pin (``pinned``) or unpin a checkpoint on ``remote``: kept by every ``gc --remote``."""
        from .remote_gc import pin_remote

        return pin_remote(self.open_remote(remote, endpoint_url), checkpoint_id, pinned)

    def check_remote(self, remote: str | None = None, endpoint_url: str | None = None,
                     options: CheckOptions | None = None) -> CheckResult:
        """Verify every record, tree and content object the remote's refs reach (``read_data``: re-hashed)."""
        from .check import CheckOptions
        from .remote_check import check_remote

        return check_remote(self.open_remote(remote, endpoint_url), self.settings, self.store_path,
                            options or CheckOptions())

    def list_remote(self, remote: str | None = None, endpoint_url: str | None = None, lane: str | None = None, *,
                    all_projects: bool = False, pins: bool = False) -> ListResult:
        """This project's checkpoints stored on ``remote`` (every project's with ``all_projects``),
        newest first (no local store needed); ``pins``: the remote's pins too (one more LIST)."""
        from . import transfer
        from .store.refs import Pins

        if lane is not None:
            check_lane(lane)
        backend = self.open_remote(remote, endpoint_url)
        listing = transfer.list_remote(backend, lane, cache=self.store_path)
        records = listing.checkpoints if all_projects else self.view.mine(listing.checkpoints)
        return ListResult(records, success=not listing.damaged, damaged=listing.damaged,
                          others=len(listing.checkpoints) - len(records), project="" if all_projects else self.project,
                          pinned=set(Pins(backend)) if pins else None)

    # recovery (rrstore/recovery/, imported here only when used) ---------------------------------

    @property
    def recovery_planner(self) -> RecoveryPlanner:
        """The seed's ``system.recovery_planner.get_recovery_plan(FailureType.X, lane=...)``.

        Plans come from the project's configuration; restore commands name the
        newest successful step checkpoint of the lane (none without a store);
        every command is checked against this project (root, store).
        """
        from .recovery.planner import RecoveryPlanner
        from .recovery.settings import load_recovery_settings

        settings = load_recovery_settings(self.root, self.command_check)
        return RecoveryPlanner(settings.plans, self._newest_success, self.root, self.store_path, settings.docs_check)

    def _newest_success(self, lane: str) -> str | None:
        try:
            records = self.checkpoint_manager.list_checkpoints(lane)
        except RRStoreError:
            return None
        # a checkpoint taken while a merge (rebase, ...) waited holds conflict markers: never "last good"
        return next((r.checkpoint_id for r in records if r.kind == "step" and r.success and not r.git_operation),
                    None)

    def plan(self, failure_type: FailureType | str = "unknown", lane: str = "standard") -> RecoveryPlan:
        """The recovery plan for ``failure_type`` in ``lane``."""
        return self.recovery_planner.get_recovery_plan(failure_type, lane)

    def classify(self, output: str = "", exit_code: int | None = None) -> Classification:
        """The failure type of a step's ``output`` and ``exit_code``, with the evidence line."""
        from .recovery.classify import classify

        return classify(output, exit_code)

    def validate(self, verbose: bool = False, checkpoint_id: str | None = None) -> ValidationResult:
        """The seed's state checks and the store's health; ``success`` is False when one fails."""
        from .recovery.validate import validate

        return validate(self, verbose=verbose, checkpoint_id=checkpoint_id)

    def cleanup(self, dry_run: bool = False) -> CleanupResult:
        """Remove failed execution state (store leftovers, stale git lock, caches); never a tracked file."""
        from .recovery.cleanup import CleanupOptions, cleanup
        from .recovery.settings import load_recovery_settings

        patterns = load_recovery_settings(self.root).cache_patterns
        return cleanup(CleanupOptions(self.root, self.store_path, patterns, dry_run))

    def run_step(self, lane: str, step_number: int, step_name: str, command: str | Sequence[str], *,
                 policy: RetryPolicy | None = None, hooks: RunHooks | None = None) -> StepResult:
        """Checkpoint, run ``command`` (a string by the shell), classify, plan, retry; see recovery.run."""
        from .recovery.run import StepSpec, run_step

        return run_step(self, StepSpec(lane, step_number, step_name, command), policy, hooks)

    def workflow(self, lane: str, *, resume: bool = False, restore: bool = False,
                 from_step: int | str | None = None, strict: bool = False, remote: str | None = None,
                 endpoint_url: str | None = None, run: str | None = None,
                 hooks: RunHooks | None = None) -> WorkflowResult:
        """Run the lane's configured steps; ``resume`` continues the last run at the failed step.

        Resuming runs on the working tree as it is (the user's fix) and skips
        an earlier step only while its declared inputs are unchanged;
        ``from_step`` (a number or a step name) starts at that step instead;
        ``strict`` refuses (ResumeRefused) when the tree changed since the
        last good step; ``restore`` restores that state first (undoably).
        ``remote`` (s3://bucket/prefix) continues a run stored there, as on a
        fresh runner: the newest run of the lane on this git branch, or
        ``run`` (a ``record.run["id"]``), pulling only what the resume reads
        (RunNotFound when there is none). ``from_step``, ``restore``,
        ``remote`` and ``run`` imply ``resume``.
        """
        from .recovery.resume import ResumeOptions
        from .recovery.workflow import run_workflow

        options = ResumeOptions(resume, restore, from_step, strict, remote, endpoint_url, run)
        return run_workflow(self, lane, options, hooks)

    def run(self, command: str, /, **kwargs: Any) -> Any:
        """The seed's entry point: ``run('checkpoint', lane=..., step_number=..., step_name=...)``.

        ``command`` is positional only, so ``run('run', command='pytest -q', ...)`` passes the step's.
        Never raises for what the caller got wrong either: an unknown command or keywords the verb
        does not take give a FailedResult whose message names the valid choices.
        """
        verbs: dict[str, Callable[..., Any]] = {
            "checkpoint": self.checkpoint, "restore": self.restore, "list": self.list,
            "show": self.show, "diff": self.diff, "status": self.status, "gc": self.gc,
            "plan": self.plan, "classify": self.classify, "validate": self.validate,
            "cleanup": self.cleanup, "run": self.run_step, "workflow": self.workflow}
        try:
            verb = verbs.get(command)
            if verb is None:
                raise UsageError(f"unknown command {command!r}: choose one of {', '.join(verbs)}")
            signature = inspect.signature(verb)
            try:
                signature.bind(**kwargs)
            except TypeError as exc:  # the caller's keywords, not a TypeError from inside the verb
                raise UsageError(f"run({command!r}): {exc} (it takes: {', '.join(signature.parameters)})") from None
            return verb(**kwargs)
        except RRStoreError as exc:
            return FailedResult(str(exc), exc)
