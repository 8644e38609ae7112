"""Shared helpers of the gc tests (test_gc_*.py): work trees, store inspection, the a/c/b scenario.

Everything builds real directories, real packs and real checkpoints; nothing here is a test.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.record import CheckpointRecord
from rrstore.store.objects import ObjectStore
from rrstore.store.pack import decode_index
from rrstore.tree import reachable

Cli = Callable[..., subprocess.CompletedProcess[str]]
Manifest = Callable[..., dict[str, tuple[object, ...]]]

DAY = timedelta(days=1)
BIG = 600 << 10  # a large file stored whole
CHUNKED = (4 << 20) + (512 << 10)  # above the 4 MiB chunking threshold: several chunk objects
JSON_KEYS = {"records_removed", "objects_removed", "bytes_freed", "removed", "kept", "dry_run"}


# --- work trees -------------------------------------------------------------------------------------------


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def text(seed: int) -> bytes:
    rng = random.Random(seed)
    words = ["value", "result", "items", "config", "path", "name", "count", "index", "total", "data"]
    lines = [f'"""Module {seed}."""', "", "import os", ""]
    for j in range(rng.randint(3, 8)):
        lines.append(f"def {rng.choice(words)}_{j}(x):")
        lines.append(f"    return x + {rng.randint(0, 999)}  # {rng.choice(words)}")
    return ("\n".join(lines) + "\n").encode()


def clear(root: Path) -> None:
    for item in root.iterdir():
        if item.name == ".checkpoints":
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


@dataclass
class State:
    files: dict[str, bytes]
    execs: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    empty_dirs: tuple[str, ...] = ()


def write_state(root: Path, state: State) -> None:
    """Make ``root`` hold exactly ``state`` (the store aside)."""
    clear(root)
    for rel, data in state.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o755 if rel in state.execs else 0o644)
    for rel, target in state.links:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    for rel in state.empty_dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)


def common_files() -> dict[str, bytes]:
    files = {f"src/pkg/mod{i}.py": text(i) for i in range(12)}
    files["bin/run.sh"] = b"#!/bin/sh\necho run\n"
    files["bin/plain.sh"] = b"#!/bin/sh\necho plain\n"
    files["data/shared.bin"] = rand(1, BIG)
    files["data/chunked.bin"] = rand(2, CHUNKED)
    return files


def with_specials(files: dict[str, bytes]) -> State:
    """An executable, a symlink, a dangling symlink and empty directories beside ``files``."""
    return State(files, execs=("bin/run.sh",), links=(("link", "src/pkg/mod1.py"), ("dangling", "nowhere/at/all")),
                 empty_dirs=("empty/inner", "also-empty"))


def state_a() -> State:
    files = common_files()
    files.update({f"a/notes{i}.txt": text(100 + i) for i in range(5)})
    files["data/a_only.bin"] = rand(3, BIG)
    return with_specials(files)


def state_b() -> State:
    files = common_files()
    files["src/pkg/mod0.py"] = text(0) + b"# changed in b\n"
    files["data/chunked.bin"] = files["data/chunked.bin"][:-4096] + rand(9, 4096)  # only the tail chunk differs
    files["b/new.txt"] = text(200)
    return with_specials(files)


def state_c() -> State:
    """Nothing in common with a or b: the pack of its checkpoint holds only its own objects."""
    return State({f"c/unique{i}.txt": text(500 + i) for i in range(6)})


# --- store inspection -------------------------------------------------------------------------------------


def store_of(system: RollbackRecoverySystem) -> Path:
    return system.store_path


def fresh(store: Path) -> ObjectStore:
    """A new ObjectStore on the directory, as another process would open it."""
    return ObjectStore(LocalBackend(store))


def reach(store: Path, record: CheckpointRecord) -> set[str]:
    """The record and every tree and content object the checkpoint reaches."""
    return {record.record_oid, *reachable(fresh(store), record.state_hash)}


def loose_oids(store: Path) -> set[str]:
    folder = store / "objects"
    return {p.parent.name + p.name for p in folder.glob("*/*") if p.is_file()}


def pack_ids(store: Path) -> set[str]:
    return {p.stem for p in (store / "packs").glob("*.pack")}


def packed_oids(store: Path) -> dict[str, set[str]]:
    """oid -> the packs whose on-disk index lists it."""
    out: dict[str, set[str]] = {}
    for idx in (store / "packs").glob("*.idx"):
        for oid in decode_index(idx.stem, idx.read_bytes()):
            out.setdefault(oid, set()).add(idx.stem)
    return out


def stored_bytes(store: Path) -> int:
    """What objects take on disk: loose frames and pack files (indexes aside), as bytes_freed counts them."""
    loose = sum(p.stat().st_size for p in (store / "objects").glob("*/*") if p.is_file())
    return loose + sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def store_files(store: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of the store but the lock files and the derived indexes under ``index/`` (a read may
    refresh them): (size, mtime_ns, sha256). 'Unchanged' means equal."""
    out = {}
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if rel.startswith(("locks/", "index/")) or not path.is_file():
            continue
        st = path.stat()
        out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def ref_ids(store: Path) -> set[str]:
    folder = store / "refs" / "checkpoints"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def assert_consistent(store: Path) -> dict[str, set[str]]:
    """Every ref reaches only objects that exist and verify; returns id -> reached objects."""
    objects = fresh(store)
    out = {}
    for checkpoint_id in sorted(ref_ids(store)):
        oid = (store / "refs" / "checkpoints" / checkpoint_id).read_text().splitlines()[0]  # line 2: when it was added
        record = CheckpointRecord.decode(oid, objects.get(oid))
        reached = {oid}
        for obj in reachable(objects, record.state_hash):
            objects.get(obj)  # raises ObjectMissing / CorruptObject
            reached.add(obj)
        out[checkpoint_id] = reached
    return out


def between(older: CheckpointRecord, newer: CheckpointRecord) -> datetime:
    """A moment strictly between the two checkpoints' creation times."""
    assert older.created < newer.created
    return older.created + (newer.created - older.created) / 2


def aware_now() -> datetime:
    return datetime.now().astimezone()


def restore_matches(system: RollbackRecoverySystem, root: Path, checkpoint_id: str,
                    want: dict[str, tuple[object, ...]], manifest: Manifest, scramble: State) -> None:
    """Put other content in the tree, restore ``checkpoint_id`` and compare the full manifest."""
    write_state(root, scramble)
    assert manifest(root) != want
    result = system.restore(checkpoint_id)
    assert not result.failures
    assert manifest(root) == want


# --- scenario: a (old), c (old, nothing shared), b (young, shares with a) ---------------------------------


@dataclass
class Scenario:
    system: RollbackRecoverySystem
    store: Path
    a: CheckpointRecord
    c: CheckpointRecord
    b: CheckpointRecord
    packs_a: set[str]
    packs_c: set[str]
    want_b: dict[str, tuple[object, ...]]

    @property
    def now(self) -> datetime:
        """With the default 7-day rule: a and c are old, b is young."""
        return between(self.c, self.b) + timedelta(days=7)


def build(root: Path, manifest: Manifest) -> Scenario:
    system = RollbackRecoverySystem(root=root)
    write_state(root, state_a())
    a = system.checkpoint("standard", 1, "a").record
    store = store_of(system)
    packs_a = pack_ids(store)
    write_state(root, state_c())
    c = system.checkpoint("standard", 2, "c").record
    packs_c = pack_ids(store) - packs_a
    write_state(root, state_b())
    b = system.checkpoint("standard", 3, "b").record
    return Scenario(system, store, a, c, b, packs_a, packs_c, manifest(root))


def small_state(step: int) -> State:
    return State({"counter.txt": f"{step}\n".encode(), "same.txt": b"same\n"})


def manifest_of_state(root: Path, state: State, manifest: Manifest) -> dict[str, tuple[object, ...]]:
    write_state(root, state)
    return manifest(root)
