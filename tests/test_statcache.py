"""The stat cache: unchanged files are not read again, and nothing changed is ever missed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rrstore import RollbackRecoverySystem
from rrstore.statcache import SETTLE_NS, StatCache, stamp
from rrstore.tree import SYMLINK, flatten


def cache_at(tmp_path: Path) -> StatCache:
    return StatCache(tmp_path / "cache" / "stat-x", tmp_path / "tmp").load()


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
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "files")
    time.sleep(0.05)
    system.checkpoint("standard", 2, "cached")  # now the cache vouches for a.txt
    (project / "a.txt").unlink()
    os.symlink("b.txt", project / "a.txt")
    record = system.checkpoint("standard", 3, "link").record
    entry = flatten(system.open_store().objects, record.state_hash)["a.txt"]
    assert entry.kind == SYMLINK and entry.target == "b.txt"


def test_file_swapped_for_another_of_the_same_size_and_mtime_is_seen(project: Path) -> None:
    path = project / "data.bin"
    path.write_bytes(b"x" * 100)
    old = os.lstat(path)
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("standard", 1, "x").record
    time.sleep(0.05)
    system.checkpoint("standard", 2, "cached")
    replacement = project / "new.tmp"
    replacement.write_bytes(b"y" * 100)
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, path)  # same size, same mtime, another inode
    third = system.checkpoint("standard", 3, "swapped").record
    assert third.state_hash != first.state_hash
    assert system.status().state_hash == third.state_hash
