"""Status (a verb): the working tree's state hash and how it relates to the project's checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from .checkpoint import CheckpointManager, others_note
from .diff import DiffResult, against_checkpoint, left_out_note
from .errors import UNREADABLE_WAY_OUT
from .record import CheckpointRecord


@dataclass
class StatusResult:
    state_hash: str
    newest: CheckpointRecord | None
    matching: CheckpointRecord | None
    changes: DiffResult | None = None
    success: bool = True
    others: int = 0  # step checkpoints of other projects, counted only when this project has none
    project: str = ""
    unreadable: list[str] = field(default_factory=list)  # checkpoints whose ref or record cannot be read

    @property
    def note(self) -> str | None:
        """One line for stderr: checkpoints that cannot be read (the newest may be one of them, which
        'latest' and gc refuse to guess), or this project has none but other projects have some."""
        if self.unreadable:
            return (f"{len(self.unreadable)} checkpoint(s) cannot be read ({', '.join(self.unreadable)}); "
                    f"'newest' below is the newest readable one; {UNREADABLE_WAY_OUT}")
        return others_note(self.project, self.others) if self.others and self.newest is None else None

    @property
    def clean(self) -> bool:
        """The tree is the newest checkpoint's, but for what that checkpoint left out."""
        if self.newest is None:
            return False
        return self.newest.state_hash == self.state_hash or (self.changes is not None and not self.changes.changed)

    def to_json(self) -> dict[str, object]:
        return {
            "state_hash": self.state_hash,
            "clean": self.clean,
            "newest_checkpoint_id": self.newest.checkpoint_id if self.newest else None,
            "matching_checkpoint_id": self.matching.checkpoint_id if self.matching else None,
            "changes": self.changes.to_json() if self.changes else None,
            "unreadable": self.unreadable,
        }

    @property
    def message(self) -> str:
        if self.newest is None:
            return "no checkpoints yet"
        if self.clean:
            return f"matches the newest checkpoint {self.newest.checkpoint_id}{left_out_note(self.changes)}"
        summary = ""
        if self.changes is not None:
            c = self.changes
            summary = (f" ({len(c.added)} added, {len(c.removed)} removed, {len(c.modified)} modified"
                       f"{left_out_note(c)})")
        if self.matching is not None:
            return (f"matches checkpoint {self.matching.checkpoint_id}; differs from the newest, "
                    f"{self.newest.checkpoint_id}{summary}")
        return f"differs from the newest checkpoint {self.newest.checkpoint_id}{summary}"


def status(manager: CheckpointManager, *, all_projects: bool = False) -> StatusResult:
    """The working tree's state hash against the project's checkpoints (every project's with ``all_projects``)."""
    snap = manager.snapshot(store=False)
    every = manager.list_checkpoints(all_projects=True)
    records = every if all_projects else manager.view.mine(every)
    newest = manager.newest(records)
    matching = next((r for r in records if r.state_hash == snap.root_oid), None)
    changes = None
    if newest is not None and newest.state_hash != snap.root_oid:
        with manager.explain_damage():
            changes = against_checkpoint(manager.store.objects, newest, snap.entries)
        if not changes.changed:  # it differs only in what the checkpoint left out
            matching = newest
    others = sum(r.kind == "step" for r in every) if newest is None and not all_projects else 0
    return StatusResult(snap.root_oid, newest, matching, changes, others=others,
                        project=manager.project if others else "", unreadable=sorted(manager.damaged))
