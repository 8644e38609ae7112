"""Merged pack indexes (``index/packs/*.midx``): derived data that bounds how many index files a
command reads, and changes no result when deleted, damaged, or rewritten by gc."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli, tree_manifest

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.store.objects import ObjectStore
from rrstore.store.packindex import MIDX_PREFIX, UNCOVERED_MAX, decode_midx, encode_midx, midx_name

Reads = Counter[str]


def _checkpoints(root: Path, count: int, start: int = 0) -> list[str]:
    """``count`` checkpoints of a small tree, each after a one-file change (each writes one pack)."""
    system = RollbackRecoverySystem(root=root)
    ids = []
    for i in range(start, start + count):
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / "shared.py").write_text("shared = True\n" * 50)
        (root / "src" / f"step{i % 7}.py").write_text(f"step = {i}\n")
        ids.append(system.checkpoint("standard", i + 1, f"s{i}").checkpoint_id)
    return ids


def _store(root: Path) -> Path:
    return root / ".checkpoints"


def _midx(root: Path) -> list[Path]:
    folder = _store(root) / MIDX_PREFIX
    return sorted(folder.glob("*.midx")) if folder.is_dir() else []


def _fresh_index(root: Path) -> dict[str, tuple[str, int, int, int, int]]:
    """What a new process finds: oid -> location, through whatever indexes are there."""
    reader = ObjectStore(LocalBackend(_store(root))).pack_reader()
    return dict(reader.index)


def _index_from_idx_only(root: Path) -> dict[str, tuple[str, int, int, int, int]]:
    from rrstore.store.pack import decode_index

    out = {}
    for path in sorted((_store(root) / "packs").glob("*.idx")):
        out.update(decode_index(path.stem, path.read_bytes()))
    return out


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """Counts ``LocalBackend.read`` of pack indexes (``.idx``) and merged indexes (``.midx``), in-process."""
    counts: Reads = Counter()
    original = LocalBackend.read

    def read(self: LocalBackend, key: str) -> bytes:
        for ext in (".idx", ".midx"):
            if key.endswith(ext):
                counts[ext] += 1
        return original(self, key)

    monkeypatch.setattr(LocalBackend, "read", read)
    return counts


def test_the_format_round_trips_and_refuses_damage() -> None:
    members = {"aa" * 32: {"11" * 32: ("aa" * 32, 6, 100, 8, 5)},
               "bb" * 32: {"22" * 32: ("bb" * 32, 6, 50, 12, 7), "00" * 32: ("bb" * 32, 56, 9, 4, 1)}}
    name, data = encode_midx(members)
    assert decode_midx(name, data) == members
    from rrstore.errors import CorruptObject

    for pos in (0, 10, len(data) // 2, len(data) - 1):
        broken = bytearray(data)
        broken[pos] ^= 0x01
        with pytest.raises(CorruptObject):
            decode_midx(name, bytes(broken))
    with pytest.raises(CorruptObject):
        decode_midx("cd" * 32, data)  # bytes that are not what the name says


def test_a_checkpoint_among_many_packs_reads_a_bounded_number_of_index_files(project: Path, reads: Reads) -> None:
    _checkpoints(project, 3 * UNCOVERED_MAX)
    packs = list((_store(project) / "packs").glob("*.idx"))
    assert len(packs) >= 3 * UNCOVERED_MAX
    assert 1 <= len(_midx(project)) <= 2  # each new one supersedes (and deletes) the older ones
    reads.clear()
    (project / "src" / "step1.py").write_text("changed\n")
    RollbackRecoverySystem(root=project).checkpoint("standard", 99, "one more")
    assert reads[".idx"] <= UNCOVERED_MAX + 1, reads
    assert reads[".midx"] <= 2, reads
    assert _fresh_index(project) == _index_from_idx_only(project)


def test_without_merged_indexes_every_pack_index_is_read(project: Path, reads: Reads) -> None:
    """The bound above comes from the merged index: without ``index/`` a reader reads every ``.idx``."""
    _checkpoints(project, 2 * UNCOVERED_MAX)
    for path in _midx(project):
        path.unlink()
    packs = len(list((_store(project) / "packs").glob("*.idx")))
    reads.clear()
    _fresh_index(project)
    assert reads[".idx"] == packs


def _results(root: Path, ids: list[str], manifest: Callable[..., dict[str, tuple[object, ...]]]) -> object:
    """What a user relies on: list, a restore of two checkpoints (bytes), check."""
    listed = run_cli("list", "--json", cwd=root)
    assert listed.returncode == 0, listed.stderr
    trees = []
    for checkpoint_id in (ids[0], ids[len(ids) // 2]):
        done = run_cli("restore", checkpoint_id, "--no-undo", cwd=root)
        assert done.returncode == 0, done.stderr
        trees.append(manifest(root))
    checked = run_cli("check", "--json", cwd=root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ids_listed = [c["checkpoint_id"] for c in json.loads(listed.stdout)]
    return ids_listed, trees


@pytest.mark.parametrize("how", ["deleted", "damaged"])
def test_same_lookups_and_results_without_or_with_a_damaged_merged_index(
        project: Path, how: str, manifest: Callable[..., dict[str, tuple[object, ...]]]) -> None:
    ids = _checkpoints(project, UNCOVERED_MAX + 4)
    assert _midx(project)
    before_index = _fresh_index(project)
    assert before_index == _index_from_idx_only(project)
    before = _results(project, ids, tree_manifest)
    if how == "deleted":
        import shutil

        shutil.rmtree(_store(project) / "index")
    else:
        victim = _midx(project)[0]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    assert _fresh_index(project) == before_index
    # list/restore/check in new processes give the same results
    assert _results(project, ids, tree_manifest) == before


def test_check_notes_a_damaged_merged_index_and_repair_rebuilds_it(project: Path) -> None:
    _checkpoints(project, UNCOVERED_MAX + 2)
    victim = _midx(project)[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    checked = run_cli("check", "--json", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # derived: a note, not a problem
    notes = json.loads(checked.stdout)["notes"]
    assert any(victim.name in note and "damaged" in note for note in notes), notes
    repaired = run_cli("check", "--repair", "--json", cwd=project)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not any(".midx" in note for note in json.loads(repaired.stdout)["notes"])
    fresh = _midx(project)
    assert fresh and victim not in fresh
    name = midx_name(MIDX_PREFIX + fresh[0].name)
    assert name is not None
    covered = decode_midx(name, fresh[0].read_bytes())
    assert {p.stem for p in (_store(project) / "packs").glob("*.idx")} == set(covered)
    assert _fresh_index(project) == _index_from_idx_only(project)


def test_gc_leaves_one_merged_index_of_the_packs_it_kept(project: Path) -> None:
    ids = _checkpoints(project, UNCOVERED_MAX + 6)
    system = RollbackRecoverySystem(root=project)
    before = tree_manifest(project)
    done = run_cli("gc", "--older-than", "0s", "--keep-last", "3", "--grace", "0s", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = _midx(project)
    assert len(merged) == 1
    name = midx_name(MIDX_PREFIX + merged[0].name)
    assert name is not None
    covered = decode_midx(name, merged[0].read_bytes())
    packs = {p.stem for p in (_store(project) / "packs").glob("*.idx")}
    assert set(covered) == packs
    assert _fresh_index(project) == _index_from_idx_only(project)
    # every surviving checkpoint restores byte-identically
    for checkpoint_id in [c.checkpoint_id for c in system.list().checkpoints][:3]:
        assert run_cli("restore", checkpoint_id, "--no-undo", cwd=project).returncode == 0
    assert run_cli("restore", ids[-1], "--no-undo", cwd=project).returncode == 0
    assert tree_manifest(project) == before
    assert run_cli("check", cwd=project).returncode == 0


def test_a_merged_index_naming_a_pack_gc_removed_drops_its_entries(project: Path) -> None:
    """A merged index is never trusted over the listing: a pack whose ``.idx`` is gone is gone."""
    _checkpoints(project, UNCOVERED_MAX + 2)
    index = _fresh_index(project)
    gone = sorted((_store(project) / "packs").glob("*.idx"))[0]
    held = {oid for oid, loc in index.items() if loc[0] == gone.stem}
    gone.unlink()
    after = _fresh_index(project)
    assert not held & set(after)
    assert after == {oid: loc for oid, loc in index.items() if loc[0] != gone.stem}


def test_gc_keeps_what_a_crafted_merged_index_leaves_out(tmp_path: Path) -> None:
    """A merged index that hashes to its name but omits a live object (and names a dead one) must not
    make gc rewrite that object's pack without it: a rewrite keeps what the pack's own index lists."""
    from datetime import datetime, timedelta

    from rrstore.gc import Retention
    from rrstore.store.objects import hash_bytes
    from rrstore.store.pack import decode_index
    from rrstore.store.packindex import encode_midx, midx_key

    root = tmp_path / "p"
    root.mkdir()
    content = b"keep me\n" * 10
    (root / "a.txt").write_bytes(content)
    system = RollbackRecoverySystem(root=root)
    kept = system.checkpoint("standard", 1, "a").checkpoint_id
    backend = system.checkpoint_manager.store.backend
    pack = next(k[len("packs/"):-len(".pack")] for k in backend.list("packs/") if k.endswith(".pack"))
    entries = decode_index(pack, backend.read(f"packs/{pack}.idx"))
    live = hash_bytes(content)
    crafted = {oid: loc for oid, loc in entries.items() if oid != live}
    crafted["ab" * 32] = entries[live]
    name, data = encode_midx({pack: crafted})
    backend.write(midx_key(name), data)
    RollbackRecoverySystem(root=root).gc(Retention(), now=datetime.now().astimezone() + timedelta(days=1))
    (root / "a.txt").write_bytes(b"changed\n")
    assert RollbackRecoverySystem(root=root).restore(kept).success
    assert (root / "a.txt").read_bytes() == content
