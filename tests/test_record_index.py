"""The record index (``index/records``): a cache that changes no command's answer, only its cost.

Every command that lists or chooses (``list --json``, ``show latest``, ``status --json``,
``gc --dry-run --json``, resume's lane listing) answers the same with the index, without it,
with it damaged, and after refs changed behind its back; a listing at many checkpoints reads
a bounded number of ref and record files (counted through a wrapper of the backend).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from gc_helpers import Cli, small_state, store_of, write_state

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.checkpoint import CheckpointManager, ProjectView
from rrstore.config import Settings
from rrstore.record import CheckpointRecord
from rrstore.recordindex import INDEX_KEY, RecordIndex, local_reader
from rrstore.store.objects import hash_bytes
from rrstore.store.refs import PREFIX, encode_ref
from rrstore.store.store import Store

COMMANDS = (("list", "--json"), ("list",), ("show", "latest"), ("status", "--json"),
            ("gc", "--dry-run", "--json", "--older-than", "0s", "--keep-last", "2"), ("list", "--lane", "docs"))


def answers(cli: Cli, project: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for args in COMMANDS:
        done = cli(*args, cwd=project)
        out[" ".join(args)] = (done.returncode, done.stdout)
    return out


def truth(cli: Cli, project: Path, store: Path) -> dict[str, tuple[int, str]]:
    """What every command answers from the refs and records themselves (no index to start from)."""
    (store / INDEX_KEY).unlink(missing_ok=True)
    return answers(cli, project)


def backdate(store: Path, seconds: float = 3600) -> None:
    """Every ref last modified an hour ago: older than the racy window, so its token is trusted."""
    for path in (store / PREFIX).iterdir():
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


@pytest.fixture
def taken(project: Path) -> tuple[RollbackRecoverySystem, Path, list[str]]:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(5):
        write_state(project, small_state(step))
        lane = "docs" if step % 2 else "standard"
        ids.append(system.checkpoint(lane, step, f"s{step}", success=step != 3).checkpoint_id)
    write_state(project, small_state(7))  # status: differs from the newest
    return system, store_of(system), ids


def test_every_answer_is_the_same_with_the_index_without_it_and_rebuilt(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    expected = truth(cli, store.parent, store)
    assert (store / INDEX_KEY).is_file()  # the first listing wrote it
    assert json.loads(expected["list --json"][1])[0]["checkpoint_id"] == ids[-1]
    backdate(store)
    assert answers(cli, store.parent) == expected  # refs re-read once (their tokens changed), index rewritten
    assert answers(cli, store.parent) == expected  # served from the index
    assert RecordIndex.decode((store / INDEX_KEY).read_bytes()).refs.keys() == set(ids)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_a_damaged_index_is_ignored_and_rebuilt(taken, cli: Cli, damage: str) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    expected = truth(cli, store.parent, store)
    path = store / INDEX_KEY
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[:len(data) - 7]
    elif damage == "garbage":
        data = bytearray(b"not an index at all\n")
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert answers(cli, store.parent) == expected
    assert RecordIndex.decode(path.read_bytes()).refs.keys() == set(ids)


def test_refs_changed_behind_the_index_are_seen(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    truth(cli, store.parent, store)
    backdate(store)
    answers(cli, store.parent)  # the index now trusts every ref's token
    # another process marks one step failed (a new record behind the same id), and one ref is deleted by hand
    other = CheckpointManager(store.parent, Store.open(store, Settings()))
    record = other.get(ids[1])
    record.success, record.error_message = False, "marked failed by another process"
    other.update(record)
    (store / PREFIX / ids[4]).unlink()
    listed = json.loads(cli("list", "--json", cwd=store.parent).stdout)
    assert [r["checkpoint_id"] for r in listed] == ids[3::-1]
    failed = next(r for r in listed if r["checkpoint_id"] == ids[1])
    assert failed["error_message"] == "marked failed by another process"
    seen = answers(cli, store.parent)
    assert seen == truth(cli, store.parent, store)
    assert json.loads(seen["status --json"][1])["newest_checkpoint_id"] == ids[3]


def test_a_ref_rewritten_in_place_with_the_same_size_and_mtime_is_seen(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    truth(cli, store.parent, store)
    backdate(store)
    answers(cli, store.parent)
    newest, older = store / PREFIX / ids[4], store / PREFIX / ids[0]
    st = newest.stat()
    added = newest.read_bytes().split(b"\n")[1]
    replacement = older.read_bytes().split(b"\n")[0] + b"\n" + added + b"\n"  # ids[4] now names ids[0]'s record
    assert len(replacement) == st.st_size
    with open(newest, "r+b") as fh:  # by hand: same inode, same size, and the mtime put back
        fh.write(replacement)
    os.utime(newest, ns=(st.st_atime_ns, st.st_mtime_ns))
    done = cli("list", "--json", cwd=store.parent)
    listed = json.loads(done.stdout)
    assert [r for r in listed if r["checkpoint_id"] == ids[4]] == []  # its record says ids[0]: a damaged ref
    assert sum(r["checkpoint_id"] == ids[0] for r in listed) == 1  # not twice
    assert done.returncode == 13 and ids[4] in done.stderr and "names the record of checkpoint" in done.stderr
    assert answers(cli, store.parent) == truth(cli, store.parent, store)


def test_resume_and_the_planner_choose_the_same_with_or_without_the_index(taken) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken

    def choices() -> tuple[list[str], str | None]:
        fresh = RollbackRecoverySystem(root=store.parent)
        lane = [r.checkpoint_id for r in fresh.checkpoint_manager.list_checkpoints("standard")]  # plan_resume's input
        return lane, fresh._newest_success("docs")

    (store / INDEX_KEY).unlink(missing_ok=True)
    expected = choices()
    assert expected == ([ids[4], ids[2], ids[0]], ids[1])
    assert choices() == expected
    (store / INDEX_KEY).write_bytes(b"damaged")
    assert choices() == expected


def test_check_notes_a_damaged_index_and_repair_rebuilds_it(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    cli("list", cwd=store.parent)
    healthy = json.loads(cli("check", "--json", cwd=store.parent).stdout)
    assert healthy["success"] and not any("record index" in n for n in healthy["notes"])
    (store / INDEX_KEY).write_bytes(b"\0" * 100)
    out = cli("check", "--json", cwd=store.parent)
    found = json.loads(out.stdout)
    assert out.returncode == 0 and found["success"]  # derived data: a note, not damage
    assert any(n.startswith("record index index/records is damaged") for n in found["notes"])
    out = cli("check", "--repair", "--json", cwd=store.parent)
    repaired = json.loads(out.stdout)
    assert out.returncode == 0, out.stderr
    assert "rebuilt index/records (5 checkpoint(s))" in repaired["repaired"]
    assert RecordIndex.decode((store / INDEX_KEY).read_bytes()).refs.keys() == set(ids)
    assert list((store / "quarantine").rglob("records"))  # the damaged one kept, never deleted


def test_a_read_only_store_lists_without_writing_its_index(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    _, store, _ids = taken
    expected = truth(cli, store.parent, store)
    (store / INDEX_KEY).unlink()
    modes = {p: p.stat().st_mode for p in (store, store / "index", store / "tmp")}
    try:
        for path in modes:
            path.chmod(0o555)
        assert answers(cli, store.parent)["list --json"] == expected["list --json"]
        assert not (store / INDEX_KEY).exists()
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


# --- reads counted in-process ---------------------------------------------------------------------


class CountingBackend(LocalBackend):
    """A local backend that counts the refs and records it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()

    def read(self, key: str) -> bytes:
        self.reads[key.split("/")[0]] += 1
        return super().read(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads[key.split("/")[0]] += 1
        return super().read_range(key, offset, length)


def crafted(project: Path, count: int, start: int = 0) -> Iterator[CheckpointRecord]:
    base = CheckpointRecord(checkpoint_id="", lane="standard", step_number=0, step_name="", timestamp="",
                            state_hash="0" * 64, root=str(project), project="test:project")
    for n in range(start, start + count):
        yield dataclasses.replace(base, checkpoint_id=f"standard-step{n}-20261201_000000", step_number=n,
                                  step_name=f"step {n}",
                                  timestamp=f"2026-12-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00")


def add(store: Store, records: Iterator[CheckpointRecord]) -> None:
    for record in records:
        data = record.encode()
        oid = hash_bytes(data)
        store.objects.put(data, oid, loose=True)
        store.refs.create(record.checkpoint_id, oid, 1_700_000_000_000_000_000 + record.step_number)


def test_a_listing_reads_only_what_changed_since_the_index_was_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rrstore.backends.local.RACY_NS", 0)  # every ref's token trusted at once
    project = tmp_path / "p"
    project.mkdir()
    Store.open(tmp_path / "store", Settings(), create=True)
    backend = CountingBackend(tmp_path / "store")
    store = Store.over(backend, Settings())
    manager = CheckpointManager(project, store, ProjectView(project, identify=lambda: "test:project"))
    add(store, crafted(project, 200))

    first = [r.checkpoint_id for r in manager.list_checkpoints()]
    assert len(first) == 200 and first[0] == "standard-step199-20261201_000000"
    assert backend.reads["refs"] == 200 and backend.reads["objects"] == 200  # no index yet: all read once

    backend.reads.clear()
    assert [r.checkpoint_id for r in manager.list_checkpoints()] == first
    assert backend.reads == Counter({"index": 1})  # one file

    add(store, crafted(project, 3, start=200))
    store.refs.delete(first[-1])
    backend.reads.clear()
    now = [r.checkpoint_id for r in manager.list_checkpoints()]
    assert now[:3] == [f"standard-step{n}-20261201_000000" for n in (202, 201, 200)] and first[-1] not in now
    assert backend.reads == Counter({"index": 1, "refs": 3, "objects": 3})
    assert manager.get("latest").checkpoint_id == now[0]  # chosen from the index, its record read again

    assert backend.reads == Counter({"index": 2, "refs": 3, "objects": 4})
    backend.reads.clear()
    local_reader(store.backend, store.objects).listing()
    assert backend.reads == Counter({"index": 1})


def test_records_damaged_behind_the_index_are_reported_not_hidden(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rrstore.backends.local.RACY_NS", 0)
    project = tmp_path / "p"
    project.mkdir()
    store = Store.open(tmp_path / "store", Settings(), create=True)
    manager = CheckpointManager(project, store, ProjectView(project, identify=lambda: "test:project"))
    add(store, crafted(project, 4))
    assert len(manager.list_checkpoints()) == 4 and not manager.damaged
    bad = "standard-step2-20261201_000000"
    (tmp_path / "store" / PREFIX / bad).write_bytes(encode_ref("f" * 64, 1))  # a ref naming no object
    assert [r.checkpoint_id for r in manager.list_checkpoints()] == [f"standard-step{n}-20261201_000000"
                                                                     for n in (3, 1, 0)]
    assert list(manager.damaged) == [bad]
    again = CheckpointManager(project, store, manager.view)  # the damage is never cached away
    assert len(again.list_checkpoints()) == 3 and list(again.damaged) == [bad]


def test_gc_never_trusts_a_crafted_index_for_what_a_kept_checkpoint_reaches(taken, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    _, store, ids = taken
    truth(cli, store.parent, store)
    backdate(store)
    answers(cli, store.parent)
    path = store / INDEX_KEY
    index = RecordIndex.decode(path.read_bytes())
    newest, oldest = index.refs[ids[4]], index.refs[ids[0]]
    # a valid index (its digest recomputed) saying the kept checkpoint's tree is the removed one's
    forged = CheckpointRecord.from_row(newest.oid, index.records[newest.oid])
    forged.state_hash = CheckpointRecord.from_row(oldest.oid, index.records[oldest.oid]).state_hash
    index.records[newest.oid] = forged.row()
    path.write_bytes(index.encode())
    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--json", cwd=store.parent)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["kept"]) == sorted(ids[3:])  # the newest of each lane
    check = cli("check", "--json", cwd=store.parent)
    assert check.returncode == 0 and json.loads(check.stdout)["success"], check.stdout


def test_an_index_that_cannot_be_written_costs_only_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store this user cannot write (simulated: these tests may run as root): listing works, reads all."""
    from rrstore.errors import PermissionDenied

    monkeypatch.setattr("rrstore.backends.local.RACY_NS", 0)
    project = tmp_path / "p"
    project.mkdir()
    Store.open(tmp_path / "store", Settings(), create=True)
    backend = CountingBackend(tmp_path / "store")
    store = Store.over(backend, Settings())
    add(store, crafted(project, 5))
    real_write = LocalBackend.write

    def refuse(self: LocalBackend, key: str, data: bytes, **kw: bool) -> bool:
        if key.startswith("index/"):
            raise PermissionDenied(str(self.root / key), "write")
        return real_write(self, key, data, **kw)

    monkeypatch.setattr(LocalBackend, "write", refuse)
    manager = CheckpointManager(project, store, ProjectView(project, identify=lambda: "test:project"))
    for _ in range(2):
        backend.reads.clear()
        assert len(manager.list_checkpoints()) == 5 and not manager.damaged
        assert backend.reads["refs"] == 5
    assert not (tmp_path / "store" / INDEX_KEY).exists()


def test_gc_reads_every_ref_itself_whatever_the_index_maps(project: Path) -> None:
    """A crafted index that maps B's id (with B's valid token) to A's record: gc must not keep A twice
    and sweep what only B reaches."""
    import time
    from datetime import datetime, timedelta

    from rrstore.gc import Retention
    from rrstore.recordindex import IndexedRef, RecordIndex

    (project / "a.txt").write_bytes(b"one\n")
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("standard", 1, "a").checkpoint_id
    (project / "a.txt").write_bytes(b"two, only in the second\n")
    second = system.checkpoint("standard", 2, "b").checkpoint_id
    time.sleep(2.1)  # past the racy window, so the index's tokens are trusted
    system.checkpoint_manager.list_checkpoints()
    backend = system.checkpoint_manager.store.backend
    index = RecordIndex.decode(backend.read(INDEX_KEY))
    b = index.refs[second]
    index.refs[second] = IndexedRef(b.token, index.refs[first].oid, b.added_ns)
    backend.write(INDEX_KEY, index.encode())
    result = RollbackRecoverySystem(root=project).gc(Retention(), now=datetime.now().astimezone() + timedelta(days=1))
    assert sorted(result.kept) == sorted([first, second])
    (project / "a.txt").write_bytes(b"else\n")
    assert RollbackRecoverySystem(root=project).restore(second).success
    assert (project / "a.txt").read_bytes() == b"two, only in the second\n"


@pytest.mark.parametrize("raw", [b"[" * 200_000 + b"]" * 200_000, b'{"format": 1, "refs": {"x": 5}, "records": 7}'],
                         ids=["nested", "odd-types"])
def test_a_crafted_index_is_a_note_and_every_command_answers_from_the_refs(taken, cli: Cli, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    import blake3
    import zstandard

    from rrstore.recordindex import MAGIC

    _, store, _ = taken
    expected = truth(cli, store.parent, store)
    body = MAGIC + zstandard.ZstdCompressor().compress(raw)
    (store / INDEX_KEY).write_bytes(body + blake3.blake3(body).digest())
    assert answers(cli, store.parent) == expected
    checked = cli("check", "--json", cwd=store.parent)
    assert checked.returncode == 0 and "Traceback" not in checked.stderr
