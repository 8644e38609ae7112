"""Errors callers branch on (bottom layer: imported by every other module).

Each error carries its facts as fields and a one-line message. The CLI maps
each class to an exit code through ``exit_code``; that table is the single
source of the codes documented in ``rrstore --help``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping, Sequence


class RRStoreError(Exception):
    """Base of every error rrstore raises on purpose."""

    exit_code = 1
    summary = "error (the message says what failed)"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def details(self) -> dict[str, object]:
        """Facts beyond the message for the JSON error object (``--json``); most errors have none."""
        return {}


class UsageError(RRStoreError):
    """Bad input from the caller: unknown lane, bad option value, bad path."""

    exit_code = 2
    summary = "bad usage: unknown option, lane, path or value"


class PartialFailure(RRStoreError):
    """The operation finished but some items failed (listed in the message)."""

    exit_code = 3
    summary = "partly done: some paths failed (listed)"


class StoreNotFound(RRStoreError):
    exit_code = 10
    summary = "no store at the given location"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"no rrstore store at {path} (create one with 'rrstore checkpoint', "
            "or point --store / RRSTORE_DIR at an existing store)"
        )
        self.path = path


class StoreLocked(RRStoreError):
    exit_code = 11
    summary = "store locked by another rrstore"

    def __init__(self, path: str, holder: str = "") -> None:
        who = f" by {holder}" if holder else ""
        super().__init__(f"store is locked{who}: {path}; wait for the other rrstore to finish")
        self.path = path
        self.holder = holder


class CheckpointNotFound(RRStoreError):
    exit_code = 12
    summary = "checkpoint not found"

    def __init__(self, checkpoint_id: str, suggestions: Sequence[str] = (), *, where: str = "",
                 list_command: str = "rrstore list") -> None:
        """``where`` names a remote the id was looked up on; ``list_command`` lists what is there."""
        listing = f"'{list_command}' to see {'its' if where else 'the'} checkpoints"
        if not suggestions:
            hint = f"; run {listing}"
        else:
            hint = "; did you mean " + ", ".join(suggestions) + "?" + (f" Run {listing}" if where else "")
        place = f" on {where}" if where else ""
        super().__init__(f"Checkpoint not found{place}: {checkpoint_id}{hint}")
        self.checkpoint_id = checkpoint_id
        self.suggestions = list(suggestions)
        self.where = where
        self.list_command = list_command


class PathNotFound(UsageError):
    """A path a checkpoint's tree does not hold (``ls``, ``cat``, ``dump``): bad input, exit 2."""

    def __init__(self, checkpoint_id: str, path: str, suggestions: Sequence[str] = ()) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else f"; rrstore ls {checkpoint_id} lists it"
        super().__init__(f"no path {path!r} in checkpoint {checkpoint_id}{hint}")
        self.checkpoint_id = checkpoint_id
        self.path = path
        self.suggestions = list(suggestions)


class ObjectMissing(RRStoreError):
    exit_code = 13

    def __init__(self, oid: str, checkpoints: Iterable[str] = ()) -> None:
        self.oid = oid
        self.checkpoints = list(checkpoints)
        super().__init__(self._text())

    def _text(self) -> str:
        affected = ", ".join(self.checkpoints) if self.checkpoints else "unknown"
        return f"object {self.oid} is missing from the store (affected checkpoints: {affected})"

    def with_checkpoints(self, checkpoints: Iterable[str]) -> ObjectMissing:
        return ObjectMissing(self.oid, checkpoints)


class MissingBehindIndex(ObjectMissing):
    """An object in no readable index while some pack index is damaged: it may be behind it."""

    def __init__(self, oid: str, damaged: Iterable[str], checkpoints: Iterable[str] = ()) -> None:
        self.damaged = list(damaged)
        super().__init__(oid, checkpoints)

    def _text(self) -> str:
        packs = ", ".join(self.damaged)
        return f"{super()._text()}; the index of pack {packs} is damaged: run rrstore check --repair"

    def with_checkpoints(self, checkpoints: Iterable[str]) -> ObjectMissing:
        return MissingBehindIndex(self.oid, self.damaged, checkpoints)


class CorruptObject(RRStoreError):
    """An object whose bytes do not hash to its id, or do not decode."""

    exit_code = 13
    summary = "store damaged: an object is corrupt or missing"

    def __init__(self, oid: str, actual: str = "", reason: str = "",
                 checkpoints: Iterable[str] = ()) -> None:
        self.oid = oid
        self.actual = actual
        self.reason = reason
        self.checkpoints = list(checkpoints)
        super().__init__(self._text())

    def _text(self) -> str:
        why = self.reason or f"content hashes to {self.actual}"
        affected = ", ".join(self.checkpoints) if self.checkpoints else "unknown"
        return f"corrupt object {self.oid}: {why} (affected checkpoints: {affected})"

    def with_checkpoints(self, checkpoints: Iterable[str]) -> CorruptObject:
        return CorruptObject(self.oid, self.actual, self.reason, checkpoints)


class ContentDamaged(RRStoreError):
    """``cat`` stopped at a missing or corrupt piece of a file: what it wrote before is not to be trusted."""

    exit_code = 13

    def __init__(self, checkpoint_id: str, path: str, written: int, cause: RRStoreError) -> None:
        after = (f"{written} byte(s) were written before it stopped: they are not to be trusted" if written
                 else "nothing was written")
        super().__init__(f"cannot read {path!r} of checkpoint {checkpoint_id}: {cause}; {after}")
        self.checkpoint_id = checkpoint_id
        self.path = path
        self.written = written
        self.cause = cause

    def details(self) -> dict[str, object]:
        return {"checkpoint_id": self.checkpoint_id, "path": self.path, "written": self.written}


class StoreDamaged(RRStoreError):
    """An operation that must see the whole store stopped at damage, before changing anything."""

    exit_code = 13

    def __init__(self, lead: str, cause: RRStoreError) -> None:
        super().__init__(f"{lead}: {cause}")
        self.cause = cause


UNREADABLE_WAY_OUT = "run 'rrstore check --repair' (it moves a checkpoint that cannot be read to quarantine/)"


class CheckpointsUnreadable(RRStoreError):
    """A listing whose readable checkpoints were all shown, but some records could not be read."""

    exit_code = 13

    def __init__(self, damaged: Mapping[str, Exception]) -> None:
        self.damaged = {checkpoint_id: str(exc) for checkpoint_id, exc in sorted(damaged.items())}
        super().__init__(f"store damaged: cannot read {len(self.damaged)} checkpoint(s) "
                         f"({', '.join(self.damaged)}); the readable ones are listed; {UNREADABLE_WAY_OUT}")

    def details(self) -> dict[str, object]:
        return {"damaged": self.damaged}


class CheckpointDamaged(RRStoreError):
    """``show`` found one checkpoint damaged (its ref, record, trees or file contents) and said what, first."""

    exit_code = 13

    def __init__(self, checkpoint_id: str, damage: Sequence[str], way_out: str) -> None:
        self.checkpoint_id = checkpoint_id
        self.damage = list(damage)
        first = self.damage[0] if self.damage else "unknown"
        more = f" and {len(self.damage) - 1} more" if len(self.damage) > 1 else ""
        super().__init__(f"checkpoint {checkpoint_id} is damaged: {first}{more}; {way_out}")

    def details(self) -> dict[str, object]:
        return {"checkpoint_id": self.checkpoint_id, "damage": self.damage}


class ObjectsNotWritten(RRStoreError):
    """A checkpoint whose objects are not all in the store after its flush; no record or ref was written.

    The writer's own proof failed (issue 8, hole 1): a ref must never reach
    an object that is not stored, so the checkpoint is aborted instead.
    """

    exit_code = 13

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(f"checkpoint aborted: {len(self.missing)} object(s) were not written "
                         f"(first: {self.missing[0] if self.missing else '?'}); no checkpoint was recorded")


class StoreConfigMissing(RRStoreError):
    """A directory holding a store's objects, packs or refs but no config.json.

    Such a store is damaged (e.g. by ``find .checkpoints -mtime +7 -delete``),
    never re-initialised over: ``rrstore check --repair`` writes the config again.
    """

    exit_code = 13
    summary = "store damaged: an object is corrupt or missing, or config.json is gone"

    def __init__(self, path: str) -> None:
        super().__init__(f"store damaged: {path} has objects/refs but no config.json; run rrstore check --repair")
        self.path = path


class StoreConfigDamaged(RRStoreError):
    """A store whose config.json does not parse as a store config (a flipped byte, a truncated write).

    A config naming a *newer* store format is not damage (plain error, exit 1).
    """

    exit_code = 13

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"store damaged: {path} {reason}; run rrstore check --repair")
        self.path = path
        self.reason = reason


class PermissionDenied(RRStoreError):
    exit_code = 14
    summary = "permission denied"

    def __init__(self, path: str, action: str = "access") -> None:
        super().__init__(f"permission denied: cannot {action} {path}")
        self.path = path


class StoreReadOnly(PermissionDenied):
    """Restore must write its undo checkpoint, and the store cannot be written."""

    def __init__(self, path: str) -> None:
        RRStoreError.__init__(self, f"store is read-only: {path}; restore needs to write its undo checkpoint "
                                    "there, nothing was changed (rerun with --no-undo to restore without one)")
        self.path = path


class DiskFull(RRStoreError):
    exit_code = 15
    summary = "disk full"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"no space left on device while writing {path}; nothing was committed "
            "(free space, then retry)"
        )
        self.path = path


class RestoreDiskFull(DiskFull):
    """The working tree filled up during a restore: it is partly restored (no file half-written)."""

    def __init__(self, path: str, undo_id: str | None) -> None:
        undo = (f"undo with 'rrstore restore --checkpoint-id {undo_id}'" if undo_id
                else "no undo checkpoint was taken (--no-undo)")
        RRStoreError.__init__(self, f"no space left on device while writing {path}; the working tree is "
                                    f"partly restored, no file half-written (free space and restore again, "
                                    f"or {undo})")
        self.path = path
        self.undo_id = undo_id


class ArchiveError(RRStoreError):
    """An archive that is not one, is damaged, truncated or unsafe, or conflicts with the store.

    Raised before anything enters the store: an import that fails with it
    changed nothing.
    """

    exit_code = 16
    summary = "bad archive: damaged, truncated, unsafe, or in conflict with the store"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"bad archive {path}: {reason}")
        self.path = path
        self.reason = reason


class UnsafeTree(RRStoreError):
    """A tree holds a name that is never written (``.git``, the store) or a symlink leading out of it.

    Such a checkpoint is refused whole, before anything is written: by pull
    and push (nothing transferred) and by restore (tree untouched, no undo
    checkpoint). Archives report it as an ArchiveError (exit 16).
    """

    exit_code = 17
    summary = "unsafe checkpoint: a path that is never written (.git, the store) or a symlink leading out"

    def __init__(self, checkpoint_id: str, path: str, reason: str, lead: str = "") -> None:
        self.checkpoint_id = checkpoint_id
        self.path = path
        self.reason = reason
        self.lead = lead
        self.detail = f"checkpoint {checkpoint_id}, path {path or '/'}: {reason}"
        super().__init__(f"{lead}: {self.detail}" if lead else self.detail)

    def with_lead(self, lead: str) -> UnsafeTree:
        """The same refusal, saying which operation refused it and what that left unchanged."""
        return UnsafeTree(self.checkpoint_id, self.path, self.reason, lead)


class ForeignCheckpoint(RRStoreError):
    """A restore was asked for a checkpoint another project took (a shared store, a pulled checkpoint).

    Raised before anything changes; ``force`` restores it all the same.
    """

    exit_code = 22
    summary = "checkpoint of another project: add --force to restore it here"

    def __init__(self, checkpoint_id: str, owner: str, owner_root: str, project: str) -> None:
        self.checkpoint_id = checkpoint_id
        self.owner = owner
        self.owner_root = owner_root
        self.project = project
        whose = owner or "another project (its record predates project identities)"
        super().__init__(f"checkpoint {checkpoint_id} belongs to {whose} (root {owner_root or 'unknown'}), "
                         f"not this project {project}; add --force to restore it here")


class NoProjectCheckpoint(CheckpointNotFound):
    """'latest' in a store that holds checkpoints, none of them this project's."""

    def __init__(self, checkpoint_id: str, project: str, others: int, *, where: str = "",
                 list_command: str = "rrstore list --all-projects") -> None:
        """``where`` names a remote looked at; ``list_command`` lists every project's checkpoints there."""
        super().__init__(checkpoint_id, where=where, list_command=list_command)
        self.project = project
        self.others = others
        place, holder = (f" on {where}", "the remote") if where else ("", "the store")
        self.message = (f"Checkpoint not found{place}: {checkpoint_id}: no checkpoint of this project {project}; "
                        f"{holder} holds {others} of other projects ({list_command})")


class RunNotFound(CheckpointNotFound):
    """``workflow --resume --remote`` (or ``--run``) found no run of the lane to continue."""

    def __init__(self, message: str, run: str = "", *, where: str = "") -> None:
        super().__init__(run or "(newest run)", where=where)
        self.message = message
        self.run = run


class RestoreFailed(PartialFailure):
    """Restore changed what it could; these paths could not be written."""

    def __init__(self, failures: dict[str, str], undo_id: str | None) -> None:
        self.failures = dict(failures)
        self.undo_id = undo_id
        first = ", ".join(f"{p} ({why})" for p, why in list(self.failures.items())[:3])
        more = f" and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        undo = f"; undo with 'rrstore restore --checkpoint-id {undo_id}'" if undo_id else ""
        super().__init__(f"restore could not write {len(self.failures)} path(s): {first}{more}{undo}")


class TornRead(RRStoreError):
    """A file kept changing while it was read; storing it would store a torn copy."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} kept changing while it was read; checkpoint aborted, retry when it is quiet")
        self.path = path


class UndoUnproven(RRStoreError):
    """A file changed while restore saved it for undo, so the undo cannot be proven: nothing restored."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} changed while restore was saving it in the undo checkpoint; nothing was "
                         "restored (retry when the tree is quiet)")
        self.path = path


def from_oserror(exc: OSError, path: str, action: str = "write") -> RRStoreError:
    """Translate the OSErrors users can act on into named errors."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return DiskFull(path)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(path, action)
    if exc.errno == errno.ENOTDIR:
        return UsageError(f"not a directory: {path}")
    return RRStoreError(f"cannot {action} {path}: {exc.strerror or exc}")


class Signalled(BaseException):
    """SIGINT or SIGTERM arrived (raised by the command line's handler, in the main thread).

    A BaseException, like KeyboardInterrupt, so every ``finally`` and
    cleanup handler runs on the way out (temporary files go, locks are
    released) and no ``except Exception`` mistakes it for an error.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


class Interrupted(RRStoreError):
    """A restore stopped by a signal after it began writing: the tree is partly restored.

    Carries the undo checkpoint (recorded before the first write), which
    gives the tree back as it was.
    """

    exit_code = 130
    summary = "interrupted (Ctrl-C); an interrupted restore names its undo checkpoint"

    def __init__(self, checkpoint_id: str, undo_checkpoint_id: str | None, exit_code: int = 130) -> None:
        how = "terminated (SIGTERM)" if exit_code == 143 else "interrupted"
        undo = (f"undo with: rrstore restore --checkpoint-id {undo_checkpoint_id}" if undo_checkpoint_id
                else "it was restored with --no-undo, so there is no undo checkpoint")
        super().__init__(f"{how}: the working tree is partly restored to {checkpoint_id}; {undo}")
        self.checkpoint_id = checkpoint_id
        self.undo_checkpoint_id = undo_checkpoint_id
        self.exit_code = exit_code


def exit_code_table() -> list[tuple[int, str]]:
    """(code, meaning) for every documented exit status, for ``rrstore --help``."""
    rows = {0: "success", 130: "interrupted (Ctrl-C)", 143: "terminated (SIGTERM)"}
    pending: list[type[RRStoreError]] = [RRStoreError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "summary" in vars(cls):
            rows[cls.exit_code] = cls.summary
    return sorted(rows.items())


class ValidationFailed(RRStoreError):
    """``validate`` found problems; the result lists every check (the CLI prints them first)."""

    exit_code = 20
    summary = "validation failed: a check did not pass (listed)"

    def __init__(self, message: str, failed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


class ResumeRefused(RRStoreError):
    """``workflow --resume`` would continue from a working tree the last good step did not leave."""

    exit_code = 21
    summary = "cannot resume: the working tree is not the state the last successful step left"

    def __init__(self, message: str, checkpoint_id: str | None = None) -> None:
        super().__init__(message)
        self.checkpoint_id = checkpoint_id
