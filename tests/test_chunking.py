"""Large files: content-defined chunks, fixed by the tree format, dedup on edits, byte-identical restore."""

from __future__ import annotations

from pathlib import Path

import blake3

from rrstore import RollbackRecoverySystem
from rrstore.tree import FILE, flatten
from rrstore.worktree.snapshot import CHUNK_THRESHOLD, chunker

SEED = b"rrstore chunk boundaries"


def pseudo_random(n: int, seed: bytes = SEED) -> bytes:
    """Incompressible, reproducible bytes (BLAKE3 in extendable-output mode)."""
    return blake3.blake3(seed).digest(length=n)


def test_chunk_boundaries_are_frozen() -> None:
    """The cut points are part of the tree format: a library update must not move them.

    If this fails, identical files would get new chunk lists and new state hashes.
    """
    cuts = [(c.offset, c.length) for c in chunker().cut_buf(pseudo_random(12 << 20))]
    assert len(cuts) == 40
    assert cuts[:3] == [(0, 258299), (258299, 180253), (438552, 112162)]
    assert blake3.blake3(repr(cuts).encode()).hexdigest() == (
        "ca2240502468527084a79a11bad82d9236d36c39f4a6f1878588fbafd9a43a0a")


def test_edit_in_the_middle_stores_only_the_changed_chunks(project: Path) -> None:
    big = pseudo_random(24 << 20)
    (project / "data.bin").write_bytes(big)
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("heavy", 1, "big file").record
    entry = flatten(system.open_store().objects, first.state_hash)["data.bin"]
    assert entry.kind == FILE and len(entry.chunks) > 10
    assert entry.oid == blake3.blake3(big).hexdigest()  # the whole-file hash, as b3sum prints it

    middle = len(big) // 2
    edited = big[:middle] + b"an edit in the middle" + big[middle + 21:]
    (project / "data.bin").write_bytes(edited)
    second = system.checkpoint("heavy", 2, "edited").record

    new_entry = flatten(system.open_store().objects, second.state_hash)["data.bin"]
    changed = set(new_entry.chunks) - set(entry.chunks)
    assert 1 <= len(changed) <= 2
    # what was stored is about one or two chunks, not the 24 MiB file
    assert second.metrics["bytes_new"] < 3 * (1 << 20)
    assert second.metrics["bytes_new"] < len(big) // 4

    (project / "data.bin").write_bytes(b"ruined")
    result = system.restore(first.checkpoint_id)
    assert result.success
    assert (project / "data.bin").read_bytes() == big
    result = system.restore(second.checkpoint_id)
    assert (project / "data.bin").read_bytes() == edited


def test_file_at_the_threshold_is_one_object_and_above_it_is_chunked(project: Path) -> None:
    (project / "at.bin").write_bytes(pseudo_random(CHUNK_THRESHOLD, b"at"))
    (project / "above.bin").write_bytes(pseudo_random(CHUNK_THRESHOLD + 1, b"above"))
    system = RollbackRecoverySystem(root=project)
    record = system.checkpoint("heavy", 1, "threshold").record
    entries = flatten(system.open_store().objects, record.state_hash)
    assert entries["at.bin"].chunks == ()
    assert len(entries["above.bin"].chunks) >= 2
    objects = system.open_store().objects
    joined = b"".join(objects.get(oid) for oid in entries["above.bin"].chunks)
    assert joined == (project / "above.bin").read_bytes()


def test_streamed_cuts_equal_whole_buffer_cuts() -> None:
    """Large files are chunked as a stream (bounded memory); the cut points must not depend on that."""
    import io

    data = pseudo_random(12 << 20)
    whole = [(c.offset, c.length) for c in chunker().cut_buf(data)]
    streamed = [(c.offset, c.length) for c in chunker().cut_stream(io.BytesIO(data))]
    assert streamed == whole
