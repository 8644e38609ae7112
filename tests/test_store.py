"""The store as a whole: a directory that knows it is a store, and tmp/ leftovers swept by the next writer."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tree_manifest, write

from rrstore import RollbackRecoverySystem
from rrstore.config import Settings
from rrstore.errors import StoreConfigMissing
from rrstore.lock import locked
from rrstore.store.store import OBJECTS_LOCK, TMP_GRACE, Store, sweep_tmp, write_config
from rrstore.worktree.gitrepo import project_identity

Cli = Callable[..., subprocess.CompletedProcess[str]]
DAY = 86400.0


def one_error_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def store_files(store: Path) -> dict[str, tuple[object, ...]]:
    """Every file of the store with its bytes' hash: what 'refused, changed nothing' must keep
    (but for ``index/``: derived caches a read may refresh, see docs/store-format.md)."""
    return tree_manifest(store, skip=("index",))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


# --- a store without config.json -------------------------------------------------------------------


def test_store_that_lost_its_config_is_refused_not_reinitialised(project: Path, cli: Cli, manifest) -> None:
    """The guide's `find .checkpoints -mtime +7 -delete` takes config.json (written once, the oldest file)
    and the oldest objects and refs; what survives must not be re-initialised over (issue 8, hole 10)."""
    write(project, "a.txt", "first\n")
    first = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "old", cwd=project)
    assert first.returncode == 0, first.stderr
    write(project, "a.txt", "second\n")
    write(project, "b.txt", "new\n")
    second = cli("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "new", cwd=project)
    assert second.returncode == 0, second.stderr
    state = manifest(project)
    store = project / ".checkpoints"
    age(store / "config.json", 8 * DAY)
    age(store / "refs" / "checkpoints" / first.stdout.strip(), 8 * DAY)
    subprocess.run(["find", str(store), "-mtime", "+7", "-delete"], check=True)
    assert not (store / "config.json").exists()
    before = store_files(store)
    want = (f"rrstore: error: store damaged: {store} has objects/refs but no config.json; "
            f"run rrstore check --repair")

    for args in (("checkpoint", "--lane", "standard", "--step-number", "3", "--step-name", "after"),
                 ("list",), ("show", "latest"), ("restore", "--checkpoint-id", second.stdout.strip()),
                 ("status",)):
        assert one_error_line(cli(*args, cwd=project), 13) == want, args
        assert store_files(store) == before, args  # nothing written: no config, no ref, no object

    with pytest.raises(StoreConfigMissing):
        Store.open(store, Settings(), create=True)
    assert write_config(store) is True  # what check --repair calls
    assert write_config(store) is False  # never replaces a config
    listed = cli("list", cwd=project)
    assert listed.stdout.splitlines() == [f"{second.stdout.strip()}: new (standard)"]
    write(project, "a.txt", "changed after the damage\n")
    restored = cli("restore", "--checkpoint-id", second.stdout.strip(), cwd=project)
    assert restored.returncode == 0, restored.stderr
    assert manifest(project) == state


@pytest.mark.parametrize("layout", ["absent", "empty", "only tmp and locks"])
def test_a_directory_without_store_data_is_still_created_as_a_store(project: Path, layout: str) -> None:
    store = project / ".checkpoints"
    if layout != "absent":
        store.mkdir()
    if layout == "only tmp and locks":
        (store / "tmp").mkdir()
        (store / "locks").mkdir()
        (store / "locks" / "objects.lock").write_text("")
        (store / "objects" / "ab").mkdir(parents=True)  # directories without a file hold nothing
    write(project, "a.txt", "x\n")
    result = RollbackRecoverySystem(root=project).checkpoint("standard", 1, "fresh")
    assert (store / "config.json").is_file()
    assert [r.checkpoint_id for r in RollbackRecoverySystem(root=project).list().checkpoints] == [
        result.checkpoint_id]


# --- tmp/ leftovers -----------------------------------------------------------------------------------


def _leftovers(store: Path) -> tuple[Path, Path]:
    tmp = store / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old = tmp / "pack.4242.abcdef.tmp"
    old.write_bytes(b"k" * 100_000)  # what a killed checkpoint leaves
    age(old, TMP_GRACE + 60)
    young = tmp / "idx.4343.abcdef.tmp"
    young.write_bytes(b"in flight")
    age(young, TMP_GRACE - 60)
    return old, young


@pytest.mark.parametrize("verb", ["checkpoint", "restore", "import"])
def test_the_next_writer_sweeps_old_tmp_leftovers(project: Path, tmp_path: Path, cli: Cli, verb: str) -> None:
    write(project, "a.txt", "one\n")
    made = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "one", cwd=project)
    assert made.returncode == 0, made.stderr
    archive = tmp_path / "one.rra"
    assert cli("export", made.stdout.strip(), "--output", str(archive), cwd=project).returncode == 0
    store = project / ".checkpoints"
    old, young = _leftovers(store)
    write(project, "a.txt", "two\n")
    args = {"checkpoint": ("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "two"),
            "restore": ("restore", "--checkpoint-id", made.stdout.strip()),
            "import": ("import", str(archive))}[verb]

    out = cli(*args, cwd=project)

    assert out.returncode == 0, out.stderr
    assert not old.exists()
    assert young.exists()  # younger than the grace: may belong to a running write


def test_no_sweep_while_another_rrstore_holds_the_store(project: Path, cli: Cli) -> None:
    """A running pull keeps its staged files in tmp/ for as long as it takes: a writer that starts
    meanwhile must not sweep them, however old."""
    write(project, "a.txt", "one\n")
    RollbackRecoverySystem(root=project).checkpoint("standard", 1, "one")
    store = project / ".checkpoints"
    old, _ = _leftovers(store)
    write(project, "a.txt", "two\n")
    with locked(store, OBJECTS_LOCK, exclusive=False):
        out = cli("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "two", cwd=project)
    assert out.returncode == 0, out.stderr
    assert old.exists()
    assert Store.open(store, Settings()).sweep_leftovers() == 1
    assert not old.exists()


def test_sweep_tmp_removes_only_old_regular_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old, young = _leftovers(store)
    (store / "tmp" / "a-dir").mkdir()
    age(store / "tmp" / "a-dir", 2 * DAY)
    os.symlink("/etc/passwd", store / "tmp" / "link")
    age(store / "tmp" / "link", 2 * DAY)
    before = time.time() - TMP_GRACE

    dry = sweep_tmp(store, before, dry_run=True)
    assert dry.removed == [(old, 100_000)] and old.exists()
    swept = sweep_tmp(store, before)
    assert swept.removed == [(old, 100_000)] and swept.errors == {}
    assert sorted(os.listdir(store / "tmp")) == ["a-dir", "idx.4343.abcdef.tmp", "link"]
    assert young.exists()
    assert sweep_tmp(tmp_path / "nowhere", before).removed == []


# --- order: when checkpoints were added to this store, not what their records claim ------------------

FUTURE = "9999-12-31T23:59:59.000000+00:00"


def _future_archive(tmp_path: Path) -> tuple[Path, str]:
    """An archive of one checkpoint whose record is dated 9999-12-31 (valid in every other respect), taken
    elsewhere for the project at tmp_path/project (so its 'latest' and list see it)."""
    source = tmp_path / "elsewhere"
    write(source, "f.txt", "from the future\n")
    system = RollbackRecoverySystem(root=source)
    record = system.checkpoint("standard", 7, "time traveller").record
    record.timestamp = FUTURE
    record.project = project_identity(tmp_path / "project")
    manager = system.checkpoint_manager
    with manager.store.writing():
        manager.update(record)
    archive = tmp_path / "future.rra"
    system.export([record.checkpoint_id], archive)
    return archive, record.checkpoint_id


def test_a_record_dated_9999_is_not_latest_once_a_newer_checkpoint_is_added(
        project: Path, tmp_path: Path, cli: Cli, manifest) -> None:
    archive, future = _future_archive(tmp_path)
    write(project, "f.txt", "local one\n")
    system = RollbackRecoverySystem(root=project)
    before = system.checkpoint("standard", 1, "local before").checkpoint_id
    assert cli("import", str(archive), cwd=project).returncode == 0
    assert system.show("latest").checkpoint_id == future  # the last one this store got, whatever it claims
    write(project, "f.txt", "local two\n")
    local = system.checkpoint("standard", 2, "local after").checkpoint_id
    state = manifest(project)

    assert system.show("latest").checkpoint_id == local
    assert [r.checkpoint_id for r in system.list().checkpoints] == [local, future, before]
    assert cli("list", cwd=project).stdout.splitlines()[0] == f"{local}: local after (standard)"
    write(project, "f.txt", "edited\n")
    assert cli("restore", "--checkpoint-id", "latest", cwd=project).returncode == 0
    assert manifest(project) == state
    plan = system.plan("test_failure", "standard")
    assert plan.checkpoint_id in (None, local) and plan.checkpoint_id != future

    # flagged, not refused: list -v, show and their --json say so; local ones are not flagged
    table = cli("list", "-v", cwd=project)
    row = next(line for line in table.stdout.splitlines() if line.startswith(future))
    assert row.endswith("[future-dated]")
    assert not any(line.endswith("[future-dated]") for line in table.stdout.splitlines() if future not in line)
    assert table.stderr.splitlines() == [
        next(line for line in table.stderr.splitlines() if f"checkpoint {future} is future-dated" in line)]
    listed = {r["checkpoint_id"]: r for r in json.loads(cli("list", "--json", cwd=project).stdout)}
    assert listed[future]["future_dated"] is True and listed[future]["timestamp"] == FUTURE
    assert listed[local]["future_dated"] is False and listed[before]["future_dated"] is False
    shown = cli("show", future, cwd=project)
    assert "future_dated: True" in shown.stdout.splitlines()
    assert f"checkpoint {future} is future-dated" in shown.stderr
    assert json.loads(cli("show", future, "--json", cwd=project).stdout)["future_dated"] is True
    assert "future_dated" not in cli("show", local, cwd=project).stdout
    checked = cli("check", cwd=project)  # accepted, not damage: exit 0, and said
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [line for line in checked.stderr.splitlines() if "future-dated" in line] and future in checked.stderr
    assert json.loads(cli("check", "--json", cwd=project).stdout)["notes"] != []


def test_refs_of_older_versions_order_by_record_time_clamped_to_the_ref_file(project: Path, tmp_path: Path,
                                                                              cli: Cli) -> None:
    """A one-line ref (written before refs carried their add time) must still list, and a future-dated
    record behind one must not be 'latest' beyond when its ref file was written."""
    archive, future = _future_archive(tmp_path)
    system = RollbackRecoverySystem(root=project)
    write(project, "f.txt", "one\n")
    first = system.checkpoint("standard", 1, "one").checkpoint_id
    assert cli("import", str(archive), cwd=project).returncode == 0
    refs = project / ".checkpoints" / "refs" / "checkpoints"
    for name in (first, future):  # as an older rrstore wrote them
        path = refs / name
        path.write_text(path.read_text().splitlines()[0] + "\n")
    age(refs / future, 3600)  # imported an hour ago
    assert system.show("latest").checkpoint_id == first
    write(project, "f.txt", "two\n")
    second = system.checkpoint("standard", 2, "two").checkpoint_id

    records = system.list().checkpoints
    assert [r.checkpoint_id for r in records] == [second, first, future]
    assert [r.future_dated for r in records] == [False, False, True]
    assert system.show("latest").checkpoint_id == second
    assert len((refs / second).read_text().splitlines()) == 2  # new refs carry their add time


def test_updating_a_record_keeps_its_place_in_the_order(project: Path) -> None:
    """``run`` rewrites a step's record when the step ends: that must not make it newer than later ones."""
    system = RollbackRecoverySystem(root=project)
    write(project, "f.txt", "one\n")
    first = system.checkpoint("standard", 1, "one").record
    write(project, "f.txt", "two\n")
    second = system.checkpoint("standard", 2, "two").checkpoint_id
    first.success, first.error_message = False, "exit status 1"
    manager = system.checkpoint_manager
    with manager.store.writing():
        manager.update(first)
    assert [r.checkpoint_id for r in system.list().checkpoints] == [second, first.checkpoint_id]
    assert system.show(first.checkpoint_id).success is False


# --- a disk-full import ---------------------------------------------------------------------------------




def test_disk_full_import_leaves_no_record_or_object_behind(project: Path, tmp_path: Path, tiny_tmpfs: Path,
                                                            cli: Cli) -> None:
    source = tmp_path / "source"
    write(source, "big/a.bin", os.urandom(700_000))
    write(source, "big/b.bin", os.urandom(700_000))
    system = RollbackRecoverySystem(root=source)
    big = system.checkpoint("standard", 9, "too big").checkpoint_id
    archive = tmp_path / "big.rra"
    system.export([big], archive)
    store = tiny_tmpfs / "store"
    write(project, "small.txt", "fits\n")
    first = cli("--store", str(store), "checkpoint", "--lane", "standard", "--step-number", "1",
                "--step-name", "fits", cwd=project)
    assert first.returncode == 0, first.stderr
    before = store_files(store)

    line = one_error_line(cli("--store", str(store), "import", str(archive), cwd=project), 15)

    assert "no space left" in line.lower()
    assert store_files(store) == before  # no record, no pack, no temporary file
    assert cli("--store", str(store), "list", cwd=project).stdout.splitlines() == [
        f"{first.stdout.strip()}: fits (standard)"]


def test_ref_format_reads_old_and_new_refs_and_a_damaged_add_time_costs_only_the_order() -> None:
    from rrstore.errors import CorruptObject
    from rrstore.store.refs import Ref, decode_ref, encode_ref

    oid = "ab" * 32
    assert encode_ref(oid, 1764582000123456789) == f"{oid}\n1764582000123456789\n".encode()
    assert decode_ref("x", encode_ref(oid, 42)) == Ref(oid, 42)
    assert decode_ref("x", f"{oid}\n".encode()) == Ref(oid, None)  # written by an older rrstore
    assert decode_ref("x", f"{oid}".encode()) == Ref(oid, None)
    assert decode_ref("x", f"{oid}\n12\nlater-field\n".encode()) == Ref(oid, 12)  # later lines are ignored
    for damaged in (b"1x3", b"-5", b"\xff\xfe", b"9" * 40, b""):
        assert decode_ref("x", oid.encode() + b"\n" + damaged + b"\n") == Ref(oid, None)
    with pytest.raises(CorruptObject):
        decode_ref("x", b"junk\n42\n")


def test_a_format_1_store_is_read_as_is_and_says_format_2_before_its_first_new_write(project: Path, cli: Cli,
                                                                                     manifest) -> None:
    """Format 2 refs (add time) and packs (RRPK2) would be misread by an older rrstore: the config says so
    before any of them lands, and only a write changes it."""
    write(project, "f.txt", "one\n")
    first = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "one", cwd=project)
    config = project / ".checkpoints" / "config.json"
    doc = json.loads(config.read_text())
    assert doc["format"] == "rrstore-store-2"
    doc["format"] = "rrstore-store-1"  # as an older rrstore made it
    config.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    before = config.read_bytes()
    state = manifest(project)

    for args in (("list",), ("show", "latest"), ("status",), ("check", "--read-data"),
                 ("restore", "--checkpoint-id", "latest", "--dry-run")):
        assert cli(*args, cwd=project).returncode == 0, args
    assert config.read_bytes() == before and manifest(project) == state  # reading changes nothing

    write(project, "f.txt", "two\n")
    assert cli("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "two",
               cwd=project).returncode == 0
    upgraded = json.loads(config.read_text())
    assert upgraded == {**doc, "format": "rrstore-store-2"}
    assert cli("restore", "--checkpoint-id", first.stdout.strip(), cwd=project).returncode == 0
    assert (project / "f.txt").read_text() == "one\n"
