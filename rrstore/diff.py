"""Diff (verb over trees): what differs between two trees, path by path.

Compares flattened trees. Directories count only when empty (a leaf), so an
added file reports its path and not every new parent folder. A checkpoint
compared with the working tree goes through ``against_checkpoint``: the
paths its record left out are no change (restore leaves them alone too).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field

from .record import CheckpointRecord
from .store.objects import ObjectStore
from .tree import DIR, Entry, flatten_except, split_below
from .worktree.scan import under


@dataclass
class DiffResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    unchanged: int = 0
    # Paths the checkpoint's record left out (a venv, a file that never settled) found on either side:
    # never changes, said apart.
    left_out: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, object]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified,
                "unchanged": self.unchanged, "left_out": self.left_out}


def leaves(entries: dict[str, Entry]) -> dict[str, Entry]:
    """Files, symlinks and empty directories: what a user sees as paths."""
    parents = {path.rpartition("/")[0] for path in entries}
    return {p: e for p, e in entries.items() if e.kind != DIR or p not in parents}


def diff(old: dict[str, Entry], new: dict[str, Entry], leave_out: Collection[str] = (),
         same: Collection[str] = ()) -> DiffResult:
    """Paths added, removed and modified going from ``old`` to ``new``; those at or below
    ``leave_out`` are no change: each of ``leave_out`` met is listed in ``left_out``. ``same``:
    directories both sides hold with the same tree, given without what lies below them (the
    caller counts that as unchanged)."""
    result = DiffResult()
    skip = {p for p in leave_out if p}  # "" (the root) is never left out
    met: set[str] = set()
    for path in sorted(leaves(old).keys() | leaves(new).keys()):
        if same and path in same:
            continue
        if skip and under(path, skip):
            met.update(p for p in skip if path == p or path.startswith(f"{p}/"))
            continue
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
    result.left_out = sorted(met)
    return result


def change_lines(changes: DiffResult, *, order: str = "ADM", by_path: bool = False) -> list[str]:
    """Each change as one line, ``A path`` (added), ``D path`` (removed), ``M path`` (modified), the
    path quoted as git quotes it (``quote_path``); ``order`` and ``by_path`` as in ``tagged``."""
    return [f"{tag} {quote_path(path)}" for tag, path in tagged(changes, order=order, by_path=by_path)]


def tagged(changes: DiffResult, *, order: str = "ADM", by_path: bool = False) -> list[tuple[str, str]]:
    """Each change as ``(tag, path)``, grouped in ``order`` (resume names modified paths first:
    ``"MAD"``), or with ``by_path`` sorted by path, as ``rrstore diff`` prints them (a path is in one
    group only)."""
    groups = {"A": changes.added, "D": changes.removed, "M": changes.modified}
    pairs = [(tag, path) for tag in order for path in groups[tag]]
    if by_path:
        pairs.sort(key=lambda item: item[1])
    return pairs


# git's quote.c (core.quotePath on, its default): these bytes get a letter, others below 0x20, 0x7f and
# every byte from 0x80 an octal escape, and a name holding any of them is written in double quotes.
_LETTERS = {0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f", 0x0D: "r", 0x22: '"', 0x5C: "\\"}


def quote_path(path: str) -> str:
    """``path`` as git writes a name in its output: as is when plain, else C-style quoted, pure ASCII.

    A name with a newline (or a quote, a tab, an escape sequence, a byte that is not UTF-8) can then
    never forge a line of output or a terminal control; ``-z`` and ``--json`` carry the exact name.
    """
    raw = os.fsencode(path)
    if not any(b < 0x20 or b >= 0x7F or b in (0x22, 0x5C) for b in raw):
        return path
    return '"' + "".join(f"\\{_LETTERS[b]}" if b in _LETTERS else f"\\{b:03o}" if b < 0x20 or b >= 0x7F
                         else chr(b) for b in raw) + '"'


def left_out_note(changes: DiffResult | None) -> str:
    """``; P, Q left out of the checkpoint`` for a message (empty when nothing was left out)."""
    if changes is None or not changes.left_out:
        return ""
    shown = ", ".join(changes.left_out[:5]) + (f" and {len(changes.left_out) - 5} more"
                                              if len(changes.left_out) > 5 else "")
    return f"; {shown} left out of the checkpoint"


def against_checkpoint(objects: ObjectStore, record: CheckpointRecord, entries: dict[str, Entry]) -> DiffResult:
    """What changed from checkpoint ``record`` to the working tree ``entries`` (a snapshot's).

    The one comparison of a checkpoint with the working tree (diff, status, validate --checkpoint,
    a resumed workflow's "changed since"): what the record left out is reported in ``left_out``,
    never as a change, as restore leaves it alone. ``entries``' directory oids are trees the scan
    built: the checkpoint's trees equal to one are not read below it.
    """
    return compare_with_tree(objects, record, entries)[0]


def compare_with_tree(objects: ObjectStore, record: CheckpointRecord,
                      entries: dict[str, Entry]) -> tuple[DiffResult, dict[str, Entry]]:
    """``against_checkpoint``, with the checkpoint's entries it read: every changed path's is among
    them (what a patch needs), those below a directory equal on both sides are not."""
    known = {p: e.oid for p, e in entries.items() if e.kind == DIR}
    old, shared = flatten_except(objects, record.state_hash, known)  # only the trees that differ
    if not shared:
        return diff(old, entries, record.left_out), old
    same = set(shared)
    new, below = split_below(entries, same)
    result = diff(old, new, record.left_out, same)
    parents = {p.rpartition("/")[0] for p in below}
    result.unchanged += sum(1 for p in below if entries[p].kind != DIR or p not in parents)
    result.unchanged += sum(1 for d in same if d and d not in parents)  # an empty directory is a leaf
    return result, old
