"""Checkpoint ids unique across runners (issue 12): the seed's prefix, a random tail, and the way out of
a conflict older ids left on a remote (``--rename-conflicts``).

The remote tests run against the real SeaweedFS server of conftest (``s3_remote``); the runners are
real directories with their own stores, their clock frozen to one second (the clock ids are made from).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Self

import pytest
from conftest import run_cli

import rrstore.checkpoint as checkpoint_module
from rrstore import RollbackRecoverySystem
from rrstore.record import SUFFIX_LENGTH, seed_prefix
from rrstore.store.objects import hash_bytes

Manifest = dict[str, tuple[object, ...]]
SECOND = "heavy-step1-20261201_071641"  # the id both runners of the issue got
NEW_ID = re.compile(rf"^{SECOND}-[a-z2-7]{{{SUFFIX_LENGTH}}}$")


class FrozenNow(datetime):
    """``datetime`` whose ``now()`` is one instant of 2026-12-01 07:16:41: two runners in one second."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls(2026, 12, 1, 7, 16, 41, 500_000, tzinfo=tz)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "datetime", FrozenNow)


def runner(root: Path, content: str) -> RollbackRecoverySystem:
    """A runner's clone: its own directory (files that differ by ``content``) and its own store."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "main.py").write_text(f"print({content!r})\n")
    (root / "data.bin").write_bytes(content.encode() * 5000)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return RollbackRecoverySystem(root=root)


def test_two_stores_in_one_second_make_distinct_ids_with_the_seed_prefix(tmp_path: Path, frozen: None) -> None:
    a, b = runner(tmp_path / "a", "a"), runner(tmp_path / "b", "b")
    ids = [a.checkpoint("heavy", 1, "build").checkpoint_id, b.checkpoint("heavy", 1, "build").checkpoint_id]
    assert ids[0] != ids[1]
    assert all(NEW_ID.match(i) for i in ids), ids
    assert [seed_prefix(i) for i in ids] == [SECOND, SECOND]


def test_two_copies_of_one_store_make_distinct_ids(tmp_path: Path, frozen: None) -> None:
    """A CI cache restores the same store files on two runners: nothing local tells them apart."""
    a = runner(tmp_path / "a", "same")
    a.checkpoint("heavy", 0, "setup")
    runner(tmp_path / "b", "same")
    shutil.copytree(tmp_path / "a" / ".checkpoints", tmp_path / "b" / ".checkpoints")
    b = RollbackRecoverySystem(root=tmp_path / "b")
    ids = {a.checkpoint("heavy", 1, "build").checkpoint_id, b.checkpoint("heavy", 1, "build").checkpoint_id}
    assert len(ids) == 2 and all(NEW_ID.match(i) for i in ids)


def test_a_taken_tail_draws_another(tmp_path: Path, frozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    tails = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(checkpoint_module, "new_suffix", lambda seed=None: next(tails))
    system = runner(tmp_path, "x")
    first, second = (system.checkpoint("heavy", 1, name).checkpoint_id for name in ("one", "two"))
    assert (first, second) == (f"{SECOND}-aaaaaa", f"{SECOND}-bbbbbb")
    assert {r.checkpoint_id: r.step_name for r in system.list().checkpoints} == {first: "one", second: "two"}


def old_style(system: RollbackRecoverySystem, checkpoint_id: str) -> str:
    """Give a checkpoint the id an rrstore before issue 12 made (the bare seed form), as that rrstore
    wrote it: the record names the id, the ref names the record; the new-style ref is gone."""
    store = system.open_store()
    record = system.show(checkpoint_id)
    record.checkpoint_id = seed_prefix(checkpoint_id) or ""
    data = record.encode()
    oid = hash_bytes(data)
    store.objects.put(data, oid, loose=True)
    store.barrier()
    assert store.refs.create(record.checkpoint_id, oid)
    store.refs.delete(checkpoint_id)
    return record.checkpoint_id


def test_rename_keeps_the_record_its_place_and_its_pin(tmp_path: Path, frozen: None) -> None:
    system = runner(tmp_path, "x")
    old = old_style(system, system.checkpoint("heavy", 1, "build").checkpoint_id)
    later = system.checkpoint("heavy", 2, "test").checkpoint_id
    system.pin(old)
    before = system.show(old)
    new = system.checkpoint_manager.rename(old)
    assert NEW_ID.match(new) and new != old
    after = system.show(new)
    assert (after.state_hash, after.timestamp, after.step_name, after.added_ns) == (
        before.state_hash, before.timestamp, before.step_name, before.added_ns)
    assert [r.checkpoint_id for r in system.list().checkpoints] == [later, new]
    assert system.pinned() == {new}
    assert run_cli("show", old, cwd=tmp_path).returncode == 12


# two runners, one remote -------------------------------------------------------------------------


def test_two_runners_in_one_second_both_push_and_a_third_clone_restores_both(
        tmp_path: Path, frozen: None, s3_remote: str, seaweedfs: object, manifest: Callable[..., Manifest]) -> None:
    endpoint = seaweedfs.endpoint  # type: ignore[attr-defined]
    a, b = runner(tmp_path / "a", "runner a"), runner(tmp_path / "b", "runner b")
    first, second = (r.checkpoint("heavy", 1, "build").checkpoint_id for r in (a, b))
    expected = [manifest(tmp_path / "a"), manifest(tmp_path / "b")]
    assert expected[0] != expected[1]

    for side, checkpoint_id in ((a, first), (b, second)):
        pushed = side.push([checkpoint_id], s3_remote, endpoint)
        assert pushed.success and pushed.transferred == [checkpoint_id], pushed.message

    third = tmp_path / "c"
    third.mkdir()
    clone = RollbackRecoverySystem(root=third)
    pulled = clone.pull([], s3_remote, endpoint)
    assert pulled.success and sorted(pulled.transferred) == sorted([first, second])
    for checkpoint_id, tree in zip((first, second), expected, strict=True):
        clone.restore(checkpoint_id, force=True)  # another directory: another project
        assert manifest(third) == tree


def test_an_old_conflict_names_its_way_out_and_the_way_out_pushes_both(
        tmp_path: Path, frozen: None, s3_remote: str, seaweedfs: object, s3_env: dict[str, str],
        manifest: Callable[..., Manifest]) -> None:
    endpoint = seaweedfs.endpoint  # type: ignore[attr-defined]
    a, b = runner(tmp_path / "a", "runner a"), runner(tmp_path / "b", "runner b")
    ids = [old_style(r, r.checkpoint("heavy", 1, "build").checkpoint_id) for r in (a, b)]
    assert ids == [SECOND, SECOND]
    expected_a, expected_b = manifest(tmp_path / "a"), manifest(tmp_path / "b")
    remote = ["--remote", s3_remote, "--endpoint-url", endpoint]
    assert run_cli("push", SECOND, *remote, cwd=tmp_path / "a", env=s3_env).returncode == 0

    refused = run_cli("push", SECOND, *remote, cwd=tmp_path / "b", env=s3_env)
    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1] == (
        f"rrstore: error: 1 checkpoint(s) exist on both sides with different records and were left unchanged: "
        f"{SECOND}; rerun with --rename-conflicts to give the local ones new ids and push them")

    way_out = run_cli("--json", "push", SECOND, *remote, "--rename-conflicts", cwd=tmp_path / "b", env=s3_env)
    assert way_out.returncode == 0, way_out.stderr
    doc = json.loads(way_out.stdout)
    renamed = doc["renamed"][SECOND]
    assert NEW_ID.match(renamed) and doc["transferred"] == [renamed] and doc["conflicts"] == []
    assert [r.checkpoint_id for r in b.list().checkpoints] == [renamed]
    again = run_cli("push", *remote, cwd=tmp_path / "b", env=s3_env)  # nothing left to do
    assert again.returncode == 0 and again.stdout == "", again.stderr

    third = tmp_path / "c"
    third.mkdir()
    clone = RollbackRecoverySystem(root=third)
    assert sorted(clone.pull([], s3_remote, endpoint).transferred) == sorted([SECOND, renamed])
    for checkpoint_id, expected in ((SECOND, expected_a), (renamed, expected_b)):
        clone.restore(checkpoint_id, force=True)
        assert manifest(third) == expected


def test_a_pull_conflict_renames_the_local_checkpoint_and_pulls_the_remote_one(
        tmp_path: Path, frozen: None, s3_remote: str, seaweedfs: object, manifest: Callable[..., Manifest]) -> None:
    endpoint = seaweedfs.endpoint  # type: ignore[attr-defined]
    a, b = runner(tmp_path / "a", "runner a"), runner(tmp_path / "b", "runner b")
    for r in (a, b):
        old_style(r, r.checkpoint("heavy", 1, "build").checkpoint_id)
    expected_a = manifest(tmp_path / "a")
    assert a.push([SECOND], s3_remote, endpoint).success
    assert not b.pull([SECOND], s3_remote, endpoint).success

    pulled = b.pull([SECOND], s3_remote, endpoint, rename_conflicts=True)
    assert pulled.success and pulled.transferred == [SECOND], pulled.message
    mine = pulled.renamed[SECOND]
    assert {r.checkpoint_id for r in b.list(all_projects=True).checkpoints} == {SECOND, mine}
    b.restore(SECOND, force=True)
    assert manifest(tmp_path / "b") == expected_a


def test_pushing_and_pulling_everything_keeps_the_order_ids_no_longer_tell(
        tmp_path: Path, frozen: None, monkeypatch: pytest.MonkeyPatch, s3_remote: str, seaweedfs: object) -> None:
    """Two checkpoints of one second whose tails sort against the order they were taken in: the remote's
    and then a fresh clone's 'latest' is still the one taken last (refs are created oldest first)."""
    endpoint = seaweedfs.endpoint  # type: ignore[attr-defined]
    tails = iter(["zzzzzz", "aaaaaa"])
    monkeypatch.setattr(checkpoint_module, "new_suffix", lambda seed=None: next(tails))
    a = runner(tmp_path / "a", "a")
    older, newer = (a.checkpoint("heavy", 1, name).checkpoint_id for name in ("older", "newer"))
    assert older > newer
    assert a.push([], s3_remote, endpoint).success
    assert [r.checkpoint_id for r in a.list_remote(s3_remote, endpoint).checkpoints] == [newer, older]
    (tmp_path / "c").mkdir()
    clone = RollbackRecoverySystem(root=tmp_path / "c")
    assert clone.pull([], s3_remote, endpoint).success
    assert [r.checkpoint_id for r in clone.list(all_projects=True).checkpoints] == [newer, older]
