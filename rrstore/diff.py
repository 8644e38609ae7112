"""Diff (verb over trees): what differs between two trees, path by path.

Compares flattened trees. Directories count only when empty (a leaf), so an
added file reports its path and not every new parent folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tree import DIR, Entry


@dataclass
class DiffResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, object]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified,
                "unchanged": self.unchanged}


def leaves(entries: dict[str, Entry]) -> dict[str, Entry]:
    """Files, symlinks and empty directories: what a user sees as paths."""
    parents = {path.rpartition("/")[0] for path in entries}
    return {p: e for p, e in entries.items() if e.kind != DIR or p not in parents}


def diff(old: dict[str, Entry], new: dict[str, Entry]) -> DiffResult:
    """Paths added, removed and modified going from ``old`` to ``new``."""
    result = DiffResult()
    for path in sorted(leaves(old).keys() | leaves(new).keys()):
        was, now = old.get(path), new.get(path)
        if now is None:
            result.removed.append(path)
        elif was is None:
            result.added.append(path)
        elif was.kind == DIR and now.kind == DIR:
            result.unchanged += 1
        elif not was.same_content(now):
            result.modified.append(path)
        else:
            result.unchanged += 1
    return result
