"""The foundations, tested directly: the atomic write, the store locks, ref decoding and the settings files.

What the layers above already test through them is not repeated here (ref formats old and new:
``test_store.py``; a lock file swapped during ``flock``: ``test_recovery_cleanup.py``). Locks are
taken by real processes; failures are real (a full tmpfs, a read-only mount, a directory in the way)
or come from the one call that fails (``os.fsync`` raising EIO).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import rrstore.lock as lock_module
from rrstore.config import Settings, find_project_root, load_section, load_settings
from rrstore.errors import CorruptObject, DiskFull, PermissionDenied, RRStoreError, StoreLocked, UsageError
from rrstore.fsutil import AtomicFile, atomic_write
from rrstore.lock import locked
from rrstore.store.refs import check_id, decode_ref

# --- atomic_write -------------------------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(a destination folder, the temporary folder beside it), as a store has ``objects/`` and ``tmp/``."""
    dest, tmp = tmp_path / "dest", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    return dest, tmp


def test_atomic_write_creates_and_replaces_and_leaves_no_temporary_file(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    assert atomic_write(dest / "f", b"old", tmp, fsync=False) is True
    assert atomic_write(dest / "f", b"new", tmp, fsync=True, mode=0o600) is True
    assert (dest / "f").read_bytes() == b"new"
    assert (dest / "f").stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp) == []


def test_exclusive_atomic_write_never_replaces_and_leaves_no_temporary_file(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    assert atomic_write(dest / "ref", b"first", tmp, fsync=True, exclusive=True) is True
    assert atomic_write(dest / "ref", b"second", tmp, fsync=True, exclusive=True) is False
    assert (dest / "ref").read_bytes() == b"first"
    assert os.listdir(tmp) == [] and os.listdir(dest) == ["ref"]


READER = """
import sys
from pathlib import Path
path, stop, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
allowed = {bytes([c]) * size for c in b"ABCDEFGH"}
reads = bad = 0
while not stop.exists():
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        continue
    reads += 1
    bad += data not in allowed
print(reads, bad)
"""


def test_a_reader_sees_the_old_or_the_new_bytes_never_a_prefix_or_a_mix(dirs: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    dest, tmp = dirs
    size = 4 << 20
    path, stop = dest / "config.json", tmp_path / "stop"
    atomic_write(path, b"A" * size, tmp, fsync=False)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop), str(size)],
                              stdout=subprocess.PIPE, text=True)
    try:
        for i in range(40):
            atomic_write(path, bytes([b"ABCDEFGH"[i % 8]]) * size, tmp, fsync=False)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    reads, bad = map(int, out.split())
    assert reads > 0 and bad == 0
    assert os.listdir(tmp) == []


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every file or folder ``os.fsync`` is called on, in order (the real fsync still runs)."""
    calls: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_fsync_reaches_the_file_before_the_rename_and_the_folder_after(dirs: tuple[Path, Path],
                                                                       synced: list[str]) -> None:
    dest, tmp = dirs
    atomic_write(dest / "f", b"quick", tmp, fsync=False)
    assert synced == []
    atomic_write(dest / "f", b"durable", tmp, fsync=True)
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp and synced[0].endswith(".tmp")  # the data, under its temporary name
    assert Path(synced[1]) == dest  # then the rename, in the destination's folder


def test_a_failed_fsync_removes_the_temporary_file_and_keeps_the_old_bytes(dirs: tuple[Path, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dest, tmp = dirs
    atomic_write(dest / "f", b"old", tmp, fsync=False)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(RRStoreError, match="Input/output error"):
        atomic_write(dest / "f", b"new", tmp, fsync=True)
    assert (dest / "f").read_bytes() == b"old"
    assert os.listdir(tmp) == []


def test_a_full_disk_is_diskfull_and_leaves_no_temporary_file(tiny_tmpfs: Path) -> None:
    tmp = tiny_tmpfs / "tmp"
    tmp.mkdir()
    atomic_write(tiny_tmpfs / "f", b"old", tmp, fsync=True)
    with pytest.raises(DiskFull):
        atomic_write(tiny_tmpfs / "f", os.urandom(2 << 20), tmp, fsync=True)
    assert (tiny_tmpfs / "f").read_bytes() == b"old"
    assert os.listdir(tmp) == []


def test_a_folder_in_the_way_fails_the_rename_and_leaves_no_temporary_file(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    (dest / "taken" / "inside").mkdir(parents=True)
    with pytest.raises(RRStoreError, match="taken"):
        atomic_write(dest / "taken", b"data", tmp, fsync=False)
    assert (dest / "taken" / "inside").is_dir()
    assert os.listdir(tmp) == []


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a folder, a read-only bind mount of it): what the kernel refuses even to root (EROFS)."""
    folder, view = tmp_path / "rw", tmp_path / "ro"
    folder.mkdir()
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield folder, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_a_read_only_folder_is_permissiondenied_and_changes_nothing(read_only: tuple[Path, Path]) -> None:
    folder, view = read_only
    (folder / "tmp").mkdir()
    (folder / "f").write_bytes(b"old")
    with pytest.raises(PermissionDenied):
        atomic_write(view / "f", b"new", view / "tmp", fsync=True)
    assert (folder / "f").read_bytes() == b"old" and os.listdir(folder / "tmp") == []


# --- locks ---------------------------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from rrstore.errors import StoreLocked
from rrstore.lock import locked
store, name, mode, wait = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
try:
    with locked(store, name, exclusive=mode == "exclusive", wait=wait, read_only="read-only" in sys.argv[5:]):
        print("held", flush=True)
        sys.stdin.readline()  # hold until the test says
except StoreLocked as exc:
    print(f"locked {exc.holder}", flush=True)
"""


class Holder:
    """Another process taking a store lock: ``answer`` is its first line ("held" or "locked <holder>")."""

    def __init__(self, store: Path, mode: str, wait: float = 0.0, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store), "objects", mode, str(wait), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def answer(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def release(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it had ended already (it did not get the lock)
            pass
        self.proc.wait(timeout=30)
        assert self.proc.returncode == 0


def opened(proc: subprocess.Popen[str], path: Path, timeout: float = 30.0) -> bool:
    """Wait until ``proc`` has ``path`` open: it is at the lock (polls the real process's state)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if any(os.path.realpath(fd) == str(path) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()):
                return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


def test_shared_holders_coexist_and_shut_out_an_exclusive_one(tmp_path: Path) -> None:
    with locked(tmp_path, "objects", exclusive=False):
        other = Holder(tmp_path, "shared")
        assert other.answer() == "held"
        excluded = Holder(tmp_path, "exclusive")
        assert excluded.answer() == "locked"  # a shared holder writes no pid
        excluded.release()
        other.release()
    free = Holder(tmp_path, "exclusive")
    assert free.answer() == "held"
    free.release()


def test_an_exclusive_holder_shuts_out_everyone_and_is_named(tmp_path: Path) -> None:
    holder = Holder(tmp_path, "exclusive")
    assert holder.answer() == "held"
    with pytest.raises(StoreLocked) as caught, locked(tmp_path, "objects", exclusive=False, wait=0):
        pass
    assert caught.value.holder == f"pid {holder.proc.pid}" and caught.value.exit_code == 11
    assert str(tmp_path) in str(caught.value)
    holder.release()
    with locked(tmp_path, "objects", exclusive=True, wait=0):
        pass


def test_a_waiter_gets_the_lock_once_it_is_released(tmp_path: Path) -> None:
    with locked(tmp_path, "objects", exclusive=True):
        waiter = Holder(tmp_path, "shared", 600.0)
        assert opened(waiter.proc, tmp_path / "locks" / "objects.lock")
        assert waiter.proc.poll() is None  # waiting, not failed
    assert waiter.answer() == "held"
    waiter.release()


def test_the_wait_ends_in_storelocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 s of waiting on a clock that moves 10 s per look: the timeout, without the wait."""
    holder = Holder(tmp_path, "exclusive")
    assert holder.answer() == "held"
    ticks = iter(range(0, 10**6, 10))
    looks: list[float] = []

    def monotonic() -> float:
        looks.append(float(next(ticks)))
        return looks[-1]

    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(monotonic=monotonic, sleep=lambda s: None))
    with pytest.raises(StoreLocked), locked(tmp_path, "objects", exclusive=True, wait=30.0):
        pass
    assert looks[-1] >= 30.0 and len(looks) <= 6  # it waited its 30 s, then gave up
    holder.release()


def test_read_only_locks_an_existing_lock_file_and_goes_unlocked_only_where_none_can_be(
        read_only: tuple[Path, Path]) -> None:
    folder, view = read_only
    (folder / "with-lock").mkdir()
    (folder / "bare").mkdir()
    with locked(folder / "with-lock", "objects", exclusive=True):
        pass  # the lock file now exists
    with locked(view / "with-lock", "objects", exclusive=False, read_only=True):
        writer = Holder(folder / "with-lock", "exclusive")
        assert writer.answer().startswith("locked")  # the read-only descriptor really holds the lock
        writer.release()
    with locked(view / "bare", "objects", exclusive=False, read_only=True):
        pass  # no lock file and none can be made: nobody can lock here either
    with pytest.raises(PermissionDenied), locked(view / "bare", "objects", exclusive=False):
        pass
    assert os.listdir(folder / "bare") == []


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    os.mkfifo(tmp_path / "locks" / "objects.lock")
    with pytest.raises(RRStoreError, match="not a regular file"), locked(tmp_path, "objects", exclusive=False):
        pass


def test_a_symlink_planted_as_lock_file_is_replaced_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "store" / "locks").mkdir(parents=True)
    os.symlink(victim, tmp_path / "store" / "locks" / "objects.lock")
    with locked(tmp_path / "store", "objects", exclusive=True):
        pass
    assert victim.read_bytes() == b"keep me"
    assert not (tmp_path / "store" / "locks" / "objects.lock").is_symlink()


# --- refs ----------------------------------------------------------------------------------------------------

OID = "ab" * 32


@pytest.mark.parametrize("content", [b"", b"\n", OID.upper().encode() + b"\n1\n", OID[:-1].encode() + b"\n1\n",
                                     OID.encode() + b"x\n1\n", b"\xff" * 64 + b"\n1\n", b"\n" + OID.encode() + b"\n"])
def test_a_ref_whose_first_line_is_no_oid_is_corrupt_naming_the_checkpoint(content: bytes) -> None:
    with pytest.raises(CorruptObject) as caught:
        decode_ref("docs-step1-x", content)
    assert caught.value.checkpoints == ["docs-step1-x"]


def test_a_ref_with_windows_line_ends_still_reads() -> None:
    ref = decode_ref("x", f"{OID}\r\n42\r\n".encode())
    assert (ref.oid, ref.added_ns) == (OID, 42)


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a/b", "../up", "a b", "x" * 201, "é"])
def test_check_id_refuses_names_that_are_no_checkpoint_id(name: str) -> None:
    with pytest.raises(UsageError):
        check_id(name)


# --- settings ------------------------------------------------------------------------------------------------


def test_no_settings_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings(source="defaults")


def test_rrstore_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.rrstore]\nstore = "from-pyproject"\nworkers = 3\n')
    (tmp_path / "rrstore.toml").write_text('store = "from-rrstore-toml"\n')
    settings = load_settings(tmp_path)
    assert (settings.store, settings.workers) == ("from-rrstore-toml", 0)  # nothing is merged from pyproject
    assert settings.source == str(tmp_path / "rrstore.toml")


def test_tool_rrstore_in_pyproject_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.rrstore]\ncompression_level = 9\nfsync = "always"\n'
        'scope_include = ["vendor/venv"]\n\n[tool.rrstore.workflow]\nsteps = 3\n\n[tool.other]\nx = 1\n')
    settings = load_settings(tmp_path)
    assert (settings.compression_level, settings.fsync, settings.scope_include) == (9, "always", ["vendor/venv"])
    assert settings.source == f"{tmp_path / 'pyproject.toml'} [tool.rrstore]"
    where = f"{tmp_path / 'pyproject.toml'} [tool.rrstore.workflow]"
    assert load_section(tmp_path, "workflow") == ({"steps": 3}, where)


def test_a_pyproject_without_tool_rrstore_gives_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    assert load_settings(tmp_path).store == ".checkpoints"


@pytest.mark.parametrize(("text", "words"), [
    ('compresion_level = 3\n', ["unknown setting 'compresion_level'", "known: compression_level"]),
    ('compression_level = "3"\n', ["compression_level must be a int"]),
    ('workers = true\n', ["workers must be a int"]),
    ('store = 7\n', ["store must be a str"]),
    ('scope_include = "venv"\n', ["scope_include must be a list of strings"]),
    ('scope_include = [1]\n', ["scope_include must be a list of strings"]),
    ('fsync = "sometimes"\n', ["fsync must be one of always, batch, never"]),
    ('compression_level = 23\n', ["compression_level must be between -7 and 22"]),
    ('workers = -1\n', ["workers must be 0"]),
    ('store = \n', ["invalid TOML"]),
])
def test_a_bad_setting_is_one_usageerror_naming_the_file(tmp_path: Path, text: str, words: list[str]) -> None:
    (tmp_path / "rrstore.toml").write_text(text)
    with pytest.raises(UsageError) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "rrstore.toml") in message and "\n" not in message
    for word in words:
        assert word in message


def test_tables_are_sections_for_other_parts_and_a_section_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "rrstore.toml").write_text('workflow = 3\n\n[recovery]\ndocs_check = "make docs"\n')
    where = f"{tmp_path / 'rrstore.toml'} [recovery]"
    assert load_section(tmp_path, "recovery") == ({"docs_check": "make docs"}, where)
    with pytest.raises(UsageError, match="must be a table"):
        load_section(tmp_path, "workflow")


def test_the_project_root_is_found_by_its_settings_or_its_store(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "rrstore.toml").write_text("")
    assert find_project_root(tmp_path / "a" / "b") == tmp_path / "a"
    (tmp_path / "a" / "b" / "pyproject.toml").write_text('[tool.rrstore]\nstore = "cp"\n')
    (tmp_path / "a" / "b" / "cp").mkdir()
    (tmp_path / "a" / "b" / "cp" / "config.json").write_text("{}")
    assert find_project_root(tmp_path / "a" / "b") == tmp_path / "a" / "b"


# --- AtomicFile: the streaming safe write (dulwich's GitFile shape) -----------------------------------------


def test_atomic_file_streams_into_place_only_when_the_block_ends(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    (dest / "f").write_bytes(b"old")
    with AtomicFile(dest / "f", tmp) as out:
        for piece in (b"one ", b"two ", b"three"):
            out.write(piece)
        assert (dest / "f").read_bytes() == b"old"  # nothing visible while writing
        assert len(os.listdir(tmp)) == 1
    assert out.installed
    assert (dest / "f").read_bytes() == b"one two three"
    assert os.listdir(tmp) == [] and os.listdir(dest) == ["f"]


def test_an_exception_mid_write_keeps_the_old_file_and_removes_the_temporary_one(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    (dest / "f").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), AtomicFile(dest / "f", tmp) as out:
        out.write(b"half of the new")
        raise KeyboardInterrupt  # any exception, an interrupt too
    assert not out.installed
    assert (dest / "f").read_bytes() == b"old"
    assert os.listdir(tmp) == [] and os.listdir(dest) == ["f"]


def test_without_tmp_dir_the_temporary_file_is_hidden_beside_dest_and_aborted_cleanly(tmp_path: Path) -> None:
    out = AtomicFile(tmp_path / "archive.rrar")
    assert out.temp.parent == tmp_path and out.temp.name.startswith(".archive.rrar.")
    out.write(b"partial")
    out.abort()
    assert os.listdir(tmp_path) == []


def test_atomic_file_fsyncs_data_before_the_rename_and_the_folder_after_only_when_asked(
        dirs: tuple[Path, Path], synced: list[str]) -> None:
    dest, tmp = dirs
    with AtomicFile(dest / "f", tmp) as out:
        out.write(b"quick")
    assert synced == []
    with AtomicFile(dest / "f", tmp, fsync=True) as out:
        out.write(b"durable")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp and synced[0].endswith(".tmp")
    assert Path(synced[1]) == dest
    assert (dest / "f").read_bytes() == b"durable"


def test_a_failed_fsync_in_atomic_file_raises_oserror_and_keeps_the_old_bytes(
        dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    dest, tmp = dirs
    (dest / "f").write_bytes(b"old")

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output error"), AtomicFile(dest / "f", tmp, fsync=True) as out:
        out.write(b"new")
    assert (dest / "f").read_bytes() == b"old"
    assert os.listdir(tmp) == []


def test_an_exclusive_atomic_file_never_replaces_and_says_so(dirs: tuple[Path, Path]) -> None:
    dest, tmp = dirs
    (dest / "f").write_bytes(b"first")
    with AtomicFile(dest / "f", tmp, exclusive=True) as out:
        out.write(b"second")
    assert not out.installed
    assert (dest / "f").read_bytes() == b"first"
    assert os.listdir(tmp) == []
    with AtomicFile(dest / "g", tmp, exclusive=True) as out:
        out.write(b"new")
    assert out.installed and (dest / "g").read_bytes() == b"new"


def test_finish_then_install_renames_a_batch_only_once_every_file_arrived(dirs: tuple[Path, Path]) -> None:
    """What a pull does: each download finished into ``tmp/``, then all renamed; an abort removes the rest."""
    dest, tmp = dirs
    staged = []
    for name in ("a", "b", "c"):
        out = AtomicFile(dest / name, tmp)
        out.write(name.encode())
        out.finish()
        staged.append(out)
    assert os.listdir(dest) == [] and len(os.listdir(tmp)) == 3
    staged[0].install()
    for out in staged:
        out.abort()  # the failed rest of the batch: the installed one stays
    assert os.listdir(dest) == ["a"] and (dest / "a").read_bytes() == b"a"
    assert os.listdir(tmp) == []
