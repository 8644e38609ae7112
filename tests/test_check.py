"""``rrstore check`` / ``check --repair`` and hole 6 (one damaged pack index must not block work).

Real stores on disk, real byte flips at offsets computed from the real index and pack, the
real CLI in a subprocess, a real SeaweedFS remote for ``--from s3://``.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import zstandard
from conftest import run_cli, tree_manifest, write

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.check import Walk, in_subset
from rrstore.errors import StoreDamaged
from rrstore.gc import Retention
from rrstore.store.objects import ObjectStore, hash_bytes, object_key
from rrstore.store.pack import PACK_MAGIC_V1, decode_index, encode_index
from rrstore.tree import DIR, FILE, Entry, content_oids, flatten, tree_oid

Manifest = dict[str, tuple[object, ...]]


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Store:
    """A project with three checkpoints: ``a`` (set 1), ``b`` (set 2 only: other packs), ``c`` (set 1 + more)."""

    root: Path
    ids: dict[str, str]
    manifests: dict[str, Manifest]
    packs: dict[str, str]    # checkpoint name -> the pack its new objects went into

    @property
    def path(self) -> Path:
        return self.root / ".checkpoints"

    def system(self) -> RollbackRecoverySystem:
        return RollbackRecoverySystem(root=self.root)

    def idx(self, name: str) -> Path:
        return self.path / "packs" / f"{self.packs[name]}.idx"

    def pack(self, name: str) -> Path:
        return self.path / "packs" / f"{self.packs[name]}.pack"

    def entries(self, name: str) -> dict[str, tuple[str, int, int, int, int]]:
        return decode_index(self.packs[name], self.idx(name).read_bytes())

    def check(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("check", *args, cwd=self.root)

    def restores_all(self) -> None:
        """Every checkpoint restores byte-identically (undo points are not compared)."""
        for name, checkpoint_id in self.ids.items():
            self.system().restore(checkpoint_id)
            assert tree_manifest(self.root) == self.manifests[name], name


def _new_pack(store: Path, before: set[str]) -> str:
    [pack] = {p.stem for p in (store / "packs").glob("*.pack")} - before
    return pack


def build(root: Path) -> Store:
    """Set 1 holds five incompressible 300 KiB files (several zstd blocks, stored raw) and a text file."""
    root.mkdir()
    set1 = {f"data/one{i}.bin": rand(i, 300 << 10) for i in range(5)} | {"notes.txt": b"first notes\n"}
    set2 = {f"other/two{i}.bin": rand(100 + i, 200 << 10) for i in range(2)}
    system = RollbackRecoverySystem(root=root)
    ids: dict[str, str] = {}
    manifests: dict[str, Manifest] = {}
    packs: dict[str, str] = {}
    store = root / ".checkpoints"
    for name, files, drop in (("a", set1, ()), ("b", set2, ("data", "notes.txt")), ("c", set1, ("other",))):
        for gone in drop:
            shutil.rmtree(root / gone) if (root / gone).is_dir() else (root / gone).unlink()
        for rel, data in files.items():
            write(root, rel, data)
        if name == "c":
            write(root, "extra.txt", b"only in c\n")
        before = {p.stem for p in (store / "packs").glob("*.pack")} if (store / "packs").is_dir() else set()
        ids[name] = system.checkpoint("standard", len(ids) + 1, f"step-{name}").checkpoint_id
        manifests[name] = tree_manifest(root)
        packs[name] = _new_pack(store, before)
    return Store(root, ids, manifests, packs)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return build(tmp_path / "project")


def flip(path: Path, at: int, mask: int = 0x40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))


def flip_inside_file(store: Store, rel: str) -> str:
    """Flip one byte of ``rel``'s stored bytes inside its (raw) zstd block in pack ``a``; its oid."""
    entry = flatten(store.system().open_store().objects, store.system().show(store.ids["a"]).state_hash)[rel]
    [oid] = content_oids(entry)
    _, block_offset, block_size, _, _ = store.entries("a")[oid]
    payload = (store.root / rel).read_bytes()
    data = store.pack("a").read_bytes()
    at = data.find(payload[1000:1064], block_offset, block_offset + block_size)
    assert at > 0
    flip(store.pack("a"), at + 7)
    return oid


# --- hole 6: a damaged index never blocks work that does not need it --------------------------------


def test_a_damaged_index_does_not_block_restore_or_gc(store: Store) -> None:
    """Fails before the fix: PackReader.refresh raised on the first bad index, so every restore and gc
    exited 13 -- also for ``b``, whose objects are all in other packs."""
    idx = store.idx("a")
    flip(idx, len(idx.read_bytes()) // 2, 0x01)
    damaged = idx.read_bytes()

    store.system().restore(store.ids["b"])
    assert tree_manifest(store.root) == store.manifests["b"]
    result = store.system().gc()
    assert result.success and result.removed == []
    store.system().restore(store.ids["a"])  # its objects sit behind the damaged index: rebuilt in memory
    assert tree_manifest(store.root) == store.manifests["a"]
    assert idx.read_bytes() == damaged and store.pack("a").exists()  # gc neither rewrote nor removed them

    done = run_cli("restore", "--checkpoint-id", store.ids["c"], cwd=store.root)
    assert done.returncode == 0, done.stderr
    assert tree_manifest(store.root) == store.manifests["c"]


def test_gc_refuses_when_a_damaged_index_cannot_be_rebuilt(store: Store) -> None:
    """A format-1 pack does not describe itself: with its index damaged, gc cannot know what it holds."""
    payload = b"an object of an old-format pack"
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(payload)
    body = PACK_MAGIC_V1 + frame
    name = blake3.blake3(body).hexdigest()
    (store.path / "packs" / f"{name}.pack").write_bytes(body)
    index = encode_index({hash_bytes(payload): (name, len(PACK_MAGIC_V1), len(frame), 0, len(payload))})
    (store.path / "packs" / f"{name}.idx").write_bytes(index[:-1] + bytes([index[-1] ^ 1]))
    listing = sorted(p.name for p in (store.path / "packs").iterdir())

    with pytest.raises(StoreDamaged) as info:
        store.system().gc(Retention(older_than=Retention().grace * 0))
    assert name in str(info.value) and "rrstore check --repair" in str(info.value)
    assert sorted(p.name for p in (store.path / "packs").iterdir()) == listing
    assert set(store.system().open_store().refs) == set(store.ids.values())
    done = run_cli("gc", "--older-than", "0s", cwd=store.root)
    assert done.returncode == 13 and len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- check: what it finds, and which checkpoints each problem affects ----------------------------------


def test_check_of_a_healthy_store_exits_0(store: Store) -> None:
    for args in ((), ("--read-data",), ("--read-data-subset", "50%")):
        done = store.check(*args)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "" and "store healthy" in done.stderr


def test_read_data_reports_exactly_the_checkpoints_reaching_a_flipped_block(store: Store) -> None:
    oid = flip_inside_file(store, "data/one2.bin")

    plain = store.check()  # records and trees only: latent damage in file contents is not read
    assert plain.returncode == 0, plain.stdout + plain.stderr

    done = store.check("--read-data")
    assert done.returncode == 13, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"object-corrupt {oid}:")
    assert line.endswith(f"(affected checkpoints: {', '.join(sorted([store.ids['a'], store.ids['c']]))})")
    assert store.ids["b"] not in done.stdout
    assert "store damaged: 1 problem(s), 2 checkpoint(s) affected" in done.stderr

    doc = json.loads(run_cli("check", "--read-data", "--json", cwd=store.root).stdout)
    assert doc["success"] is False and doc["exit_code"] == 13
    assert doc["damaged_checkpoints"] == sorted([store.ids["a"], store.ids["c"]])
    [problem] = doc["problems"]
    assert problem == {"kind": "object-corrupt", "target": oid, "reason": problem["reason"],
                       "checkpoints": sorted([store.ids["a"], store.ids["c"]])}
    assert set(doc) == {"store", "success", "exit_code", "read_data", "checkpoints", "trees", "objects",
                        "data_read", "packs", "damaged_checkpoints", "problems", "repaired",
                        "found_before_repair", "notes"}
    assert doc["checkpoints"] == 3 and doc["read_data"] is True and doc["data_read"] >= 8


def test_read_data_subset_reads_the_packs_its_names_select(store: Store) -> None:
    """The subset is chosen by pack name: below the damaged pack's share it is not read, above it is."""
    flip_inside_file(store, "data/one1.bin")
    share = int(store.packs["a"][:8], 16) / (1 << 32) * 100
    assert in_subset(store.packs["a"], share + 0.01) and not in_subset(store.packs["a"], share - 0.01)
    if share > 0.02:
        assert store.check("--read-data-subset", f"{share - 0.01}%").returncode == 0
    assert store.check("--read-data-subset", f"{min(share + 0.01, 100)}%").returncode == 13
    assert store.check("--read-data-subset", "100%").returncode == 13


def test_check_reports_every_structural_problem_at_once(store: Store) -> None:
    flip(store.idx("a"), 40, 0x01)
    store.idx("b").unlink()
    (store.path / "config.json").unlink()
    ref = store.path / "refs" / "checkpoints" / store.ids["c"]
    good_ref = ref.read_bytes()
    ref.write_bytes(b"not an oid\n")

    done = store.check("--json")
    assert done.returncode == 13, done.stderr
    doc = json.loads(done.stdout)
    kinds = {p["kind"]: p for p in doc["problems"]}
    assert set(kinds) == {"index-damaged", "index-missing", "config-missing", "ref-unreadable"}
    assert kinds["index-damaged"]["target"] == f"packs/{store.packs['a']}.idx"
    assert kinds["index-damaged"]["checkpoints"] == [store.ids["a"]]  # c's ref is unreadable
    assert kinds["index-missing"]["target"] == f"packs/{store.packs['b']}.pack"
    assert kinds["index-missing"]["checkpoints"] == [store.ids["b"]]
    assert kinds["ref-unreadable"]["checkpoints"] == [store.ids["c"]]
    ref.write_bytes(good_ref)


def test_a_missing_pack_is_reported_with_the_checkpoints_it_affects(store: Store) -> None:
    record = store.system().show(store.ids["b"])
    store.pack("b").unlink()  # b's objects are gone, its index remains
    done = store.check("--json")
    assert done.returncode == 13
    doc = json.loads(done.stdout)
    assert {p["kind"] for p in doc["problems"]} == {"tree-missing", "pack-missing"}
    assert all(p["checkpoints"] == [store.ids["b"]] for p in doc["problems"])
    assert any(p["target"] == record.state_hash for p in doc["problems"])


def test_index_entries_past_the_end_of_their_pack_are_reported(store: Store) -> None:
    entries = store.entries("b")
    size = store.pack("b").stat().st_size
    [victim] = sorted(oid for oid, loc in entries.items() if loc[4] > 100 << 10)[:1]
    pack, _, block_size, offset, length = entries[victim]
    entries[victim] = (pack, size + 10, block_size, offset, length)  # well checksummed, but out of range
    store.idx("b").write_bytes(encode_index(entries))
    doc = json.loads(store.check("--json").stdout)
    kinds = {p["kind"]: p for p in doc["problems"]}
    assert set(kinds) == {"index-entry-out-of-range", "object-corrupt"}
    assert kinds["object-corrupt"]["target"] == victim
    assert kinds["object-corrupt"]["checkpoints"] == [store.ids["b"]]
    assert kinds["index-entry-out-of-range"]["checkpoints"] == [store.ids["b"]]


def test_the_walk_has_no_recursion_limit(tmp_path: Path) -> None:
    objects = ObjectStore(LocalBackend(tmp_path / "store"))
    leaf = objects.put(b"deep leaf").oid
    oid, data = tree_oid([Entry("leaf", FILE, leaf, 9)])
    objects.put(data)
    for _ in range(5000):
        oid, data = tree_oid([Entry("d", DIR, oid)])
        objects.put(data)
    objects.flush()
    walk = Walk(ObjectStore(LocalBackend(tmp_path / "store")), lambda o: o if o == leaf else None,
                lambda o: None, {})
    assert walk.marks(oid) == {leaf} and walk.trees == 5001


# --- repair ------------------------------------------------------------------------------------------


def test_repair_rebuilds_indexes_config_and_stat_cache(store: Store) -> None:
    good = {name: store.idx(name).read_bytes() for name in ("a", "b")}
    config = (store.path / "config.json").read_bytes()
    assert list((store.path / "cache").glob("stat-*"))
    flip(store.idx("a"), 50, 0x01)
    damaged = store.idx("a").read_bytes()
    store.idx("b").unlink()
    (store.path / "config.json").unlink()

    done = store.check("--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert store.idx("a").read_bytes() == good["a"]  # rebuilt from the pack: the very index it was written with
    assert store.idx("b").read_bytes() == good["b"]
    assert (store.path / "config.json").read_bytes() == config
    assert not list((store.path / "cache").glob("stat-*"))
    [quarantined] = (store.path / "quarantine").rglob("*.idx")
    assert quarantined.read_bytes() == damaged and quarantined.name == store.idx("a").name
    assert "repaired: wrote config.json" in done.stdout

    again = store.check("--read-data")
    assert again.returncode == 0, again.stdout + again.stderr
    store.restores_all()


@pytest.mark.parametrize("damage", [b'{"format": "rrstore-stose-1"', b'{"format": "rrstore-stose-1", "hash": 1}\n',
                                    b"\x00" * 40])
def test_a_damaged_config_is_store_damage_and_repair_rebuilds_it(store: Store, damage: bytes) -> None:
    """A flipped or truncated config.json: every command says 'store damaged' (13), never 'not a store'."""
    config = (store.path / "config.json").read_bytes()
    (store.path / "config.json").write_bytes(damage)
    for args in (("restore", "--checkpoint-id", store.ids["a"]), ("list",), ("checkpoint", "--lane", "standard",
                                                                         "--step-number", "9", "--step-name", "x")):
        out = run_cli(*args, cwd=store.root)
        assert out.returncode == 13, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "store damaged" in out.stderr and "check --repair" in out.stderr
    assert store.check().returncode == 13
    done = store.check("--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (store.path / "config.json").read_bytes() == config
    [quarantined] = (store.path / "quarantine").rglob("config.json")
    assert quarantined.read_bytes() == damage  # never deleted
    store.restores_all()


def test_a_config_of_a_newer_format_is_not_called_damage(store: Store) -> None:
    (store.path / "config.json").write_text('{"format": "rrstore-store-7"}\n')
    out = run_cli("list", cwd=store.root)
    assert out.returncode == 1 and "unsupported store format 'rrstore-store-7'" in out.stderr


@pytest.mark.parametrize("source", ["archive", "s3"])
def test_repair_from_a_source_replaces_a_flipped_block(
        store: Store, source: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    system = store.system()
    if source == "archive":
        origin = str(tmp_path / "backup.rrar")
        system.export(list(store.ids.values()), origin)
        extra: tuple[str, ...] = ()
    else:
        origin = request.getfixturevalue("s3_remote")
        endpoint = request.getfixturevalue("seaweedfs").endpoint
        system.push(list(store.ids.values()), origin, endpoint)
        extra = ("--endpoint-url", endpoint)
    old_pack = store.pack("a").read_bytes()
    oid = flip_inside_file(store, "data/one3.bin")
    damaged = store.pack("a").read_bytes()

    done = run_cli("check", "--repair", "--read-data", "--from", origin, *extra, cwd=store.root,
                   env=request.getfixturevalue("s3_env") if source == "s3" else None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"stored {oid} again from the source" in done.stdout
    # rewritten without the bad copy (when the rewrite reproduces the pack as it was, it has its old name) ...
    assert not store.pack("a").exists() or store.pack("a").read_bytes() == old_pack
    [kept] = [p for p in (store.path / "quarantine").rglob("*.pack")]
    assert kept.read_bytes() == damaged and kept.read_bytes() != old_pack  # ... which is kept, not deleted
    assert store.check("--read-data").returncode == 0
    store.restores_all()


def test_repair_without_a_source_stores_a_corrupt_object_again_from_the_working_tree(store: Store) -> None:
    """Fails before the fix: with no ``--from``, repair left the corrupt copy in its pack, every new
    checkpoint deduplicated against it (the intact file was never stored again), and ``a`` and ``c``
    stayed unrestorable (exit 13) for good."""
    oid = flip_inside_file(store, "data/one3.bin")  # the working tree (``c``) still holds the file
    assert store.check("--read-data").returncode == 13

    done = store.check("--repair", "--read-data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"dropped the corrupt copy of {oid}" in done.stdout
    assert f"stored {oid} again from the working tree" in done.stdout
    assert store.check("--read-data").returncode == 0
    assert list((store.path / "quarantine").rglob("*.pack"))  # the damaged pack is kept, not deleted
    store.restores_all()


def test_a_new_checkpoint_stores_again_what_repair_dropped_as_corrupt(store: Store) -> None:
    """The working tree no longer holds the content when repair runs: the object is reported missing,
    and the first checkpoint of a tree holding it again makes every old checkpoint whole."""
    oid = flip_inside_file(store, "data/one3.bin")
    kept = (store.root / "data" / "one3.bin").read_bytes()
    (store.root / "data" / "one3.bin").unlink()

    done = store.check("--repair", "--read-data")
    assert done.returncode == 13 and f"object-missing {oid}" in done.stdout, done.stdout + done.stderr
    write(store.root, "data/one3.bin", kept)
    store.system().checkpoint("standard", 4, "the file is back")
    assert store.check("--read-data").returncode == 0
    store.restores_all()


@pytest.mark.parametrize("damage", ["empty ref", "record lost", "another's record"])
def test_a_checkpoint_that_cannot_be_read_is_named_everywhere_and_repair_unblocks_latest_and_gc(
        store: Store, damage: str) -> None:
    """Fails before the fix: ``status`` named an older checkpoint as the newest without a word, while
    ``show latest``, ``restore latest`` and ``gc`` exited 13 and ``check --repair`` left the ref, so
    nothing but deleting the ref file by hand gave the store back. A ref whose record is still in the
    store is pointed at it again (a tester's store lost an intact checkpoint to the next gc when
    repair only moved the emptied ref away); one whose record is gone goes to quarantine."""
    newest = store.ids["c"]
    ref = store.path / "refs" / "checkpoints" / newest
    if damage == "empty ref":
        ref.write_bytes(b"")
    elif damage == "another's record":  # was listed as ``b`` twice, and check said healthy
        shutil.copyfile(ref.parent / store.ids["b"], ref)
    else:
        (store.path / object_key(store.system().show(newest).record_oid)).unlink()
    way_out = "run 'rrstore check --repair'"

    status = run_cli("status", cwd=store.root)
    assert status.returncode == 0 and f"cannot be read ({newest})" in status.stderr and way_out in status.stderr
    assert json.loads(run_cli("status", "--json", cwd=store.root).stdout)["unreadable"] == [newest]
    for verb in (("show", "latest"), ("restore", "--checkpoint-id", "latest"), ("gc", "--dry-run")):
        refused = run_cli(*verb, cwd=store.root)
        assert refused.returncode == 13 and way_out in refused.stderr, (verb, refused.stderr)

    done = store.check("--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"moved refs/checkpoints/{newest} to quarantine/" in done.stdout
    [kept] = (store.path / "quarantine").rglob(newest)
    assert kept.is_file()
    rebuilt = damage != "record lost"
    assert (f"pointed refs/checkpoints/{newest} again at its record" in done.stdout) == rebuilt
    assert ref.exists() == rebuilt
    expected = newest if rebuilt else store.ids["b"]
    assert run_cli("show", "latest", cwd=store.root).stdout.startswith(f"checkpoint_id: {expected}")
    gc = run_cli("gc", "--older-than", "0s", "--keep-last", "3", "--grace", "0s", cwd=store.root)
    assert gc.returncode == 0, gc.stderr
    assert run_cli("status", cwd=store.root).stderr == ""
    if not rebuilt:
        del store.ids["c"]
    store.restores_all()


def test_repair_rebuilds_an_index_entry_that_points_at_other_bytes_instead_of_dropping_the_object(
        store: Store) -> None:
    """Fails before the fix (a reviewer's repro): an index that passes its checksum but sends one oid
    to another object's bytes made repair drop the pack's good copy as corrupt, and with the file gone
    from the working tree the checkpoint was damaged for good: derived data cost a checkpoint."""
    entries = store.entries("a")
    victim, other = sorted(o for o in entries if entries[o][4] > 1000)[:2]
    entries[victim] = entries[other]
    store.idx("a").write_bytes(encode_index(entries))
    for midx in (store.path / "index" / "packs").glob("*.midx"):
        midx.unlink()
    shutil.rmtree(store.root / "data")
    (store.root / "notes.txt").unlink()
    assert store.check("--read-data").returncode == 13

    done = store.check("--repair", "--read-data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"its entry for {victim} pointed at other bytes" in done.stdout
    assert "dropped the corrupt copy" not in done.stdout and "again from the working tree" not in done.stdout
    assert store.check("--read-data").returncode == 0
    store.restores_all()


def test_read_data_finds_a_pack_whose_bytes_no_longer_hash_to_its_name(store: Store) -> None:
    """Fails before the fix: bytes changed where no object read looks (here: appended) left
    ``check --read-data`` saying healthy, until a later index rebuild met them."""
    with open(store.pack("b"), "ab") as fh:
        fh.write(b"bytes nobody wrote")
    assert store.check().returncode == 0  # only reading the data can tell
    found = store.check("--read-data")
    assert found.returncode == 13 and f"pack-damaged packs/{store.packs['b']}.pack" in found.stdout

    done = store.check("--repair", "--read-data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert store.check("--read-data").returncode == 0
    store.restores_all()


def test_a_damaged_tree_elsewhere_does_not_stop_a_restore_of_some_paths(store: Store) -> None:
    """Fails before the fix (a tester's store: one of 200 directories damaged, 19,900 good files that
    no command could get out): ``restore --path`` read every tree that differed, the damaged one too."""
    system = store.system()
    data = flatten(system.open_store().objects, system.show(store.ids["c"]).state_hash)["data"].oid
    entries = store.entries("a")
    del entries[data]  # the tree of data/ (a's and c's) is gone from a's pack
    store.idx("a").write_bytes(encode_index(entries))
    for midx in (store.path / "index" / "packs").glob("*.midx"):
        midx.unlink()
    write(store.root, "data/one0.bin", b"mine")  # both sides differ from the checkpoint
    write(store.root, "notes.txt", b"changed\n")

    partial = run_cli("restore", "--checkpoint-id", store.ids["c"], "--path", "notes.txt", cwd=store.root)
    assert partial.returncode == 0, partial.stderr
    assert (store.root / "notes.txt").read_bytes() == b"first notes\n"
    assert (store.root / "data" / "one0.bin").read_bytes() == b"mine"
    whole = run_cli("restore", "--checkpoint-id", store.ids["c"], cwd=store.root)
    assert whole.returncode == 13 and data in whole.stderr


def test_repair_moves_a_corrupt_loose_copy_that_hides_a_whole_packed_one(store: Store) -> None:
    """Fails before the fix (a reviewer's repro): reads take a loose copy before a packed one (restore's
    undo point may write both), so a bad loose copy made check report the object corrupt; repair then
    rebuilt the (good) pack index and left the loose copy, and the checkpoints stayed unrestorable."""
    oid = hash_bytes(b"first notes\n")
    loose = store.path / object_key(oid)
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(zstandard.ZstdCompressor().compress(b"first NOTES\n"))
    assert store.check("--read-data").returncode == 13

    done = store.check("--repair", "--read-data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{oid} reads whole from its pack now" in done.stdout and "pointed at other bytes" not in done.stdout
    assert not loose.exists() and list((store.path / "quarantine").rglob(oid[2:]))
    store.restores_all()


def test_repair_of_a_lost_index_over_a_damaged_block(store: Store, tmp_path: Path) -> None:
    """The index is rebuilt without the damaged object, which then comes back from the archive."""
    origin = tmp_path / "backup.rrar"
    store.system().export(list(store.ids.values()), str(origin))
    oid = flip_inside_file(store, "data/one4.bin")
    store.idx("a").unlink()

    done = store.check("--read-data", "--json")
    assert done.returncode == 13
    doc = json.loads(done.stdout)
    kinds = {p["kind"] for p in doc["problems"]}
    assert kinds == {"index-missing", "pack-block-damaged", "object-missing"}
    assert all(p["checkpoints"] == sorted([store.ids["a"], store.ids["c"]]) for p in doc["problems"]
               if p["kind"] != "pack-block-damaged")
    assert [p["target"] for p in doc["problems"] if p["kind"] == "object-missing"] == [oid]

    done = store.check("--repair", "--read-data", "--from", str(origin))
    assert done.returncode == 0, done.stdout + done.stderr
    assert store.check("--read-data").returncode == 0
    store.restores_all()


def test_check_refuses_bad_input_in_one_line(store: Store, tmp_path: Path) -> None:
    before = sorted(p.relative_to(store.path) for p in store.path.rglob("*"))
    for args in (("--read-data-subset", "0%"), ("--read-data-subset", "x"), ("--from", "nowhere.rrar")):
        done = store.check(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = run_cli("check", cwd=tmp_path)
    assert done.returncode == 10 and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(store.path) for p in store.path.rglob("*")) == before
