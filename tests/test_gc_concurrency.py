"""gc beside other rrstore processes: checkpoints running while gc runs, waiting for it, two gcs at once.

Every other process is a real ``python -m rrstore`` subprocess.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from conftest import GIT_ENV
from gc_helpers import (
    BIG,
    Manifest,
    State,
    assert_consistent,
    fresh,
    rand,
    ref_ids,
    small_state,
    store_of,
    text,
    write_state,
)

from rrstore import RollbackRecoverySystem


def cli_env() -> dict[str, str]:
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    return env


def spawn(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def object_lock_held(store: Path) -> bool:
    """True when another process holds the store's object lock (probe without waiting)."""
    path = store / "locks" / "objects.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we got
    return False


def has_open(proc: subprocess.Popen[str], path: Path, timeout: float = 30.0) -> bool:
    """Wait until ``proc`` has ``path`` open (it reached the lock), or it ended, or ``timeout`` passed."""
    target = os.path.realpath(path)
    folder = Path(f"/proc/{proc.pid}/fd")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if any(os.path.realpath(fd) == target for fd in folder.iterdir()):
                return True
        except OSError:  # an fd closed while listed
            pass
        time.sleep(0.01)
    return False


def big_state() -> State:
    """Some hundred small files and ~100 MB of large ones: a checkpoint that takes about a second."""
    rng = random.Random(42)
    files = {f"d{d}/f{f:03}.txt": rng.randbytes(rng.randint(100, 4000)) for d in range(4) for f in range(150)}
    files.update({f"large/big{i:02}.bin": rng.randbytes(5 << 20) for i in range(20)})
    files["tool.sh"] = b"#!/bin/sh\necho tool\n"
    return State(files, execs=("tool.sh",), links=(("link", "d0/f000.txt"),), empty_dirs=("empty/dir",))


def add_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_checkpoint_running_while_gc_runs_stays_restorable(project: Path, manifest: Manifest) -> None:
    state = big_state()
    # an old checkpoint of part of the tree: its objects are what the new checkpoint reuses
    part = {k: v for k, v in state.files.items() if k.startswith(("d0/", "d1/", "large/big0"))}
    write_state(project, State({**part, "d0/f000.txt": b"old version\n"}))
    system = RollbackRecoverySystem(root=project)
    old = system.checkpoint("standard", 1, "old").record
    store = store_of(system)
    write_state_over = {k: v for k, v in state.files.items() if k not in part or k == "d0/f000.txt"}
    add_files(project, write_state_over)
    os.chmod(project / "tool.sh", 0o755)
    os.symlink("d0/f000.txt", project / "link")
    (project / "empty" / "dir").mkdir(parents=True)
    want = manifest(project)

    checkpoint = spawn(project, "checkpoint", "--lane", "heavy", "--step-number", "2", "--step-name", "big")
    deadline = time.monotonic() + 10
    seen_lock = False
    while checkpoint.poll() is None and time.monotonic() < deadline:
        if object_lock_held(store):
            seen_lock = True
            break
        time.sleep(0.01)
    gc_proc = spawn(project, "gc", "--older-than", "0s", "--grace", "0s", "--keep-lane", "heavy", "--json")
    ck_out, ck_err = checkpoint.communicate(timeout=60)
    gc_out, gc_err = gc_proc.communicate(timeout=60)
    assert checkpoint.returncode == 0, ck_err
    assert gc_proc.returncode == 0, gc_err
    new_id = ck_out.strip()
    report = json.loads(gc_out)
    assert report["removed"] == [old.checkpoint_id]
    if seen_lock:  # gc started while the checkpoint held the lock: it waited, then kept it
        assert report["kept"] == [new_id]
        assert report["objects_removed"] > 0

    assert ref_ids(store) == {new_id}
    reached = assert_consistent(store)
    assert set(fresh(store)) == reached[new_id]
    # scramble part of the tree, restore, compare everything
    for i in range(0, 20, 3):
        (project / "large" / f"big{i:02}.bin").unlink()
    for i in range(10):
        (project / "d1" / f"f{i:03}.txt").write_bytes(b"scrambled")
    (project / "link").unlink()
    os.chmod(project / "tool.sh", 0o644)
    (project / "empty" / "dir").rmdir()
    assert manifest(project) != want
    assert RollbackRecoverySystem(root=project).restore(new_id).failures == {}
    assert manifest(project) == want


def test_checkpoint_waits_for_a_running_gc_then_completes(project: Path, manifest: Manifest) -> None:
    write_state(project, small_state(1))
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "first")
    store = system.open_store()
    write_state(project, small_state(2))
    want = manifest(project)
    with store.collecting():  # what gc holds while it marks and sweeps
        proc = spawn(project, "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "second")
        assert has_open(proc, store.path / "locks" / "objects.lock"), "the checkpoint never reached the lock"
        assert proc.poll() is None  # waiting for the lock, not failing
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    new_id = out.strip()
    assert new_id in ref_ids(store.path)
    assert_consistent(store.path)
    write_state(project, small_state(3))
    assert system.restore(new_id).failures == {}
    assert manifest(project) == want


def test_two_gcs_at_once_both_succeed_and_lose_nothing(project: Path, manifest: Manifest) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(5):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG),
                                    "lib/same.py": text(3), f"n/{step}.txt": text(step)}))
        ids.append(system.checkpoint("standard", step, f"s{step}").checkpoint_id)
    want = manifest(project)
    store = store_of(system)

    procs = [spawn(project, "gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "2", "--json")
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    removed = [i for r in reports for i in r["removed"]]
    assert sorted(removed) == sorted(ids[:3])  # each removed once, by one of them
    assert all(r["kept"] == [ids[4], ids[3]] for r in reports)
    assert sum(r["objects_removed"] for r in reports) > 0

    assert ref_ids(store) == {ids[3], ids[4]}
    reached = assert_consistent(store)
    assert set(fresh(store)) == reached[ids[3]] | reached[ids[4]]
    write_state(project, State({"other": b"x"}))
    assert system.restore(ids[4]).failures == {}
    assert manifest(project) == want
