"""The stat cache: unchanged files are not read again, and nothing changed is ever missed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rrstore import RollbackRecoverySystem
from rrstore.tree import SYMLINK, flatten
from rrstore.worktree.statcache import SETTLE_NS, StatCache, stamp


def cache_at(tmp_path: Path) -> StatCache:
    return StatCache(tmp_path / "cache" / "stat-x", tmp_path / "tmp").load()


def settled(*paths: Path) -> None:
    """Date the files' mtimes 10 s back: written well before any scan's racy window (``SETTLE_NS``),
    so the cache may vouch for them without the test waiting for the clock."""
    then = time.time_ns() - 10 * 10**9
    for path in paths:
        os.utime(path, ns=(then, then))


def test_hit_only_when_the_stat_matches_and_the_file_is_older_than_the_boundary(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"content")
    st = os.lstat(path)
    cache = cache_at(tmp_path)
    cache.record("f.txt", st, "a" * 64, ())
    cache.scan_start = st.st_mtime_ns + 1  # the file was written before the scan began
    cache.save({"f.txt"})

    again = cache_at(tmp_path)
    assert again.lookup("f.txt", st) is not None
    assert again.lookup("g.txt", st) is None

    racy = cache_at(tmp_path)
    racy.trusted_before = st.st_mtime_ns  # written in the same tick the scan began: not trusted
    assert racy.lookup("f.txt", st) is None and racy.racy

    path.write_bytes(b"CONTENT")  # same size, new ctime (and usually mtime)
    assert cache_at(tmp_path).lookup("f.txt", os.lstat(path)) is None


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stat-x").write_bytes(b"RRSC2 garbage \x00\x01")
    cache = cache_at(tmp_path)
    assert cache.entries == {}


def test_restore_remembers_written_files_but_not_the_newest_ones(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_bytes(b"written by restore")
    cache = cache_at(tmp_path)
    st = os.lstat(path)
    edited = tmp_path / "edited.txt"
    edited.write_bytes(b"as written")
    before_edit = stamp(os.lstat(edited))
    edited.write_bytes(b"someone else")  # changed after rrstore wrote it: must not be trusted
    cache.remember_written(str(tmp_path), {"w.txt": ("b" * 64, (), stamp(st)),
                                            "edited.txt": ("c" * 64, (), before_edit)})
    loaded = cache_at(tmp_path)
    assert "edited.txt" not in loaded.entries
    assert loaded.trusted_before <= time.time_ns() - SETTLE_NS + 10_000_000
    assert loaded.entries["w.txt"].stamp == stamp(st)
    assert loaded.lookup("w.txt", st) is None  # written just now: racy, read again next time


def test_file_replaced_by_a_symlink_is_seen(project: Path) -> None:
    (project / "a.txt").write_bytes(b"a file\n")
    (project / "b.txt").write_bytes(b"another\n")
    settled(project / "a.txt", project / "b.txt")
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "files")
    system.checkpoint("standard", 2, "cached")  # now the cache vouches for a.txt
    (project / "a.txt").unlink()
    os.symlink("b.txt", project / "a.txt")
    record = system.checkpoint("standard", 3, "link").record
    entry = flatten(system.open_store().objects, record.state_hash)["a.txt"]
    assert entry.kind == SYMLINK and entry.target == "b.txt"


def test_file_swapped_for_another_of_the_same_size_and_mtime_is_seen(project: Path) -> None:
    path = project / "data.bin"
    path.write_bytes(b"x" * 100)
    settled(path)
    old = os.lstat(path)
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("standard", 1, "x").record
    system.checkpoint("standard", 2, "cached")
    replacement = project / "new.tmp"
    replacement.write_bytes(b"y" * 100)
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, path)  # same size, same mtime, another inode
    third = system.checkpoint("standard", 3, "swapped").record
    assert third.state_hash != first.state_hash
    assert system.status().state_hash == third.state_hash


# --- damaged and crafted caches (issue 8, hole 8): they only ever cost a re-read ---------------------

import marshal  # noqa: E402
import random  # noqa: E402
import stat as stat_mod  # noqa: E402
import sys  # noqa: E402

import blake3  # noqa: E402
import pytest  # noqa: E402

from rrstore.worktree.statcache import _binding, _encode, user_key  # noqa: E402

OLD_MAGIC = f"RRSC2 {sys.version_info[0]}.{sys.version_info[1]}\n".encode()


@pytest.fixture
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh per-user key directory for this test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "rrstore" / "statcache.key"


def b3sum(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def cached_project(project: Path) -> tuple[RollbackRecoverySystem, Path]:
    """A project of 30 small files and 2 chunked ones, checkpointed twice so the cache vouches for all."""
    for i in range(30):
        (project / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    rng = random.Random(7)
    for name in ("big1.bin", "big2.bin"):
        (project / name).write_bytes(rng.randbytes(5 << 20))
    settled(*project.iterdir())
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "first")
    system.checkpoint("standard", 2, "cached")
    (cache,) = (system.open_store().path / "cache").glob("stat-*")
    return system, cache


def assert_truthful(system: RollbackRecoverySystem, project: Path, step: int) -> None:
    """A checkpoint now (and status) runs without error and records exactly the files' real bytes."""
    record = system.checkpoint("standard", step, "after damage").record
    entries = flatten(system.open_store().objects, record.state_hash)
    files = sorted(p.name for p in project.iterdir() if p.is_file())
    assert sorted(p for p, e in entries.items() if e.kind == "file") == files
    for name in files:
        assert entries[name].oid == b3sum(project / name), name
    assert system.status().state_hash == record.state_hash


def wrong_but_existing(project: Path) -> dict[str, tuple[tuple[int, ...], str, tuple[str, ...]]]:
    """Every file's real stamp, each naming another file's (stored) content: what a crafted cache claims."""
    names = sorted(p.name for p in project.iterdir() if p.is_file() and p.suffix == ".txt")
    return {name: (stamp(os.lstat(project / name)), b3sum(project / other), ())
            for name, other in zip(names, names[1:] + names[:1], strict=True)}


def old_format(rows: dict) -> bytes:  # type: ignore[type-arg]
    """The cache as rrstore wrote it before the MAC (RRSC2): an unkeyed marshal dump."""
    paths = list(rows)
    body = (time.time_ns() + 10**12, paths, [rows[p][0] for p in paths], [rows[p][1] for p in paths],
            [rows[p][2] for p in paths])
    return OLD_MAGIC + marshal.dumps(body)


def new_format(rows: dict, key: bytes, binding: tuple[str, int]) -> bytes:  # type: ignore[type-arg]
    from rrstore.worktree.statcache import Cached

    return _encode({p: Cached(*r) for p, r in rows.items()}, time.time_ns() + 10**12, key, binding)


def test_crafted_caches_naming_other_existing_content_are_not_trusted(project: Path, own_key: Path) -> None:
    system, cache = cached_project(project)
    rows = wrong_but_existing(project)
    key = user_key()
    assert key is not None
    crafts = {
        "unkeyed (the old format)": old_format(rows),
        "another key": new_format(rows, os.urandom(32), _binding(project)),
        "the user's key, another tree": new_format(rows, key, (str(project.parent / "elsewhere"), 1)),
    }
    for step, (what, data) in enumerate(crafts.items(), 3):
        cache.write_bytes(data)
        assert_truthful(system, project, step)
        assert cache.read_bytes() != data, what  # dropped and rebuilt


def test_fuzzed_caches_never_crash_and_never_lie(project: Path, own_key: Path) -> None:
    system, cache = cached_project(project)
    good = cache.read_bytes()
    rng = random.Random(8)
    wrong = wrong_but_existing(project)
    true = {name: (st, b3sum(project / name), ()) for name, (st, _, _) in wrong.items()}
    last = sorted(true)[-1]  # scanned after the others: a bad entry there must not spare earlier ones
    variants: list[bytes] = [b"", good[:5], good[:len(good) // 2], good[:-1], good + b"\0", rng.randbytes(4096)]
    key = user_key()
    assert key is not None
    for rows in (wrong, true):
        nul_oid = {**rows, last: (rows[last][0], rows[last][1][:10] + "\0" + rows[last][1][11:], ())}
        wrong_types = {**rows, last: (list(rows[last][0]), 12345, "not chunks")}
        bad_chunks = {**rows, last: (rows[last][0], rows[last][1], ("\0" * 64,))}
        for bad in (nul_oid, wrong_types, bad_chunks):
            variants.append(old_format(bad))
            if rows is true:  # with the user's own key only truthful entries can be asked for
                variants.append(new_format(bad, key, _binding(project)))  # MAC'd yet malformed
    for _ in range(25):
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append(bytes(flipped))
    for _ in range(5):
        cut = rng.randrange(len(good))
        variants.append(good[:cut] + rng.randbytes(rng.randint(0, 64)))
    for step, data in enumerate(variants, 3):
        cache.write_bytes(data)
        assert_truthful(system, project, step)


def test_status_never_writes_back_an_entry_it_did_not_verify(project: Path, own_key: Path) -> None:
    system, cache = cached_project(project)
    rows = wrong_but_existing(project)
    first = next(iter(rows))
    key = user_key()
    assert key is not None
    cache.write_bytes(new_format({first: (rows[first][0], "0" * 10 + "\0" * 54, ())}, key, _binding(project)))
    system.status()
    again = StatCache(cache, system.open_store().path / "tmp", project).load()
    assert all(c.oid == b3sum(project / p) for p, c in again.entries.items())
    assert_truthful(system, project, 3)


def test_no_safe_key_means_no_cache_and_checkpoints_still_work(project: Path, own_key: Path) -> None:
    system, cache = cached_project(project)
    os.chmod(own_key, 0o644)  # readable by others: a forgeable key is not used
    assert user_key() is None
    cache.write_bytes(b"left over")
    assert_truthful(system, project, 3)
    assert not cache.exists()


def test_a_damaged_key_is_replaced(project: Path, own_key: Path) -> None:
    system, _ = cached_project(project)
    own_key.write_bytes(b"short")
    key = user_key()
    assert key is not None and len(key) == 32 and own_key.read_bytes() == key
    assert stat_mod.S_IMODE(os.stat(own_key).st_mode) == 0o600
    assert_truthful(system, project, 3)


# --- lock files are derived too ----------------------------------------------------------------------


def test_lock_files_with_garbage_or_a_planted_symlink_do_no_harm(project: Path, tmp_path: Path) -> None:
    from conftest import run_cli

    (project / "a.txt").write_bytes(b"a\n")
    first = run_cli("checkpoint", "--lane", "docs", "--step-number", "1", "--step-name", "s", cwd=project)
    assert first.returncode == 0
    locks = project / ".checkpoints" / "locks"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    for lock in locks.glob("*.lock"):
        lock.unlink()
        lock.symlink_to(victim)
    out = run_cli("restore", "--checkpoint-id", "latest", cwd=project)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert victim.read_bytes() == b"precious\n"
    for lock in locks.glob("*.lock"):
        lock.unlink()
        lock.write_bytes(b"\0\xff\x1b[31mgarbage\nmore\n" * 10)
    for args in (("status",), ("checkpoint", "--lane", "docs", "--step-number", "2", "--step-name", "s"),
                 ("restore", "--checkpoint-id", "latest"), ("gc", "--dry-run")):
        out = run_cli(*args, cwd=project)
        assert out.returncode in (0, 1) and "Traceback" not in out.stderr and "garbage" not in out.stderr, out.stderr
