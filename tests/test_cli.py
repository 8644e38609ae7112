"""Command-line conventions: options, streams, formats, JSON shapes, and one-line errors with documented codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest
from conftest import GIT_ENV, one_error_line

from rrstore.backends import LocalBackend
from rrstore.errors import CorruptObject
from rrstore.store.objects import ObjectStore
from rrstore.store.pack import decode_index

RECORD_FIELDS = {"checkpoint_id", "lane", "step_number", "step_name", "timestamp", "state_hash", "git_commit",
                 "git_branch", "git_dirty", "success", "error_message", "metrics"}
METRICS = {"wall_time_s", "cpu_time_s", "files_scanned", "bytes_scanned", "bytes_new", "compressed_bytes_new"}
HASH = re.compile(r"^[0-9a-f]{64}$")

Cli = Callable[..., subprocess.CompletedProcess[str]]


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def make(cli: Cli, root: Path, step: int, name: str, lane: str = "standard", *extra: str) -> str:
    out = cli("checkpoint", "--lane", lane, "--step-number", str(step), "--step-name", name, *extra, cwd=root)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def store_state(store: Path) -> tuple[set[str], set[str]]:
    """(checkpoint refs, object ids) of a store: what 'changes nothing' must keep.

    Object ids come from the store's own listing (packed and loose objects alike).
    """
    refs = set(os.listdir(store / "refs" / "checkpoints")) if (store / "refs" / "checkpoints").is_dir() else set()
    objects = set(ObjectStore(LocalBackend(store))) if store.is_dir() else set()
    return refs, objects


@pytest.fixture
def populated(project: Path) -> Path:
    write(project / "keep.txt", b"keep\n")
    write(project / "change.txt", b"before\n")
    write(project / "gone.txt", b"will be deleted\n")
    write(project / "tool.sh", b"#!/bin/sh\n", 0o755)
    os.symlink("keep.txt", project / "link")
    return project


# --- global options -------------------------------------------------------------------------------------


def test_global_options_before_or_after_the_command(populated: Path, tmp_path: Path, cli: Cli) -> None:
    store = tmp_path / "elsewhere" / "store"
    first = cli("--store", str(store), "checkpoint", "--lane", "docs", "--step-number", "1", "--step-name", "a",
                cwd=populated)
    assert first.returncode == 0, first.stderr
    second = cli("checkpoint", "--lane", "docs", "--step-number", "2", "--step-name", "b", "--store", str(store),
                 cwd=populated)
    assert second.returncode == 0, second.stderr
    assert not (populated / ".checkpoints").exists()
    ids = [second.stdout.strip(), first.stdout.strip()]

    before = cli("--json", "--store", str(store), "list", cwd=populated)
    after = cli("list", "--json", "--store", str(store), cwd=populated)
    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout
    assert [r["checkpoint_id"] for r in json.loads(before.stdout)] == ids

    via_env = cli("list", cwd=populated, env={"RRSTORE_DIR": str(store)})
    assert via_env.returncode == 0, via_env.stderr
    assert [line.split(":")[0] for line in via_env.stdout.splitlines()] == ids
    option_wins = cli("--store", str(store), "list", cwd=populated, env={"RRSTORE_DIR": str(tmp_path / "nothing")})
    assert option_wins.stdout == via_env.stdout

    root_opt = cli("-C", str(populated), "list", "--store", str(store), cwd=tmp_path)
    assert root_opt.stdout == via_env.stdout


def test_data_on_stdout_messages_on_stderr(populated: Path, cli: Cli) -> None:
    out = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "s", cwd=populated)
    assert out.returncode == 0
    assert out.stdout.count("\n") == 1 and re.match(r"^standard-step1-\d{8}_\d{6}-[a-z2-7]{6}$", out.stdout.strip())
    assert out.stderr.strip()  # a human message, not on stdout
    checkpoint_id = out.stdout.strip()

    quiet = cli("-q", "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "s", cwd=populated)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert re.match(r"^standard-step2-\d{8}_\d{6}-[a-z2-7]{6}$", quiet.stdout.strip())

    write(populated / "change.txt", b"after\n")
    restored = cli("restore", "--checkpoint-id", checkpoint_id, cwd=populated)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == ""
    assert checkpoint_id in restored.stderr

    as_json = cli("checkpoint", "--json", "--lane", "standard", "--step-number", "3", "--step-name", "s",
                  cwd=populated)
    assert json.loads(as_json.stdout)["step_number"] == 3  # stdout is exactly one JSON document


# --- formats ---------------------------------------------------------------------------------------------


def test_list_text_and_table(populated: Path, cli: Cli) -> None:
    a = make(cli, populated, 1, "Building")
    b = make(cli, populated, 2, "Quality gates", "docs")
    c = make(cli, populated, 3, "Running tests", "heavy", "--status", "failed", "--error", "boom")

    out = cli("list", cwd=populated)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.splitlines() == [f"{c}: Running tests (heavy)", f"{b}: Quality gates (docs)",
                                       f"{a}: Building (standard)"]
    docs_only = cli("list", "--lane", "docs", cwd=populated)
    assert docs_only.stdout.splitlines() == [f"{b}: Quality gates (docs)"]

    table = cli("list", "-v", cwd=populated).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "LANE", "STEP", "STATUS"]
    rows = table[1:]
    assert [r.split()[0] for r in rows] == [c, b, a]
    assert rows[0].split()[1:4] == ["heavy", "3", "failed"] and rows[0].endswith("Running tests")
    assert rows[2].split()[1:4] == ["standard", "1", "success"] and rows[2].endswith("Building")


def test_json_shapes(populated: Path, cli: Cli) -> None:
    created = cli("--json", "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "one",
                  cwd=populated)
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record.keys() >= RECORD_FIELDS and record["metrics"].keys() >= METRICS
    assert HASH.match(record["state_hash"]) and record["success"] is True and record["step_number"] == 1
    first = record["checkpoint_id"]

    listed = json.loads(cli("list", "--json", cwd=populated).stdout)
    assert isinstance(listed, list) and [r["checkpoint_id"] for r in listed] == [first]
    assert listed[0].keys() >= RECORD_FIELDS

    shown = json.loads(cli("show", first, "--json", cwd=populated).stdout)
    assert shown == listed[0] == record

    write(populated / "change.txt", b"after\n")
    os.unlink(populated / "gone.txt")
    write(populated / "new.txt", b"new\n")
    second = json.loads(cli("--json", "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "two",
                            cwd=populated).stdout)["checkpoint_id"]
    diffed = json.loads(cli("diff", first, second, "--json", cwd=populated).stdout)
    assert diffed["added"] == ["new.txt"] and diffed["removed"] == ["gone.txt"] and diffed["modified"] == ["change.txt"]

    status = json.loads(cli("status", "--json", cwd=populated).stdout)
    assert status["clean"] is True and status["newest_checkpoint_id"] == second
    assert status["matching_checkpoint_id"] == second and HASH.match(status["state_hash"])

    restored = json.loads(cli("restore", "--checkpoint-id", first, "--json", cwd=populated).stdout)
    assert restored["checkpoint_id"] == first and restored["success"] is True and restored["dry_run"] is False
    assert restored["state_hash"] == record["state_hash"]
    assert sorted(restored["written"]) == ["change.txt", "gone.txt"] and restored["removed"] == ["new.txt"]
    assert restored["undo_checkpoint_id"] in {r["checkpoint_id"] for r in json.loads(
        cli("list", "--json", cwd=populated).stdout)}
    status = json.loads(cli("status", "--json", cwd=populated).stdout)
    assert status["state_hash"] == record["state_hash"] and status["matching_checkpoint_id"] == first

    err = cli("--json", "show", "nope", cwd=populated)
    assert err.returncode == 12 and err.stdout == "" and len(err.stderr.splitlines()) == 1
    assert json.loads(err.stderr)["exit_code"] == 12


def test_show_prints_the_record(populated: Path, cli: Cli) -> None:
    checkpoint_id = make(cli, populated, 4, "Running tests")
    out = cli("show", checkpoint_id, cwd=populated)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert fields["checkpoint_id"] == checkpoint_id
    assert fields["lane"] == "standard" and fields["step_number"] == "4" and fields["step_name"] == "Running tests"
    assert HASH.match(fields["state_hash"])
    assert {f"metrics.{m}" for m in METRICS} <= fields.keys()
    assert cli("show", "latest", cwd=populated).stdout == out.stdout


def test_diff_between_checkpoints_and_against_the_working_tree(populated: Path, cli: Cli) -> None:
    a = make(cli, populated, 1, "a")
    write(populated / "change.txt", b"after\n")
    os.unlink(populated / "gone.txt")
    write(populated / "sub" / "new.txt", b"new\n")
    os.chmod(populated / "tool.sh", 0o644)
    os.unlink(populated / "link")
    os.symlink("change.txt", populated / "link")
    b = make(cli, populated, 2, "b")

    out = cli("diff", a, b, cwd=populated)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["M change.txt", "D gone.txt", "M link", "A sub/new.txt", "M tool.sh"]
    assert cli("diff", a, b, "--exit-code", cwd=populated).returncode == 1
    same = cli("diff", b, b, "--exit-code", cwd=populated)
    assert same.returncode == 0 and same.stdout == ""

    assert cli("diff", b, cwd=populated).stdout == ""
    write(populated / "keep.txt", b"edited in the working tree\n")
    write(populated / "untracked-new.txt", b"x")
    against_tree = cli("diff", b, cwd=populated)
    assert against_tree.stdout.splitlines() == ["M keep.txt", "A untracked-new.txt"]
    assert cli("diff", b, "--exit-code", cwd=populated).returncode == 1


def test_status_and_exit_code(populated: Path, cli: Cli) -> None:
    checkpoint_id = make(cli, populated, 1, "s")
    state_hash = json.loads(cli("show", checkpoint_id, "--json", cwd=populated).stdout)["state_hash"]

    clean = cli("status", "--exit-code", cwd=populated)
    assert clean.returncode == 0, clean.stderr
    lines = clean.stdout.splitlines()
    assert lines[0] == f"state {state_hash}"
    assert checkpoint_id in lines[1] and "matches" in lines[1]

    write(populated / "change.txt", b"after\n")
    dirty = cli("status", "--exit-code", cwd=populated)
    assert dirty.returncode == 1
    assert dirty.stdout.splitlines()[0] != f"state {state_hash}"
    assert "differs" in dirty.stdout and "Traceback" not in dirty.stderr
    assert cli("status", cwd=populated).returncode == 0


def test_module_and_console_script_both_work(populated: Path, cli: Cli) -> None:
    make(cli, populated, 1, "s")
    script = Path(sys.executable).parent / "rrstore"
    if not script.exists():
        script = Path(shutil.which("rrstore") or "rrstore")
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    via_script = subprocess.run([str(script), "list"], cwd=populated, capture_output=True, text=True, env=env,
                                timeout=60)
    via_module = cli("list", cwd=populated)
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout != ""
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "rrstore" in version.stdout


def test_help_documents_exit_codes(project: Path, cli: Cli) -> None:
    out = cli("--help", cwd=project)
    assert out.returncode == 0
    documented = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\s+(\d+)\s+(\S.*)$", out.stdout, re.M)}
    for code in (0, 1, 2, 10, 12, 13, 14, 15):
        assert code in documented, f"exit code {code} not documented in --help"
    assert "checkpoint not found" in documented[12].lower()
    assert "disk full" in documented[15].lower()
    commands = out.stdout.split("Commands:")[1]
    for command in ("checkpoint", "list", "show", "diff", "status", "restore"):
        assert re.search(rf"^\s+{command}\s", commands, re.M), command
    restore_help = cli("restore", "--help", cwd=project)
    assert restore_help.returncode == 0
    assert all(opt in restore_help.stdout for opt in ("--checkpoint-id", "--dry-run", "--path", "--json", "--store"))


# --- errors: one line, documented code, nothing changed ---------------------------------------------------


def test_unknown_id_suggests_the_closest(populated: Path, cli: Cli, manifest) -> None:
    checkpoint_id = make(cli, populated, 2, "s")
    typo = checkpoint_id[:-1] + ("0" if checkpoint_id[-1] != "0" else "1")
    tree, store = manifest(populated), store_state(populated / ".checkpoints")
    for args in (("show", typo), ("restore", "--checkpoint-id", typo), ("diff", typo)):
        line = one_error_line(cli(*args, cwd=populated), 12)
        assert "Checkpoint not found" in line and typo in line
        assert checkpoint_id in line.replace(typo, "")  # the real id is suggested
    assert manifest(populated) == tree and store_state(populated / ".checkpoints") == store


def test_bad_lane_is_a_usage_error(populated: Path, cli: Cli) -> None:
    line = one_error_line(cli("checkpoint", "--lane", "bogus", "--step-number", "1", "--step-name", "s",
                              cwd=populated), 2)
    assert "bogus" in line
    assert not (populated / ".checkpoints").exists()
    one_error_line(cli("list", "--lane", "bogus", cwd=populated), 2)
    one_error_line(cli("checkpoint", "--lane", "docs", "--step-number", "-1", "--step-name", "s", cwd=populated), 2)
    assert not (populated / ".checkpoints").exists()


def test_missing_store(populated: Path, tmp_path: Path, cli: Cli) -> None:
    for args in (("list",), ("show", "latest"), ("status",), ("restore", "--checkpoint-id", "latest")):
        line = one_error_line(cli(*args, cwd=populated), 10)
        assert ".checkpoints" in line
    missing = tmp_path / "no" / "such" / "store"
    line = one_error_line(cli("--store", str(missing), "list", cwd=populated), 10)
    assert str(missing) in line
    assert not (populated / ".checkpoints").exists() and not (tmp_path / "no").exists()


def test_store_that_is_a_file_or_root_that_is_not_a_directory(populated: Path, tmp_path: Path, cli: Cli,
                                                              manifest) -> None:
    afile = tmp_path / "a-file"
    afile.write_bytes(b"not a store")
    tree = manifest(populated)
    for args in (("list",), ("checkpoint", "--lane", "docs", "--step-number", "1", "--step-name", "s")):
        line = one_error_line(cli("--store", str(afile), *args, cwd=populated), 2)
        assert str(afile) in line
    assert afile.read_bytes() == b"not a store"
    one_error_line(cli("-C", str(afile), "list", cwd=populated), 2)
    one_error_line(cli("-C", str(tmp_path / "missing-dir"), "checkpoint", "--lane", "docs", "--step-number", "1",
                       "--step-name", "s", cwd=populated), 2)
    assert manifest(populated) == tree and not (tmp_path / "missing-dir").exists()


def test_corrupt_object_is_named_with_its_checkpoint(populated: Path, cli: Cli, manifest) -> None:
    write(populated / "data.bin", os.urandom(20_000))
    checkpoint_id = make(cli, populated, 1, "s")
    store = populated / ".checkpoints"
    content = (populated / "data.bin").read_bytes()
    oid = blake3.blake3(content).hexdigest()
    # the blob is packed: flip a byte of its own bytes inside its pack block
    idx = [decode_index(p.stem, p.read_bytes()) for p in (store / "packs").glob("*.idx")]
    [(pack_id, block_offset, block_size, _, _)] = [entries[oid] for entries in idx if oid in entries]
    assert not (store / "objects" / oid[:2] / oid[2:]).exists()
    pack_file = store / "packs" / f"{pack_id}.pack"
    pack = bytearray(pack_file.read_bytes())
    at = pack.find(content[5_000:5_064], block_offset, block_offset + block_size)  # random bytes are stored
    assert at > 0 and pack.find(content[5_000:5_064], at + 1) == -1              # verbatim in their block
    pack[at + 10] ^= 0xFF
    os.chmod(pack_file, 0o644)
    pack_file.write_bytes(bytes(pack))
    with pytest.raises(CorruptObject):
        ObjectStore(LocalBackend(store)).get(oid)
    assert ObjectStore(LocalBackend(store)).get(blake3.blake3(b"keep\n").hexdigest()) == b"keep\n"  # a neighbour
    write(populated / "data.bin", b"changed since")
    write(populated / "added.txt", b"the restore would remove this")
    os.unlink(populated / "gone.txt")
    tree, state = manifest(populated), store_state(store)

    line = one_error_line(cli("restore", "--checkpoint-id", checkpoint_id, cwd=populated), 13)

    assert oid in line and checkpoint_id in line
    assert manifest(populated) == tree
    assert store_state(store) == state
    assert cli("show", checkpoint_id, cwd=populated).returncode == 0  # the record itself is fine


def _nobody_prefix(probe_dir: Path) -> list[str]:
    """setpriv arguments that run a command as nobody, or skip.

    The interpreter may live under a directory only root can search (e.g. /root/.pyenv), and pytest's
    tmp_path is 0700; then nobody keeps CAP_DAC_READ_SEARCH (read and search only, never write).
    """
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    base = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = [sys.executable, "-c", f"import os, rrstore; os.listdir({str(probe_dir)!r})"]
    for prefix in (base, [*base, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]):
        if subprocess.run([*prefix, *probe], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("cannot run python as nobody here")


def test_permission_denied_on_a_store_it_cannot_write(populated: Path, cli: Cli, manifest) -> None:
    checkpoint_id = make(cli, populated, 1, "by root")
    store = populated / ".checkpoints"
    prefix = _nobody_prefix(populated)
    tree, state = manifest(populated), store_state(store)
    env = {**os.environ, **GIT_ENV, "HOME": str(populated)}
    env.pop("RRSTORE_DIR", None)

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "rrstore", *args], cwd=populated, env=env,
                              capture_output=True, text=True, timeout=60)

    line = one_error_line(as_nobody("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "x"), 14)
    assert "permission denied" in line.lower() and str(store) in line
    assert manifest(populated) == tree and store_state(store) == state
    listed = as_nobody("list")  # reading a store needs no write access
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{checkpoint_id}: by root (standard)"]




def test_disk_full_commits_nothing(populated: Path, tiny_tmpfs: Path, cli: Cli, manifest) -> None:
    store = tiny_tmpfs / "store"
    first = cli("--store", str(store), "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name",
                "fits", cwd=populated)
    assert first.returncode == 0, first.stderr
    write(populated / "big" / "a.bin", os.urandom(700_000))
    write(populated / "big" / "b.bin", os.urandom(700_000))
    state = store_state(store)

    line = one_error_line(cli("--store", str(store), "checkpoint", "--lane", "standard", "--step-number", "2",
                              "--step-name", "too big", cwd=populated), 15)

    assert "no space left" in line.lower()
    refs, _ = store_state(store)
    assert refs == state[0]
    assert os.listdir(store / "tmp") == []  # no temporary file left behind to fill the disk
    listed = cli("--store", str(store), "list", cwd=populated)
    assert listed.stdout.splitlines() == [f"{first.stdout.strip()}: fits (standard)"]
    shutil.rmtree(populated / "big")
    tree = manifest(populated)
    again = cli("--store", str(store), "restore", "--checkpoint-id", first.stdout.strip(), cwd=populated)
    assert again.returncode == 0, again.stderr
    assert manifest(populated) == tree


# --- restore on a read-only store and on a full disk (issue 8, hole 9) -----------------------------------


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a store directory, a read-only bind mount of it): the store as read-only media show it."""
    store, view = tmp_path / "store", tmp_path / "ro-store"
    store.mkdir()
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(store), str(view)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        yield store, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_restore_from_a_read_only_store_needs_no_undo(populated: Path, read_only_view: tuple[Path, Path],
                                                      cli: Cli, manifest) -> None:
    store, view = read_only_view
    checkpoint_id = make(cli, populated, 1, "s", "standard", "--store", str(store))
    original = manifest(populated)
    remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remounted.stderr.decode().strip()}")
    write(populated / "change.txt", b"after\n")
    os.unlink(populated / "gone.txt")
    write(populated / "added.txt", b"new\n")
    tree, state = manifest(populated), store_state(store)

    line = one_error_line(cli("--store", str(view), "restore", "--checkpoint-id", checkpoint_id, cwd=populated), 14)

    assert "read-only" in line and str(view) in line and "--no-undo" in line
    assert manifest(populated) == tree and store_state(store) == state
    out = cli("--store", str(view), "restore", "--no-undo", "--checkpoint-id", checkpoint_id, cwd=populated)
    assert out.returncode == 0, out.stderr
    assert "no undo checkpoint" in out.stderr
    assert manifest(populated) == original
    assert store_state(store) == state


def test_restore_as_a_user_who_cannot_write_the_store(populated: Path, cli: Cli, manifest) -> None:
    checkpoint_id = make(cli, populated, 1, "by root")
    store = populated / ".checkpoints"
    original = manifest(populated)
    write(populated / "change.txt", b"after\n")
    for path in [populated, *(p for p in populated.rglob("*") if store not in p.parents and p != store)]:
        os.lchown(path, 65534, 65534)  # nobody owns the tree, root the store
    prefix = _nobody_prefix(populated)
    tree, state = manifest(populated), store_state(store)
    # HOME is the project here; the stat cache's key must not land in the tree being compared
    env = {**os.environ, **GIT_ENV, "HOME": str(populated), "XDG_CACHE_HOME": str(populated.parent / "xdg")}
    env.pop("RRSTORE_DIR", None)

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "rrstore", *args], cwd=populated, env=env,
                              capture_output=True, text=True, timeout=60)

    line = one_error_line(as_nobody("restore", "--checkpoint-id", checkpoint_id), 14)
    assert "read-only" in line and "--no-undo" in line
    assert manifest(populated) == tree and store_state(store) == state
    out = as_nobody("restore", "--no-undo", "--checkpoint-id", checkpoint_id)
    assert out.returncode == 0, out.stderr
    assert manifest(populated) == original and store_state(store) == state


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if ".rrstore-" in p.name]


def test_restore_into_an_empty_directory_on_a_full_disk(populated: Path, tiny_tmpfs: Path, tmp_path: Path,
                                                        cli: Cli) -> None:
    store = tmp_path / "store"
    blobs = {f"big/{n}.bin": os.urandom(400_000) for n in "abcd"}
    for rel, data in blobs.items():
        write(populated / rel, data)
    checkpoint_id = make(cli, populated, 1, "s", "standard", "--store", str(store))
    target = tiny_tmpfs / "empty"
    target.mkdir()

    line = one_error_line(cli("--store", str(store), "-C", str(target), "restore", "--force", "--checkpoint-id",
                              checkpoint_id, cwd=tmp_path), 15)

    assert "no space left" in line.lower() and "?" not in line
    named = re.search(r"while writing (\S+);", line)
    assert named and named.group(1).startswith(str(target) + "/")  # a file of the checkpoint, in the tree
    assert "undo with" in line
    for rel, data in blobs.items():  # every file is whole or absent: nothing half-written
        path = target / rel
        assert not path.exists() or path.read_bytes() == data
    assert _leftovers(target) == []


def test_restore_with_the_store_on_a_full_disk_names_the_path(populated: Path, tiny_tmpfs: Path, tmp_path: Path,
                                                              cli: Cli, manifest) -> None:
    store = tiny_tmpfs / "store"
    checkpoint_id = make(cli, populated, 1, "s", "standard", "--store", str(store))
    with open(tiny_tmpfs / "filler", "wb") as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    empty = tmp_path / "empty"
    empty.mkdir()
    state = store_state(store)

    line = one_error_line(cli("--store", str(store), "-C", str(empty), "restore", "--force", "--checkpoint-id",
                              checkpoint_id, cwd=tmp_path), 15)

    assert "no space left" in line.lower() and "?" not in line and str(store) in line
    assert os.listdir(empty) == [] and store_state(store) == state
    out = cli("--store", str(store), "-C", str(empty), "restore", "--no-undo", "--force", "--checkpoint-id",
              checkpoint_id, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert manifest(empty) == manifest(populated)


def test_every_command_a_cli_module_defines_is_registered_with_the_lazy_group() -> None:
    """The group imports a command's module only when it runs, by name from ``COMMANDS``: a command
    a module defines but the table lacks would vanish from the CLI."""
    import importlib

    import click
    from rrstore.cli.main import COMMANDS, cli

    defined = set()
    for module in {m for m, _ in COMMANDS.values()}:
        loaded = importlib.import_module(f"rrstore.cli.{module}")
        defined |= {(module, name) for name, value in vars(loaded).items() if isinstance(value, click.Command)
                    and getattr(value.callback, "__module__", "") == loaded.__name__}
    assert defined == set(COMMANDS.values())
    assert sorted(cli.list_commands(click.Context(cli))) == sorted(COMMANDS)
