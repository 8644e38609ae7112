"""Bounded memory (issue 11): a checkpoint and a restore of a file far larger than any bound.

The CLI runs in a fresh subprocess wrapper that reports the peak RSS of its
child (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), so nothing of pytest's own
memory is counted. The file is 1 GiB, mostly a hole (cheap to make and to
read) with 48 MiB of random bytes written at six offsets: content that
neither deduplicates nor compresses, more than the bound itself.

The bound, ``RSS_BOUND_MB``: measured on this code, the checkpoint peaks at
42-44 MB, the restore into an empty place at 64-75 MB and the restore over
the changed file (with its undo checkpoint) at 67-79 MB; the interpreter and
imports are ~22 MB of that. Before the streaming pack writer and the bounded restore,
the same steps peaked at 193 MB (every queued object's bytes plus the pack
body) and 222 MB (up to 512 MiB of verified content kept). 110 MB leaves
30 MB for allocator noise and still fails on either old behaviour.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import blake3
import pytest

from rrstore.backends import LocalBackend
from rrstore.store import pack as pack_module
from rrstore.store.objects import ObjectStore
from rrstore.store.pack import BLOCK_SIZE, PackWriter

RSS_BOUND_MB = 110
SIZE = 1 << 30
RANDOM_PIECES = [(n * (SIZE // 6) + 12345, 8 << 20) for n in range(6)]  # (offset, length): 48 MiB

_WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "peak_kib": peak}))
"""


def run_measured(cwd: Path, *args: str) -> tuple[str, float]:
    """Run the CLI in a fresh wrapper process: (its stdout, its peak RSS in MB). Fails on a non-zero exit."""
    wrapped = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "rrstore", *args],
                             cwd=cwd, capture_output=True, text=True, check=True)
    report = json.loads(wrapped.stdout)
    assert report["rc"] == 0, report["stderr"]
    return report["stdout"], report["peak_kib"] / 1024


def b3_file(path: Path) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as fh:
        while piece := fh.read(8 << 20):
            hasher.update(piece)
    return hasher.hexdigest()


def make_sparse(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        os.truncate(fh.fileno(), SIZE)
        for offset, length in RANDOM_PIECES:
            fh.seek(offset)
            fh.write(rng.randbytes(length))


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, float]:
    """A checkpoint of a 1 GiB sparse file taken by the CLI: (the file, its BLAKE3, the id, peak RSS in MB).
    Shared by the tests below (each leaves the file as checkpointed); made once, it saves ~8 s."""
    project = tmp_path_factory.mktemp("big") / "project"
    project.mkdir()
    path = project / "disk.img"
    make_sparse(path, seed=1)
    digest = b3_file(path)
    out, peak = run_measured(project, "checkpoint", "--lane", "standard", "--step-number", "1",
                             "--step-name", "a large file")
    return path, digest, out.strip().splitlines()[-1], peak


def test_checkpoint_and_restore_of_a_1_gib_file_stay_under_the_bound(big_checkpoint) -> None:
    path, digest, checkpoint_id, peak = big_checkpoint
    project = path.parent
    print(f"checkpoint peak {peak:.1f} MB")
    assert peak < RSS_BOUND_MB, f"checkpoint of a 1 GiB file peaked at {peak:.0f} MB"
    path.unlink()

    _, peak = run_measured(project, "restore", checkpoint_id)

    print(f"restore peak {peak:.1f} MB")
    assert peak < RSS_BOUND_MB, f"restore of a 1 GiB file peaked at {peak:.0f} MB"
    assert path.stat().st_size == SIZE
    assert b3_file(path) == digest


def test_restore_over_a_changed_1_gib_file_stays_under_the_bound(big_checkpoint) -> None:
    path, digest, checkpoint_id, _ = big_checkpoint
    project = path.parent
    with open(path, "r+b") as fh:  # 16 MiB of new bytes in the middle: a restore rewrites the file
        fh.seek(SIZE // 2)
        fh.write(random.Random(2).randbytes(16 << 20))

    out, peak = run_measured(project, "restore", checkpoint_id, "--json")

    print(f"restore over a change peak {peak:.1f} MB")
    assert peak < RSS_BOUND_MB, f"restore over a changed 1 GiB file peaked at {peak:.0f} MB"
    assert b3_file(path) == digest
    result = json.loads(out)
    assert result["written"] == ["disk.img"] and result["success"] and result["undo_checkpoint_id"]


# --- the bounded queue --------------------------------------------------------------------------------


class SlowWriter(PackWriter):
    """A writer whose frames land slowly (a slow disk, or a compressor slower than the readers)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.go = threading.Event()

    def _append(self, block, table, frame) -> None:  # type: ignore[no-untyped-def]
        self.go.wait(0.02)
        super()._append(block, table, frame)


def test_a_slow_compressor_keeps_the_queue_under_its_bound(tmp_path: Path) -> None:
    """48 MiB of incompressible objects put faster than they are compressed: ``add`` waits, so the
    bytes alive at any moment stay a few blocks (before: every queued object until its pack was written)."""
    written: list[dict[str, object]] = []
    writer = SlowWriter(LocalBackend(tmp_path / "store"), 3, False, written.append, threads=1)
    rng = random.Random(3)
    piece = 64 << 10
    oids = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range((48 << 20) // piece):
            data = rng.randbytes(piece)
            oid = blake3.blake3(data).hexdigest()
            oids.append(oid)
            writer.add(oid, data)
            del data
        writer.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.close()
    assert writer.peak_queued <= writer.bound + BLOCK_SIZE + piece
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB alive while 48 MiB were put"
    reader = ObjectStore(LocalBackend(tmp_path / "store"))
    rng = random.Random(3)
    assert all(reader.get(oid) == rng.randbytes(piece) for oid in oids)


class HeldInstall(LocalBackend):
    """A backend whose installs wait until released (a slow fsync), counting them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.installing = threading.Event()

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        self.installing.set()
        self.release.wait(60)
        super().install(key, path, durable=durable)


def test_a_slow_pack_flush_does_not_stop_the_reading_thread(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """While one full pack waits for its install (the disk flush), objects keep being queued, compressed
    and read back; ``flush`` returns only once every pack is written."""
    monkeypatch.setattr(pack_module, "PACK_SIZE", 2 << 20)
    backend = HeldInstall(tmp_path / "store")
    objects = ObjectStore(backend)
    rng = random.Random(4)
    payloads = [rng.randbytes(256 << 10) for _ in range(40)]  # 10 MiB: five packs of 2 MiB
    oids = [objects.put(p).oid for p in payloads[:12]]
    assert backend.installing.wait(60)  # the first pack is full and held in its install

    more = threading.Thread(target=lambda: oids.extend(objects.put(p).oid for p in payloads[12:]))
    more.start()
    more.join(60)
    alive = more.is_alive()
    backend.release.set()
    assert not alive, "queueing stopped while a pack was being flushed"
    assert [objects.get(oid) for oid in oids] == payloads  # queued, compressed or written: all readable

    objects.flush()
    assert len(list((tmp_path / "store" / "packs").glob("*.pack"))) >= 4
    assert os.listdir(tmp_path / "store" / "tmp") == []
    reader = ObjectStore(LocalBackend(tmp_path / "store"))
    assert [reader.get(oid) for oid in oids] == payloads


def test_a_failed_pack_write_leaves_no_writer_thread_and_no_tmp_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from rrstore import RollbackRecoverySystem
    from rrstore.backends.local import LocalBackend
    from rrstore.errors import RRStoreError

    root = tmp_path / "p"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}.bin").write_bytes(os.urandom(100_000))

    def full(self: object, key: str, path: object, durable: bool = False) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalBackend, "install", full)
    before = set(threading.enumerate())  # another test of this process may have left its own
    with pytest.raises(RRStoreError):
        RollbackRecoverySystem(root=root).checkpoint("standard", 1, "a")
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("rrstore")] == []
    assert os.listdir(root / ".checkpoints" / "tmp") == []
