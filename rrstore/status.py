"""Status (a verb): the working tree's state hash and how it relates to the project's checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from .diff import DiffResult
from .record import CheckpointRecord


@dataclass
class StatusResult:
    state_hash: str
    newest: CheckpointRecord | None
    matching: CheckpointRecord | None
    changes: DiffResult | None = None
    success: bool = True

    @property
    def clean(self) -> bool:
        return self.newest is not None and self.newest.state_hash == self.state_hash

    def to_json(self) -> dict[str, object]:
        return {
            "state_hash": self.state_hash,
            "clean": self.clean,
            "newest_checkpoint_id": self.newest.checkpoint_id if self.newest else None,
            "matching_checkpoint_id": self.matching.checkpoint_id if self.matching else None,
            "changes": self.changes.to_json() if self.changes else None,
        }

    @property
    def message(self) -> str:
        if self.newest is None:
            return "no checkpoints yet"
        if self.clean:
            return f"matches the newest checkpoint {self.newest.checkpoint_id}"
        summary = ""
        if self.changes is not None:
            c = self.changes
            summary = f" ({len(c.added)} added, {len(c.removed)} removed, {len(c.modified)} modified)"
        if self.matching is not None:
            return (f"matches checkpoint {self.matching.checkpoint_id}; differs from the newest, "
                    f"{self.newest.checkpoint_id}{summary}")
        return f"differs from the newest checkpoint {self.newest.checkpoint_id}{summary}"
