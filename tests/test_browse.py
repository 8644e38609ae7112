"""ls, cat, dump, find and log (rrstore.browse, cli/browse.py) on real git repositories.

The issue's bar: ``cat`` of every file of a real repository's checkpoint
equals the file byte for byte, and ``b3sum``'s hash of each file equals the
hash ``ls -r --json`` shows. The repository is a git clone of this project
plus the awkward cases: a binary file larger than the chunking threshold,
an empty file, a symlink, an executable, a name with a space and a newline.
"""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import GIT_ENV, git, one_error_line, run_cli, tree_manifest, write
from faults import pack_index

from rrstore import RollbackRecoverySystem
from rrstore.browse import Pattern
from rrstore.store.objects import ObjectStore
from rrstore.worktree.snapshot import CHUNK_THRESHOLD

REPO = Path(__file__).resolve().parent.parent
B3SUM = "/usr/bin/b3sum"
ODD = "odd name\nwith newline.txt"


def b3sum(paths: list[Path]) -> list[str]:
    """Hashes by the stock BLAKE3 tool (CI installs it: .ci), in the order given."""
    assert shutil.which(B3SUM), f"{B3SUM} is missing: install Debian's b3sum (apt-get install b3sum); " \
                                "the browse tests check rrstore's hashes against it"
    out = subprocess.run([B3SUM, "--no-names", "--", *map(str, paths)], check=True, capture_output=True, text=True)
    return out.stdout.split()


def run_bytes(*args: str, cwd: Path, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """The CLI with binary stdout (``run_cli`` decodes it as text)."""
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, env=env, timeout=120)


@pytest.fixture(scope="module")
def real_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A git clone of this project with the awkward files committed, and its one checkpoint's id."""
    root = tmp_path_factory.mktemp("browse") / "clone"
    if (REPO / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, env={**os.environ, **GIT_ENV})
    else:  # a source tree without git: its library, as a fresh repository
        shutil.copytree(REPO / "rrstore", root / "rrstore", ignore=shutil.ignore_patterns("__pycache__"))
        git(root, "init", "-q", "-b", "main")
    write(root, "data/blob.bin", os.urandom(CHUNK_THRESHOLD + 3_000_000))  # stored in chunks
    write(root, "data/empty", b"")
    write(root, f"data/{ODD}", "a space, a newline\n")
    write(root, "data/café.txt", "non-ASCII name\n")
    tool = write(root, "bin/tool.sh", "#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    os.symlink("../rrstore/__init__.py", root / "bin" / "init-link")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "awkward files")
    # Commands run in data/: with the clone's root as cwd, ``python -m rrstore`` would import the clone's
    # own rrstore package instead of the one under test. Tree paths are the same from any directory.
    out = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "all", "-q",
                  cwd=root / "data")
    assert out.returncode == 0, out.stderr
    return root, out.stdout.strip()


def test_cat_of_every_file_equals_it_and_b3sum_equals_ls(real_repo: tuple[Path, str]) -> None:
    root, checkpoint_id = real_repo
    out = run_cli("ls", "-r", "--json", checkpoint_id, cwd=root / "data")
    assert out.returncode == 0, out.stderr
    listing = {item["path"]: item for item in json.loads(out.stdout)}
    on_disk = tree_manifest(root)
    assert set(listing) == set(on_disk)  # the whole tree, directories included
    files = sorted(p for p, item in listing.items() if item["type"] == "file")
    assert len(files) > 200 and ODD and f"data/{ODD}" in files
    assert b3sum([root / p for p in files]) == [listing[p]["hash"] for p in files]
    browser = RollbackRecoverySystem(root=root).browser
    for path in files:
        got = io.BytesIO()
        browser.cat(checkpoint_id, path, got)
        assert got.getvalue() == (root / path).read_bytes(), path
        assert listing[path]["size"] == (root / path).stat().st_size
        assert listing[path]["mode"] == ("0755" if os.access(root / path, os.X_OK) else "0644"), path
    link = listing["bin/init-link"]
    assert (link["type"], link["target"], link["mode"]) == ("symlink", "../rrstore/__init__.py", "0777")
    assert listing["bin"]["type"] == "dir"


@pytest.mark.parametrize("path", ["data/blob.bin", "data/empty", f"data/{ODD}", "bin/tool.sh", "data/café.txt"])
def test_cli_cat_writes_the_bytes(real_repo: tuple[Path, str], path: str) -> None:
    root, checkpoint_id = real_repo
    out = run_bytes("cat", checkpoint_id, path, cwd=root / "data")
    assert (out.returncode, out.stderr) == (0, b"")
    assert out.stdout == (root / path).read_bytes()


def test_cat_of_a_symlink_prints_its_target_and_a_directory_is_refused(real_repo: tuple[Path, str]) -> None:
    root, checkpoint_id = real_repo
    out = run_bytes("cat", "latest", "bin/init-link", "-q", cwd=root / "data")
    assert (out.returncode, out.stdout) == (0, b"../rrstore/__init__.py")
    line = one_error_line(run_cli("cat", checkpoint_id, "bin", cwd=root / "data"), 2)
    assert "is a directory" in line


def test_ls_plain_and_long(real_repo: tuple[Path, str]) -> None:
    root, checkpoint_id = real_repo
    out = run_cli("ls", checkpoint_id, "data", cwd=root / "data")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["blob.bin", "café.txt", "empty", json.dumps(ODD)]
    out = run_cli("ls", "-l", checkpoint_id, "bin/tool.sh", cwd=root / "data")
    assert out.returncode == 0, out.stderr
    kind, mode, size, digest, path = out.stdout.split()
    assert (kind, mode, int(size), path) == ("file", "0755", 20, "bin/tool.sh")
    assert [digest] == b3sum([root / "bin/tool.sh"])
    out = run_cli("ls", "-r", checkpoint_id, "./bin/", cwd=root / "data")
    assert out.stdout.splitlines() == ["bin/init-link", "bin/tool.sh"]


def test_unknown_id_and_path_give_one_line(real_repo: tuple[Path, str]) -> None:
    root, checkpoint_id = real_repo
    assert "Checkpoint not found: nope" in one_error_line(run_cli("ls", "nope", cwd=root / "data"), 12)
    assert "Checkpoint not found" in one_error_line(run_cli("cat", "nope", "README.md", cwd=root / "data"), 12)
    line = one_error_line(run_cli("cat", checkpoint_id, "READM.md", cwd=root / "data"), 2)
    assert "no path 'READM.md'" in line and "did you mean README.md?" in line
    one_error_line(run_cli("ls", checkpoint_id, "README.md/x", cwd=root / "data"), 2)
    one_error_line(run_cli("dump", checkpoint_id, "../etc", "-o", str(root.parent / "x.tar"), cwd=root / "data"), 2)
    assert not (root.parent / "x.tar").exists()


def test_dump_tar_and_zip_extract_to_the_tree(real_repo: tuple[Path, str], tmp_path: Path) -> None:
    root, checkpoint_id = real_repo
    want = tree_manifest(root)
    tar_out = run_bytes("dump", checkpoint_id, cwd=root / "data")  # to a pipe
    assert tar_out.returncode == 0, tar_out.stderr
    (tmp_path / "t").mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(tmp_path / "t")], input=tar_out.stdout, check=True)
    assert tree_manifest(tmp_path / "t") == want
    zip_out = run_bytes("dump", checkpoint_id, "--format", "zip", cwd=root / "data")  # a pipe: zip cannot seek
    assert zip_out.returncode == 0, zip_out.stderr
    (tmp_path / "z.zip").write_bytes(zip_out.stdout)
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        assert zf.testzip() is None
        assert f"data/{ODD}" in zf.namelist() and zf.read(f"data/{ODD}") == (root / "data" / ODD).read_bytes()
    subprocess.run(["unzip", "-q", str(tmp_path / "z.zip"), "-d", str(tmp_path / "z")], check=True)
    # Info-ZIP's unzip drops control characters from the names it writes: the newline goes
    want[f"data/{ODD.replace(chr(10), '')}"] = want.pop(f"data/{ODD}")
    assert tree_manifest(tmp_path / "z") == want


def test_dump_of_a_path_to_a_file(real_repo: tuple[Path, str], tmp_path: Path) -> None:
    root, checkpoint_id = real_repo
    dest = tmp_path / "bin.tar"
    out = run_cli("dump", checkpoint_id, "bin", "-o", str(dest), cwd=root / "data")
    assert out.returncode == 0, out.stderr
    with tarfile.open(dest) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"bin", "bin/init-link", "bin/tool.sh"}
    assert members["bin/tool.sh"].mode == 0o755 and members["bin/init-link"].linkname == "../rrstore/__init__.py"
    assert "exists" in one_error_line(run_cli("dump", checkpoint_id, "bin", "-o", str(dest), cwd=root / "data"), 2)


def test_dump_refuses_a_terminal(real_repo: tuple[Path, str]) -> None:
    root, checkpoint_id = real_repo
    leader, follower = pty.openpty()
    try:
        out = run_bytes("dump", checkpoint_id, cwd=root, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert out.returncode == 2
    assert b"refusing to write an archive to a terminal" in out.stderr


# --- damage ------------------------------------------------------------------------------------------


def _spoil(store: Path, oid: str) -> None:
    """Flip bytes of the pack block holding ``oid`` where its bytes lie (a block holds several objects,
    and random content is stored as it is: the object's offset in the block is near its compressed one)."""
    for idx in (store / "packs").glob("*.idx"):
        for entry_oid, block, length, at, size in pack_index(idx):
            if entry_oid == oid:
                pack = idx.with_suffix(".pack")
                data = bytearray(pack.read_bytes())
                for offset in range(block + min(at, length - 1), block + min(at + size, length), 997):
                    data[offset] ^= 0xFF
                pack.write_bytes(bytes(data))
                return
    raise AssertionError(f"{oid} is in no pack")


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, "small.txt", os.urandom(50_000))
    write(root, "big.bin", os.urandom(CHUNK_THRESHOLD * 2))
    out = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "s", "-q", cwd=root)
    assert out.returncode == 0, out.stderr
    return root, out.stdout.strip()


def test_cat_of_a_corrupt_object_says_so_in_one_line(damaged: tuple[Path, str]) -> None:
    root, checkpoint_id = damaged
    entry = RollbackRecoverySystem(root=root).browser.ls(checkpoint_id, "small.txt")[0].entry
    _spoil(root / ".checkpoints", entry.oid)
    line = one_error_line(run_cli("cat", checkpoint_id, "small.txt", cwd=root), 13)  # nothing on stdout
    assert "corrupt object" in line and "nothing was written" in line


def test_cat_stopped_mid_file_says_what_was_written_is_not_to_be_trusted(damaged: tuple[Path, str]) -> None:
    root, checkpoint_id = damaged
    entry = RollbackRecoverySystem(root=root).browser.ls(checkpoint_id, "big.bin")[0].entry
    assert len(entry.chunks) > 2
    _spoil(root / ".checkpoints", entry.chunks[-1])
    out = run_bytes("cat", checkpoint_id, "big.bin", cwd=root)
    assert out.returncode == 13
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert f"{len(out.stdout)} byte(s) were written before it stopped: they are not to be trusted" in lines[0]
    assert 0 < len(out.stdout) < entry.size
    assert out.stdout == (root / "big.bin").read_bytes()[:len(out.stdout)]  # each piece checked before written


def test_dump_of_a_corrupt_object_fails(damaged: tuple[Path, str], tmp_path: Path) -> None:
    root, checkpoint_id = damaged
    entry = RollbackRecoverySystem(root=root).browser.ls(checkpoint_id, "small.txt")[0].entry
    _spoil(root / ".checkpoints", entry.oid)
    dest = tmp_path / "out.tar"
    assert "corrupt object" in one_error_line(run_cli("dump", checkpoint_id, "-o", str(dest), cwd=root), 13)
    assert not dest.exists()  # never half-written


# --- find and log over a history -------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """Checkpoints where a.txt is added, changed, deleted, re-added, made executable; lib/ never changes."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(30):
        write(root, f"lib/deep/m{i}.py", f"# module {i}\n")
    ids: list[str] = []

    def step(name: str) -> None:
        out = run_cli("checkpoint", "--lane", "standard", "--step-number", str(len(ids) + 1), "--step-name", name,
                      "-q", cwd=root)
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.strip())

    write(root, "a.txt", "one\n")
    step("add")
    write(root, "a.txt", "two\n")
    step("change")
    (root / "a.txt").unlink()
    step("delete")
    write(root, "a.txt", "one\n")
    step("re-add")
    (root / "a.txt").chmod(0o755)
    step("chmod")
    return root, ids


def test_log_names_each_change(history: tuple[Path, list[str]]) -> None:
    root, ids = history
    out = run_cli("log", "a.txt", "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    got = [(c["checkpoint_id"], c["change"], c.get("hash")) for c in json.loads(out.stdout)]
    (root / "one").write_text("one\n")
    (root / "two").write_text("two\n")
    one, two = b3sum([root / "one", root / "two"])
    assert got == [(ids[0], "added", one), (ids[1], "modified", two), (ids[2], "deleted", None),
                   (ids[3], "added", one), (ids[4], "mode", one)]
    out = run_cli("log", "a.txt", cwd=root)
    assert [line.split()[:2] for line in out.stdout.splitlines()] == [
        ["A", ids[0]], ["M", ids[1]], ["D", ids[2]], ["A", ids[3]], ["X", ids[4]]]
    out = run_cli("log", "lib/deep/m3.py", "--json", cwd=root)
    assert [(c["checkpoint_id"], c["change"]) for c in json.loads(out.stdout)] == [(ids[0], "added")]
    assert "in none of 5 checkpoint(s)" in run_cli("log", "nope.txt", cwd=root).stderr


def test_find_names_the_checkpoints_holding_a_path(history: tuple[Path, list[str]]) -> None:
    root, ids = history
    out = run_cli("find", "a.txt", "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert [h["checkpoint_id"] for h in hits] == [ids[4], ids[3], ids[1], ids[0]]  # newest first
    assert {h["path"] for h in hits} == {"a.txt"} and hits[0]["mode"] == "0755"
    out = run_cli("find", "lib/**/m1?.py", cwd=root)
    rows = [line.split() for line in out.stdout.splitlines()]
    assert len(rows) == 10 * 5 and {r[3] for r in rows} == {f"lib/deep/m1{i}.py" for i in range(10)}
    assert "no path matches" in run_cli("find", "*.rs", cwd=root).stderr


def test_find_reads_each_tree_once(history: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical subtrees across checkpoints are read once: lib/deep is one tree in all five."""
    root, ids = history
    reads: list[str] = []
    original = ObjectStore.get

    def counting(self: ObjectStore, oid: str) -> bytes:
        reads.append(oid)
        return original(self, oid)

    system = RollbackRecoverySystem(root=root)
    deep = system.browser.ls(ids[0], "lib")[0]
    assert deep.path == "lib/deep"
    monkeypatch.setattr(ObjectStore, "get", counting)
    result = system.browser.find("*.py")
    assert len(result.hits) == 30 * 5
    assert reads.count(deep.hash or "") == 1


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("*.py", "a/b/c.py", True), ("c.py", "a/b/c.py", True), ("a/*.py", "a/b/c.py", False),
    ("a/**/c.py", "a/b/c.py", True), ("a/**/c.py", "a/c.py", True), ("/a/b", "a/b", True),
    ("**/b", "a/b", True), ("a/b", "x/a/b", False), ("[!x]*.txt", "y.txt", True), ("[!x]*.txt", "x.txt", False),
    ("*", "line\nbreak", True), ("a/**", "a/b/c", True),
])
def test_pattern_rule(pattern: str, path: str, hit: bool) -> None:
    assert Pattern(pattern).matches(path.rpartition("/")[2], path) is hit


def test_a_damaged_tree_hides_no_other_checkpoint_from_find(history: tuple[Path, list[str]]) -> None:
    root, ids = history
    state = RollbackRecoverySystem(root=root).show(ids[2]).state_hash  # the deletion: a root tree of its own
    _spoil(root / ".checkpoints", state)
    out = run_cli("find", "*.txt", cwd=root)
    assert out.returncode == 13
    assert [line.split()[0] for line in out.stdout.splitlines()] == [ids[4], ids[3], ids[1], ids[0]]
    (line,) = out.stderr.splitlines()
    assert f"cannot read 1 checkpoint(s) ({ids[2]})" in line
    assert "corrupt object" in one_error_line(run_cli("ls", ids[2], cwd=root), 13)
    assert run_cli("ls", ids[3], cwd=root).returncode == 0


def test_a_name_that_is_not_utf8_goes_in_a_tar_not_a_zip(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as fh:  # Latin-1, not UTF-8
        fh.write(b"latin-1 name\n")
    out = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "s", "-q", cwd=root)
    assert out.returncode == 0, out.stderr
    dest = tmp_path / "x.zip"
    line = one_error_line(run_cli("dump", "latest", "--format", "zip", "-o", str(dest), cwd=root), 2)
    assert "is not UTF-8" in line and not dest.exists()
    tar_out = run_bytes("dump", "latest", cwd=root)
    with tarfile.open(fileobj=io.BytesIO(tar_out.stdout), encoding="utf-8", errors="surrogateescape") as tar:
        (member,) = tar.getmembers()
        assert os.fsencode(member.name) == b"caf\xe9.txt"
        assert tar.extractfile(member).read() == b"latin-1 name\n"  # type: ignore[union-attr]
    listing = json.loads(run_cli("ls", "--json", "latest", cwd=root).stdout)
    assert listing[0]["path"] == "caf\udce9.txt"
    assert json.loads(run_cli("ls", "latest", cwd=root).stdout) == "caf\udce9.txt"  # quoted: not printable
