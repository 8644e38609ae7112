"""Archives: export -> import round trips, dedup across checkpoints, tar export, and refusing bad archives.

Malicious archives are written here from the format as docs/store-format.md
(section 8) describes it, not with rrstore's writer, so the documentation is
tested too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
import zstandard
from conftest import one_error_line, run_cli, tree_manifest
from craft import rle_zeros

from rrstore import RollbackRecoverySystem
from rrstore.archive.files import Limits, verify_archive
from rrstore.errors import ArchiveError
from rrstore.record import CheckpointRecord
from rrstore.tree import Reach, reachable

Cli = Callable[..., subprocess.CompletedProcess[str]]
GiB = 1 << 30


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def store_files(store: Path) -> dict[str, tuple[int, str]]:
    """Every file under the store directory -> (size, sha256): 'byte-identical' means this is unchanged."""
    out = {}
    for dirpath, _, names in os.walk(store):
        for name in names:
            path = Path(dirpath) / name
            out[str(path.relative_to(store))] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def populated(project: Path) -> Path:
    """Files, an executable, a symlink, an empty directory, nesting, a non-UTF-8 name and a chunked file."""
    write(project / "README.md", b"# demo\n")
    write(project / "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write(project / "src" / "app.py", b"print('hello')\n")
    write(project / "src" / "deep" / "data.bin", os.urandom(70_000))
    write(project / "big.bin", os.urandom(5 << 20))  # > 4 MiB: stored as chunks
    (project / "empty").mkdir()
    os.symlink("src/app.py", project / "link")
    os.symlink("../README.md", project / "src" / "up")
    with open(os.path.join(os.fsencode(project), b"bad\xffname"), "wb") as fh:
        fh.write(b"not utf-8 named\n")
    return project


def checkpoint(system: RollbackRecoverySystem, step: int, name: str = "s") -> str:
    return system.checkpoint("standard", step, name).checkpoint_id


# --- round trips ------------------------------------------------------------------------------------


def test_round_trip_into_a_fresh_store_restores_every_byte(populated: Path, tmp_path: Path) -> None:
    source = RollbackRecoverySystem(root=populated)
    first = checkpoint(source, 1)
    write(populated / "src" / "app.py", b"print('changed')\n")
    os.chmod(populated / "src" / "app.py", 0o755)
    second = checkpoint(source, 2)
    wanted = tree_manifest(populated)

    archive = tmp_path / "backup.rra"
    exported = source.export([first, second], archive)
    assert exported.checkpoints == [first, second] and archive.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # each object once across both checkpoints: the records plus the union of what they reach
    objects = source.open_store().objects
    reach = Reach()
    for checkpoint_id in (first, second):
        list(reachable(objects, source.show(checkpoint_id).state_hash, reach))
    assert exported.objects == len(reach.objects) + 2

    target_root, target_store = tmp_path / "elsewhere" / "work", tmp_path / "other-disk" / "store"
    target_root.mkdir(parents=True)
    target = RollbackRecoverySystem(root=target_root, store=target_store)
    imported = target.import_archive(archive)
    assert imported.added == [first, second] and imported.unchanged == []
    assert imported.objects_new == imported.objects == exported.objects
    assert [r.checkpoint_id for r in target.list(all_projects=True).checkpoints] == [second, first]
    assert target.show(second).to_dict() == source.show(second).to_dict()

    target.restore(second, force=True)  # another directory: another project
    assert tree_manifest(target_root) == wanted
    target.restore(first, force=True)
    write(populated / "src" / "app.py", b"print('hello')\n")
    os.chmod(populated / "src" / "app.py", 0o644)
    assert tree_manifest(target_root) == tree_manifest(populated)


def test_cli_round_trip_between_stores_in_different_directories(populated: Path, tmp_path: Path, cli: Cli) -> None:
    made = cli("checkpoint", "--lane", "docs", "--step-number", "3", "--step-name", "docs", cwd=populated)
    assert made.returncode == 0, made.stderr
    checkpoint_id = made.stdout.strip()
    out = cli("export", "latest", "--output", str(tmp_path / "a.rra"), "--json", cwd=populated)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["checkpoints"] == [checkpoint_id] and doc["format"] == "rrstore"
    assert doc["archive_bytes"] == (tmp_path / "a.rra").stat().st_size and doc["objects"] > 5

    moved = tmp_path / "usb" / "a.rra"
    moved.parent.mkdir()
    shutil.move(tmp_path / "a.rra", moved)
    other = tmp_path / "machine2"
    other.mkdir()
    imported = cli("--store", str(tmp_path / "machine2-store"), "import", str(moved), cwd=other)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [checkpoint_id] and "imported 1 checkpoint" in imported.stderr
    restored = cli("--store", str(tmp_path / "machine2-store"), "restore", "--force", checkpoint_id, cwd=other)
    assert restored.returncode == 0, restored.stderr
    assert tree_manifest(other) == tree_manifest(populated)

    as_json = cli("import", str(moved), "--json", "--store", str(tmp_path / "machine2-store"), cwd=other)
    assert json.loads(as_json.stdout) == {"path": str(moved), "added": [], "unchanged": [checkpoint_id],
                                          "checkpoints": [checkpoint_id], "objects": doc["objects"],
                                          "objects_new": 0, "bytes_new": 0}


def test_stdout_output_streams_the_archive(populated: Path, tmp_path: Path) -> None:
    checkpoint(RollbackRecoverySystem(root=populated), 1)
    archive = tmp_path / "piped.rra"
    with open(archive, "wb") as fh:
        done = subprocess.run([sys.executable, "-m", "rrstore", "export", "latest", "-o", "-"], cwd=populated,
                              stdout=fh, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(verify_archive(archive).refs) == 1


def test_ten_checkpoints_of_a_slowly_changing_tree_are_barely_bigger_than_one(project: Path,
                                                                               tmp_path: Path) -> None:
    for i in range(300):
        write(project / f"pkg{i % 12}" / f"mod{i}.py", os.urandom(2000).hex().encode() + b"\n")
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(1, 11):
        with open(project / "pkg3" / "mod3.py", "ab") as fh:
            fh.write(f"# step {step}\n".encode())
        write(project / "notes" / f"step{step}.txt", f"step {step} done\n".encode())
        ids.append(checkpoint(system, step))
    one = system.export([ids[-1]], tmp_path / "one.rra")
    ten = system.export(ids, tmp_path / "ten.rra")
    assert ten.objects <= one.objects + 6 * 9  # per step: record, root, two trees, two contents
    assert ten.archive_bytes < 1.5 * one.archive_bytes, (ten.archive_bytes, one.archive_bytes)
    assert ten.archive_bytes < 1.05 * one.archive_bytes + 20_000


def test_importing_twice_changes_nothing(populated: Path, tmp_path: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=populated)
    ids = [checkpoint(system, 1), checkpoint(system, 2, "again")]
    archive = tmp_path / "a.rra"
    system.export(ids, archive)
    target = tmp_path / "target-store"
    first = cli("--store", str(target), "import", str(archive), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = store_files(target)
    again = cli("--store", str(target), "import", str(archive), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "imported 0 checkpoint(s)" in again.stderr and "(2 already present)" in again.stderr
    assert store_files(target) == before
    # importing into the store the archive came from changes nothing either
    source = populated / ".checkpoints"
    before = store_files(source)
    assert system.import_archive(archive).added == []
    assert store_files(source) == before


def test_verify_checks_without_importing(populated: Path, tmp_path: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=populated)
    ids = [checkpoint(system, 1)]
    archive = tmp_path / "a.rra"
    system.export(ids, archive)
    elsewhere = tmp_path / "nowhere"
    elsewhere.mkdir()
    out = cli("verify", str(archive), cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ids and "is valid" in out.stderr
    assert list(elsewhere.iterdir()) == []  # no store was created
    doc = json.loads(cli("verify", "--json", str(archive), cwd=elsewhere).stdout)
    assert doc["valid"] is True and doc["checkpoints"] == ids and doc["format"] == "rrstore-archive-1"
    assert len(doc["blake3"]) == 64 and doc["archive_bytes"] == archive.stat().st_size


# --- tar export --------------------------------------------------------------------------------------


def test_tar_export_extracts_with_plain_tar(populated: Path, tmp_path: Path, cli: Cli) -> None:
    if shutil.which("tar") is None or subprocess.run(["tar", "--zstd", "--version"], capture_output=True).returncode:
        pytest.skip("no tar with --zstd")
    checkpoint_id = checkpoint(RollbackRecoverySystem(root=populated), 1)
    tarball = tmp_path / "files.tar.zst"
    out = cli("export", checkpoint_id, "--format", "tar", "--output", str(tarball), cwd=populated)
    assert out.returncode == 0, out.stderr
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(tarball), "-C", str(extracted)], check=True)
    assert tree_manifest(extracted) == tree_manifest(populated)
    assert os.stat(extracted / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(extracted / "README.md").st_mode & 0o777 == 0o644
    assert os.readlink(extracted / "src" / "up") == "../README.md"

    listing = subprocess.run(["tar", "--zstd", "-tvf", str(tarball)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    names = [line.split()[5] for line in listing]
    assert not any(n.startswith(("/", "./")) for n in names)
    assert names.index("src/") < names.index("src/app.py") and "empty/" in names
    record = RollbackRecoverySystem(root=populated).show(checkpoint_id)
    assert {os.stat(extracted / "src" / "app.py").st_mtime} == {int(record.created.timestamp())}

    # deterministic: the same checkpoint gives the same tar stream
    again = tmp_path / "again.tar.zst"
    assert cli("export", checkpoint_id, "--format", "tar", "-o", str(again), cwd=populated).returncode == 0
    inflate = zstandard.ZstdDecompressor().decompressobj
    assert inflate().decompress(again.read_bytes()) == inflate().decompress(tarball.read_bytes())

    (tmp_path / "piped").mkdir()
    piped = subprocess.run(f"'{sys.executable}' -m rrstore export latest --format tar -o - "
                           f"| tar --zstd -xf - -C '{tmp_path / 'piped'}'", shell=True, cwd=populated,
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert tree_manifest(tmp_path / "piped") == tree_manifest(populated)

    two = cli("export", checkpoint_id, checkpoint_id + "x", "--format", "tar", "-o", str(tmp_path / "t"),
              cwd=populated)
    assert "exactly one checkpoint" in one_error_line(two, 2)


# --- export errors -----------------------------------------------------------------------------------


def test_export_never_leaves_a_partial_or_replaced_file(populated: Path, tmp_path: Path, cli: Cli) -> None:
    checkpoint(RollbackRecoverySystem(root=populated), 1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = one_error_line(cli("export", "nope", "-o", str(out_dir / "a.rra"), cwd=populated), 12)
    assert "Checkpoint not found" in line and list(out_dir.iterdir()) == []

    (out_dir / "a.rra").write_bytes(b"precious")
    line = one_error_line(cli("export", "latest", "-o", str(out_dir / "a.rra"), cwd=populated), 2)
    assert "exists" in line and "--force" in line
    assert (out_dir / "a.rra").read_bytes() == b"precious"
    assert cli("export", "latest", "-o", str(out_dir / "a.rra"), "--force", cwd=populated).returncode == 0
    assert len(verify_archive(out_dir / "a.rra").refs) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.rra"]

    fake = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    unreachable = cli("export", "latest", "-o", "s3://bucket/key.rra", "--endpoint-url", "http://127.0.0.1:9",
                      cwd=populated, env=fake)
    line = one_error_line(unreachable, 1)
    assert "127.0.0.1:9" in line
    assert not list((populated / ".checkpoints" / "tmp").iterdir())  # nothing staged is left behind
    line = one_error_line(cli("export", "latest", "-o", "-", "--json", cwd=populated), 2)
    assert "--json" in line


def test_export_refuses_a_symlink_leading_out_but_tar_keeps_it(project: Path, tmp_path: Path, cli: Cli) -> None:
    write(project / "a.txt", b"a\n")
    os.symlink("/etc/hostname", project / "host")
    checkpoint(RollbackRecoverySystem(root=project), 1)
    line = one_error_line(cli("export", "latest", "-o", str(tmp_path / "a.rra"), cwd=project), 17)
    assert "export refused, nothing was written" in line and "path host" in line and "leads out of the tree" in line
    assert not list(tmp_path.glob("*.rra*")) and not list(tmp_path.glob(".a.rra*"))
    assert cli("export", "latest", "--format", "tar", "-o", str(tmp_path / "t.tar.zst"), cwd=project).returncode == 0


# --- bad archives: written from the documented format ------------------------------------------------


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def tree(*entries: dict[str, object]) -> tuple[str, bytes]:
    ordered = sorted(entries, key=lambda e: os.fsencode(str(e["name"])))
    data = canonical({"format": "rrstore-tree-1", "entries": ordered})
    return b3(data), data


def file_entry(name: str, content: bytes) -> dict[str, object]:
    return {"name": name, "type": "file", "hash": b3(content), "size": len(content), "exec": False}


def record(checkpoint_id: str, root: str) -> tuple[str, bytes]:
    data = CheckpointRecord(checkpoint_id=checkpoint_id, lane="standard", step_number=1, step_name="crafted",
                            timestamp="2026-01-02T03:04:05.000000+00:00", state_hash=root).encode()
    return b3(data), data


def stream(checkpoints: list[tuple[str, str]], objects: list[tuple[str, bytes]], *,
           trailer: bool = True) -> bytes:
    """The uncompressed stream: header line, "O" objects, "T" trailer and the BLAKE3 of all before it."""
    header = canonical({"format": "rrstore-archive-1", "created": "2026-01-02T03:04:05+00:00",
                        "rrstore_version": "test", "checkpoints": [{"id": i, "record": r} for i, r in checkpoints]})
    body = bytearray(header + b"\n")
    for oid, data in objects:
        body += b"O" + bytes.fromhex(oid) + struct.pack("<Q", len(data)) + data
    if trailer:
        body += b"T" + struct.pack("<QQ", len(objects), sum(len(d) for _, d in objects))
        body += blake3.blake3(bytes(body)).digest()
    return bytes(body)


def packed(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


def crafted(*entries: dict[str, object], extra: tuple[tuple[str, bytes], ...] = (),
            subtrees: tuple[tuple[str, bytes], ...] = (), checkpoint_id: str = "evil-step1-20260102_030405") -> bytes:
    """A one-checkpoint archive whose root tree holds ``entries`` (subtrees and contents passed alongside)."""
    root, root_data = tree(*entries)
    rec = record(checkpoint_id, root)
    return packed(stream([(checkpoint_id, rec[0])], [rec, (root, root_data), *subtrees, *extra]))


def planted(files: dict[str, bytes], checkpoint_id: str = "evil-step1-20260102_030405") -> bytes:
    """A one-checkpoint archive whose tree holds ``files`` (path -> content, directories made as needed).

    Contents starting with ``#!`` are executable; each object comes once, after what reaches it.
    """
    def build(items: dict[str, bytes]) -> tuple[list[dict[str, object]], list[tuple[str, bytes]]]:
        entries: list[dict[str, object]] = []
        subtrees: list[tuple[str, bytes]] = []
        groups: dict[str, dict[str, bytes]] = {}
        for path, data in items.items():
            head, _, rest = path.partition("/")
            if rest:
                groups.setdefault(head, {})[rest] = data
            else:
                entries.append({**file_entry(head, data), "exec": data.startswith(b"#!")})
        for name, sub in groups.items():
            sub_entries, sub_trees = build(sub)
            oid, raw = tree(*sub_entries)
            entries.append({"name": name, "type": "dir", "tree": oid})
            subtrees += [(oid, raw), *sub_trees]
        return entries, subtrees

    entries, subtrees = build(files)
    contents = {b3(data): data for data in files.values()}
    return crafted(*entries, subtrees=tuple(subtrees), extra=tuple(contents.items()), checkpoint_id=checkpoint_id)


HOOK = b"#!/bin/sh\ntouch \"$HOME/hook-ran\"\n"




def test_the_documented_format_is_what_rrstore_reads(tmp_path: Path) -> None:
    """Control for the cases below: a well-formed crafted archive imports and restores."""
    sub, sub_data = tree(file_entry("inner.txt", b"inner\n"))
    path = tmp_path / "good.rra"
    path.write_bytes(crafted(file_entry("a.txt", b"hello\n"), {"name": "d", "type": "dir", "tree": sub},
                             {"name": "ok", "type": "symlink", "target": "d/inner.txt"},
                             subtrees=((sub, sub_data),), extra=((b3(b"hello\n"), b"hello\n"),
                                                                 (b3(b"inner\n"), b"inner\n"))))
    assert verify_archive(path).objects == 5
    work = tmp_path / "work"
    work.mkdir()
    system = RollbackRecoverySystem(root=work)
    assert system.import_archive(path).added == ["evil-step1-20260102_030405"]
    system.restore("evil-step1-20260102_030405")
    assert (work / "d" / "inner.txt").read_bytes() == b"inner\n" and os.readlink(work / "ok") == "d/inner.txt"


def _sub(name: str, *entries: dict[str, object]) -> tuple[dict[str, object], tuple[str, bytes]]:
    oid, data = tree(*entries)
    return {"name": name, "type": "dir", "tree": oid}, (oid, data)


def _cases() -> dict[str, tuple[Callable[[], bytes], str]]:
    """name -> (archive bytes, a phrase the error must contain)."""
    hello = (b3(b"hello\n"), b"hello\n")
    escaping_dir, escaping_tree = _sub("d", {"name": "out", "type": "symlink", "target": "../../etc/passwd"})
    inner_dir, inner_tree = _sub("inner", {"name": "up", "type": "symlink", "target": "../../../x"})
    outer_dir, outer_tree = _sub("outer", inner_dir)
    valid = crafted(file_entry("a.txt", b"hello\n"), extra=(hello,))
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(valid)
    altered = raw.replace(b"hello\n", b"hellO\n")
    root_dotdot, _ = tree({"name": "..", "type": "file", "hash": hello[0], "size": 6, "exec": False})

    def header_only() -> bytes:
        rec = record("evil-step1-20260102_030405", root_dotdot)
        return packed(stream([("evil-step1-20260102_030405", rec[0])], [], trailer=False))

    def bomb_object() -> bytes:  # a 256 KiB frame inflating to 8 GiB: one object claiming all of it
        rec = record("evil-step1-20260102_030405", "0" * 64)
        head = stream([("evil-step1-20260102_030405", rec[0])], [], trailer=False)
        return rle_zeros(head + b"O" + bytes.fromhex(rec[0]) + struct.pack("<Q", 8 * GiB), 8 * GiB)

    return {
        "dotdot name": (lambda: crafted(file_entry("..", b"hello\n"), extra=(hello,)), "invalid name '..'"),
        "../ in a name": (lambda: crafted(file_entry("../../escape.txt", b"hello\n"), extra=(hello,)),
                          "invalid name '../../escape.txt'"),
        "absolute name": (lambda: crafted(file_entry("/etc/passwd", b"hello\n"), extra=(hello,)),
                          "invalid name '/etc/passwd'"),
        "absolute symlink": (lambda: crafted({"name": "l", "type": "symlink", "target": "/etc/passwd"}),
                             "leads out of the tree"),
        "symlink climbing out of the root": (lambda: crafted({"name": "l", "type": "symlink", "target": "../x"}),
                                             "leads out of the tree"),
        "symlink climbing out from a subdirectory": (lambda: crafted(escaping_dir, subtrees=(escaping_tree,)),
                                                     "path d/out"),
        "symlink climbing out two levels down": (lambda: crafted(outer_dir, subtrees=(outer_tree, inner_tree)),
                                                 "path outer/inner/up"),
        "symlink with .. after a name": (lambda: crafted({"name": "l", "type": "symlink", "target": "a/../../x"}),
                                         "leads out of the tree"),
        # Names that are never written (hole 2: a git hook; hole 3: the store's own refs and config).
        "git hook": (lambda: planted({".git/hooks/post-checkout": HOOK, "a.txt": b"hello\n"}),
                     "path .git: '.git' is never written"),
        ".GIT in another case": (lambda: planted({".GIT/hooks/x": HOOK}), "path .GIT: '.GIT' is never written"),
        ".git file": (lambda: planted({".Git": b"gitdir: /tmp/evil\n"}), "'.Git' is never written"),
        "nested .git": (lambda: planted({"sub/.git/config": b"[core]\n\tfsmonitor = touch /tmp/pwned\n"}),
                        "path sub/.git: '.git' is never written"),
        "the store's refs": (lambda: planted({".checkpoints/refs/checkpoints/x-step1-20260102_030405": b"0" * 64}),
                             "'.checkpoints' is never written"),
        "the store's config": (lambda: planted({".checkpoints/config.json": b"{}"}),
                               "'.checkpoints' is never written"),
        "a nested store": (lambda: planted({"pkg/.Checkpoints/config.json": b"{}"}),
                           "path pkg/.Checkpoints: '.Checkpoints' is never written"),
        "wrong hash": (lambda: packed(altered), "altered"),
        "wrong hash, trailer recomputed": (
            lambda: packed(altered[:-32] + blake3.blake3(altered[:-32]).digest()), "altered"),
        "unreached extra object": (lambda: crafted(file_entry("a.txt", b"hello\n"),
                                                   extra=(hello, (b3(b"spare"), b"spare"))), "not reached"),
        "missing object": (lambda: crafted(file_entry("a.txt", b"hello\n")), "lacks 1 object"),
        "object twice": (lambda: crafted(file_entry("a.txt", b"hello\n"), extra=(hello, hello)), "twice"),
        "size differs from the tree": (lambda: crafted({**file_entry("a.txt", b"hello\n"), "size": 99},
                                                       extra=(hello,)), "99 bytes"),
        "truncated": (lambda: valid[: len(valid) // 2], "truncated"),
        "no trailer": (header_only, "truncated"),
        "last bytes cut": (lambda: valid[:-2], "truncated"),
        "data after the end": (lambda: valid + valid, "after the trailer"),
        "not zstd": (lambda: b"PK\x03\x04 this is a zip file", "damaged compressed data"),
        "not an archive": (lambda: packed(b"just some text\n"), "not an rrstore archive"),
        "decompression bomb object": (bomb_object, "object limit"),
        "decompression bomb header": (lambda: rle_zeros(b"", 4 * GiB), "not an rrstore archive"),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_archives_are_refused_and_change_nothing(case: str, populated: Path, tmp_path: Path) -> None:
    build, phrase = CASES[case]
    checkpoint(RollbackRecoverySystem(root=populated), 1)
    store = populated / ".checkpoints"
    before, tree_before = store_files(store), tree_manifest(populated)
    path = tmp_path / "bad.rra"
    path.write_bytes(build())
    for command in ("verify", "import"):
        line = one_error_line(run_cli(command, str(path), cwd=populated), 16)
        assert line.startswith(f"rrstore: error: bad archive {path}: ") and phrase in line, line
        assert ("nothing was imported" in line) == (command == "import")
    assert store_files(store) == before and tree_manifest(populated) == tree_before


def test_tampered_and_truncated_real_archives(populated: Path, tmp_path: Path) -> None:
    system = RollbackRecoverySystem(root=populated)
    ids = [checkpoint(system, 1)]
    good = tmp_path / "good.rra"
    system.export(ids, good)
    data = good.read_bytes()
    target = tmp_path / "target"
    target.mkdir()
    other = RollbackRecoverySystem(root=target, store=tmp_path / "target-store")
    bad = tmp_path / "bad.rra"
    variants = {f"flip@{at}": data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
                for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3, len(data) - 6)}
    variants |= {f"cut@{at}": data[:at] for at in (0, 10, len(data) // 2, len(data) - 1)}
    for name, variant in variants.items():
        bad.write_bytes(variant)
        with pytest.raises(ArchiveError) as err:
            other.import_archive(bad)
        assert "nothing was imported" in str(err.value), name
        assert not (tmp_path / "target-store").exists(), name
    bad.write_bytes(data)
    assert other.import_archive(bad).added == ids


def test_conflicting_checkpoint_id_is_refused(populated: Path, tmp_path: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=populated)
    checkpoint_id = checkpoint(system, 1)
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "other.txt", b"other\n")
    other = RollbackRecoverySystem(root=elsewhere)
    made = other.checkpoint("standard", 7, "other")
    # the same id with another record: rename the other store's ref to collide
    refs = elsewhere / ".checkpoints" / "refs" / "checkpoints"
    os.rename(refs / made.checkpoint_id, refs / checkpoint_id)
    archive = tmp_path / "a.rra"
    system.export([checkpoint_id], archive)
    before = store_files(elsewhere / ".checkpoints")
    line = one_error_line(cli("import", str(archive), cwd=elsewhere), 16)
    assert "conflict" in line and checkpoint_id in line and "nothing was imported" in line
    assert store_files(elsewhere / ".checkpoints") == before


def test_inflation_budget_refuses_a_bomb_of_valid_objects(project: Path, tmp_path: Path) -> None:
    for i in range(6):
        write(project / f"zeros{i}.bin", bytes(3_000_000 + i))  # distinct objects, nearly all zeros
    system = RollbackRecoverySystem(root=project)
    checkpoint(system, 1)
    archive = tmp_path / "zeros.rra"
    system.export(["latest"], archive)
    assert archive.stat().st_size < 20_000
    assert verify_archive(archive).bytes > 18_000_000  # the default floor (1 GiB) accepts it
    with pytest.raises(ArchiveError, match="decompression bomb"):
        verify_archive(archive, limits=Limits(ratio=100, floor=1 << 20))


def test_a_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A claimed 255 MiB object of zeros (the frame is ~8 KiB) is hashed in pieces, never held whole."""
    size = 255 << 20
    content_oid = "ab" * 32
    root, root_data = tree({"name": "z", "type": "file", "hash": content_oid, "size": size, "exec": False})
    rec = record("evil-step1-20260102_030405", root)
    head = stream([("evil-step1-20260102_030405", rec[0])], [rec, (root, root_data)], trailer=False)
    bomb = tmp_path / "bomb.rra"
    bomb.write_bytes(rle_zeros(head + b"O" + bytes.fromhex(content_oid) + struct.pack("<Q", size), size))
    # VmHWM, not ru_maxrss: on Linux the latter keeps the parent's high-water mark across exec
    script = ("import re, sys\nfrom rrstore.archive.files import verify_archive\nfrom rrstore.errors import "
              "ArchiveError\ntry:\n    verify_archive(sys.argv[1])\nexcept ArchiveError as exc:\n    print(exc)\n"
              "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n")
    out = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    message, peak_kib = out.stdout.splitlines()
    assert "altered" in message
    assert int(peak_kib) < 128 << 10, f"peak RSS {int(peak_kib) >> 10} MiB"


def test_help_lists_the_archive_commands_and_exit_code(project: Path, cli: Cli) -> None:
    out = cli("--help", cwd=project)
    assert out.returncode == 0
    assert "16  bad archive" in out.stdout
    for command in ("export", "import", "verify"):
        assert f"  {command} " in out.stdout.split("Commands:")[1]


# --- holes 2 and 3 end to end: names that are never written -------------------------------------------------


def test_an_archive_planting_a_git_hook_never_reaches_git(git_project: Path, tmp_path: Path) -> None:
    """Hole 2: the hook is refused at verify and import; ``.git/`` and the store stay byte-identical.

    Before the fix both commands exited 0 and a restore wrote ``.git/hooks/post-checkout``.
    """
    env = {"HOME": str(tmp_path)}
    checkpoint(RollbackRecoverySystem(root=git_project), 1)
    store, dot_git = git_project / ".checkpoints", git_project / ".git"
    before, git_before = store_files(store), tree_manifest(dot_git, skip=())
    tree_before = tree_manifest(git_project)
    for files in ({".git/hooks/post-checkout": HOOK, "README.md": b"# demo\n"}, {".GIT/hooks/post-checkout": HOOK},
                  {"sub/.git/hooks/post-checkout": HOOK, "sub/x": b"x\n"}):
        path = tmp_path / "hook.rra"
        path.write_bytes(planted(files))
        for command in ("verify", "import"):
            line = one_error_line(run_cli(command, str(path), cwd=git_project, env=env), 16)
            assert "is never written: git's own directory" in line, line
    assert store_files(store) == before and tree_manifest(dot_git, skip=()) == git_before
    assert tree_manifest(git_project) == tree_before
    assert not (dot_git / "hooks" / "post-checkout").exists()
    subprocess.run(["git", "-C", str(git_project), "checkout", "-q", "-b", "other"], check=True,
                   env={**os.environ, "HOME": str(tmp_path)})
    assert not (tmp_path / "hook-ran").exists()


def test_an_archive_holding_the_store_s_ref_and_config_cannot_overwrite_them(project: Path, tmp_path: Path) -> None:
    """Hole 3, default store: before the fix the import passed and a restore pointed the ref at 000…."""
    write(project / "work.txt", b"work\n")
    own = checkpoint(RollbackRecoverySystem(root=project), 1)
    store = project / ".checkpoints"
    before = store_files(store)
    path = tmp_path / "store.rra"
    path.write_bytes(planted({f".checkpoints/refs/checkpoints/{own}": b"0" * 64 + b"\n",
                              ".checkpoints/config.json": b'{"format": null}', "work.txt": b"work\n"}))
    for command in ("verify", "import"):
        line = one_error_line(run_cli(command, str(path), cwd=project), 16)
        assert "path .checkpoints: '.checkpoints' is never written" in line, line
    assert store_files(store) == before
    listed = run_cli("list", "--json", cwd=project)
    assert listed.returncode == 0 and own in listed.stdout, listed.stderr


@pytest.mark.parametrize("how", ["rrstore.toml", "--store"])
def test_restore_refuses_a_tree_writing_into_a_store_at_a_custom_path(how: str, project: Path,
                                                                        tmp_path: Path) -> None:
    """Hole 3, store at ``store-dir`` inside the root: ``store-dir`` is an ordinary name to an archive (another
    project's store lives elsewhere), so import accepts it; restore, which knows where this store is, refuses
    before anything is written. Before the fix the restore exited 0 and replaced the store's ref and config.
    """
    write(project / "work.txt", b"work\n")
    opts = ["--store", "store-dir"] if how == "--store" else []
    if how == "rrstore.toml":
        write(project / "rrstore.toml", b'store = "store-dir"\n')
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "s", "-q", *opts,
                   cwd=project)
    assert made.returncode == 0, made.stderr
    own = made.stdout.strip()
    store = project / "store-dir"
    path = tmp_path / "store.rra"
    path.write_bytes(planted({f"store-dir/refs/checkpoints/{own}": b"0" * 64 + b"\n",
                              "store-dir/config.json": b'{"format": null}', "work.txt": b"work\n"}))
    assert run_cli("import", str(path), *opts, cwd=project).returncode == 0

    def stored() -> dict[str, tuple[int, str]]:  # a restore writes its pid into its lock file, nothing else
        return {k: v for k, v in store_files(store).items() if not k.startswith("locks/")}

    before, tree_before = stored(), tree_manifest(project, skip=("store-dir",))
    for dry in ([], ["--dry-run"]):
        out = run_cli("restore", "--checkpoint-id", "evil-step1-20260102_030405", *dry, *opts, cwd=project)
        line = one_error_line(out, 17)
        assert line.startswith("rrstore: error: restore refused, nothing was changed: checkpoint evil-step1-"), line
        assert "path store-dir: is the store's own directory" in line, line
    assert stored() == before and tree_manifest(project, skip=("store-dir",)) == tree_before
    listed = run_cli("list", "--json", *opts, cwd=project)
    assert listed.returncode == 0 and own in listed.stdout, listed.stderr
