"""Restore round trips on real trees: every byte, exec bit, symlink and empty directory comes back."""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import blake3
import pytest
from conftest import git

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.checkpoint import CheckpointManager
from rrstore.errors import CorruptObject, UndoUnproven
from rrstore.gc import Retention
from rrstore.store.objects import ObjectStore
from rrstore.store.pack import decode_index
from rrstore.tree import content_oids, flatten

IGNORE_PATTERNS = "*.log\nbuild/\n"


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def is_ignored(rel: str) -> bool:
    """What the test trees ignore: ``*.log`` and ``build/``."""
    return rel.endswith(".log") or rel == "build" or rel.startswith("build/")


def in_scope(entries: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {p: e for p, e in entries.items() if not is_ignored(p)}


def stats(root: Path, rels: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for rel in rels:
        st = os.lstat(root / rel)
        out[rel] = (st.st_ino, st.st_mtime_ns, st.st_mode)
    return out


def refs_of(root: Path) -> set[str]:
    folder = root / ".checkpoints" / "refs" / "checkpoints"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def objects_of(root: Path) -> set[str]:
    """Every object id in the project's store (packed or loose)."""
    return set(ObjectStore(LocalBackend(root / ".checkpoints")))


@pytest.fixture(params=["git", "plain"])
def tree(request: pytest.FixtureRequest) -> Path:
    """A populated project, either a git repository (some files committed) or a plain directory."""
    if request.param == "git":
        root: Path = request.getfixturevalue("git_project")
    else:
        root = request.getfixturevalue("project")
        (root / ".rrstoreignore").write_text(IGNORE_PATTERNS)
    populate(root)
    if request.param == "git":
        git(root, "add", "src", "bin", "data", "stable.txt")
        git(root, "commit", "-q", "-m", "tracked part")
    return root


def populate(root: Path) -> None:
    rng = random.Random(1234)
    write(root / "src" / "app.py", b"print('hello')\n")
    write(root / "src" / "lib" / "util.py", b"def f():\n    return 1\n")
    write(root / "bin" / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    write(root / "data" / "blob.bin", rng.randbytes(300_000))
    write(root / "data" / "zeros.bin", bytes(70_000))
    write(root / "empty.txt", b"")
    write(root / "sp ace ünï €.txt", "grüße\n".encode())
    write(root / "new\nline.txt", b"a name with a newline\n")
    write(root / "stable.txt", b"never changes\n")
    write(root / "f2d", b"a file that becomes a directory\n")
    write(root / "d2f" / "inner.txt", b"a directory that becomes a file\n")
    write(root / "f2l", b"a file that becomes a symlink\n")
    write(root / "l2f-target.txt", b"target\n")
    os.symlink("src/app.py", root / "link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("l2f-target.txt", root / "l2f")
    (root / "empty").mkdir()
    (root / "e1" / "e2").mkdir(parents=True)
    write(root / "debug.log", b"log before\n")
    write(root / "build" / "out.o", b"\x7fELF before")


def mutate(root: Path) -> None:
    write(root / "src" / "app.py", b"print('changed')\n", 0o755)
    os.chmod(root / "bin" / "run.sh", 0o644)
    os.chmod(root / "empty.txt", 0o755)
    os.unlink(root / "data" / "blob.bin")
    with open(root / "data" / "zeros.bin", "r+b") as fh:
        fh.seek(35_000)
        fh.write(b"\x01")
    write(root / "sp ace ünï €.txt", "grüsse\n".encode())
    os.unlink(root / "new\nline.txt")
    write(root / "new.txt", b"added after the checkpoint\n")
    write(root / "newdir" / "sub" / "file.txt", b"added in a new directory\n")
    os.unlink(root / "f2d")
    write(root / "f2d" / "inside.txt", b"now a directory\n")
    shutil.rmtree(root / "d2f")
    write(root / "d2f", b"now a file\n")
    os.unlink(root / "f2l")
    os.symlink("stable.txt", root / "f2l")
    os.unlink(root / "l2f")
    write(root / "l2f", b"was a symlink\n")
    os.unlink(root / "link")
    os.symlink("bin/run.sh", root / "link")
    os.unlink(root / "dangling")
    os.symlink("still/dangling/elsewhere", root / "dangling")
    (root / "empty").rmdir()
    write(root / "e1" / "e2" / "now.txt", b"the empty directory is not empty any more\n")
    (root / "grown-empty").mkdir()
    write(root / "debug.log", b"log after\n")
    write(root / "build" / "out.o", b"\x7fELF after")
    write(root / "build" / "more.o", b"more")


def test_round_trip_restores_every_byte_mode_symlink_and_empty_dir(tree: Path, cli, manifest) -> None:
    before = manifest(tree)
    assert before["empty"] == ("dir",) and before["e1/e2"] == ("dir",)
    assert before["dangling"] == ("symlink", "does/not/exist")
    cp = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "before", cwd=tree)
    assert cp.returncode == 0, cp.stderr
    checkpoint_id = cp.stdout.strip()

    mutate(tree)
    mutated = manifest(tree)
    kept = stats(tree, ["stable.txt", "src/lib/util.py", "debug.log", "build/out.o", "build/more.o"])

    out = cli("--json", "restore", "--checkpoint-id", checkpoint_id, cwd=tree)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["success"] is True and result["failures"] == {}

    after = manifest(tree)
    assert in_scope(after) == in_scope(before)
    # unchanged files were not rewritten; ignored files were not touched
    assert stats(tree, list(kept)) == kept
    assert (tree / "debug.log").read_bytes() == b"log after\n"
    assert (tree / "build" / "out.o").read_bytes() == b"\x7fELF after"
    assert (tree / "build" / "more.o").read_bytes() == b"more"
    assert not (tree / "newdir").exists()

    system = RollbackRecoverySystem(root=tree)
    record = system.show(checkpoint_id)
    assert system.status().state_hash == record.state_hash

    # the pre-restore checkpoint holds the mutated state and undoes the restore
    undo_id = result["undo_checkpoint_id"]
    assert undo_id and undo_id != checkpoint_id
    assert undo_id in refs_of(tree)
    undo = cli("restore", "--checkpoint-id", undo_id, cwd=tree)
    assert undo.returncode == 0, undo.stderr
    assert in_scope(manifest(tree)) == in_scope(mutated)
    assert manifest(tree) == mutated


def test_ignored_file_in_a_removed_directory_survives_and_status_matches(tree: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    record = system.checkpoint("standard", 1, "base").record
    write(tree / "newdir" / "sub" / "file.txt", b"added in a new directory\n")
    write(tree / "newdir" / "trace.log", b"ignored, inside a directory restore removes\n")

    result = system.restore(record.checkpoint_id)

    assert result.success, result.failures
    assert (tree / "newdir" / "trace.log").read_bytes() == b"ignored, inside a directory restore removes\n"
    assert not (tree / "newdir" / "sub").exists()
    # a directory that holds only ignored files is not part of the snapshot, in git or not
    assert system.status().state_hash == record.state_hash


def test_restore_rewrites_only_files_that_differ(tree: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    write(tree / "src" / "app.py", b"print('edited')\n")
    unchanged = [p for p, e in manifest(tree).items() if e[0] == "file" and p != "src/app.py"]
    kept = stats(tree, unchanged)

    result = system.restore(checkpoint_id)

    assert result.plan.write == ["src/app.py"]
    assert result.plan.remove == [] and result.plan.mkdir == [] and result.plan.symlink == []
    assert (tree / "src" / "app.py").read_bytes() == b"print('hello')\n"
    assert stats(tree, unchanged) == kept


def test_restore_of_identical_tree_changes_nothing_and_adds_no_checkpoint(tree: Path, cli) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    everything = [str(p.relative_to(tree)) for p in tree.rglob("*") if not {".git", ".checkpoints"} & set(p.parts)]
    kept = stats(tree, everything)
    refs = refs_of(tree)

    out = cli("--json", "restore", "--checkpoint-id", checkpoint_id, cwd=tree)

    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["undo_checkpoint_id"] is None
    assert result["written"] == [] and result["removed"] == []
    assert refs_of(tree) == refs
    assert stats(tree, everything) == kept


def test_dry_run_changes_nothing_on_disk(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    mutate(tree)
    everything = [str(p.relative_to(tree)) for p in tree.rglob("*") if not {".git", ".checkpoints"} & set(p.parts)]
    kept = stats(tree, everything)
    before, refs, objects = manifest(tree), refs_of(tree), objects_of(tree)

    out = cli("restore", "--checkpoint-id", checkpoint_id, "--dry-run", cwd=tree)

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "W src/app.py" in lines
    assert "D new.txt" in lines
    assert "X bin/run.sh" in lines
    assert "would restore" in out.stderr
    assert manifest(tree) == before
    assert stats(tree, everything) == kept
    assert refs_of(tree) == refs
    assert objects_of(tree) == objects


def test_path_restores_only_that_subset(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    original = manifest(tree)
    mutate(tree)
    mutated = manifest(tree)

    out = cli("restore", "--checkpoint-id", checkpoint_id, "--path", "src", "--path", "bin", cwd=tree)

    assert out.returncode == 0, out.stderr
    expected = {p: e for p, e in mutated.items() if p.split("/")[0] not in ("src", "bin")}
    expected.update({p: e for p, e in original.items() if p.split("/")[0] in ("src", "bin")})
    assert manifest(tree) == expected
    assert (tree / "src" / "app.py").read_bytes() == b"print('hello')\n"
    assert manifest(tree)["src/app.py"][3] is False
    assert manifest(tree)["bin/run.sh"][3] is True


def test_restore_from_subdirectory_path_is_relative_to_cwd(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    write(tree / "src" / "app.py", b"edited\n")
    write(tree / "src" / "lib" / "util.py", b"edited too\n")

    out = cli("-C", str(tree), "restore", "--checkpoint-id", checkpoint_id, "--path", "lib", cwd=tree / "src")

    assert out.returncode == 0, out.stderr
    assert (tree / "src" / "lib" / "util.py").read_bytes() == b"def f():\n    return 1\n"
    assert (tree / "src" / "app.py").read_bytes() == b"edited\n"


def test_path_below_a_directory_now_a_file_replaces_the_file_and_undo_brings_it_back(tree: Path, cli) -> None:
    """``--path src/lib/util.py`` while ``src/lib`` is a regular file: the file in the way goes (as a
    full restore would), the path comes back, and the undo checkpoint still holds the file."""
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    shutil.rmtree(tree / "src" / "lib")
    write(tree / "src" / "lib", b"a file where a directory was\n")

    out = cli("restore", "--checkpoint-id", checkpoint_id, "--path", "src/lib/util.py", cwd=tree)

    assert out.returncode == 0, out.stderr
    assert (tree / "src" / "lib" / "util.py").read_bytes() == b"def f():\n    return 1\n"
    undo_id = out.stderr.split("undo with: rrstore restore --checkpoint-id ")[1].split()[0]
    undo = cli("restore", "--checkpoint-id", undo_id, cwd=tree)
    assert undo.returncode == 0, undo.stderr
    assert (tree / "src" / "lib").read_bytes() == b"a file where a directory was\n"


def test_restore_never_writes_through_a_symlinked_directory(tree: Path, tmp_path: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    original = manifest(tree)
    outside = tmp_path / "outside"
    write(outside / "app.py", b"outside the tree\n")
    shutil.rmtree(tree / "src")
    os.symlink(outside, tree / "src")

    result = system.restore(checkpoint_id)

    assert (outside / "app.py").read_bytes() == b"outside the tree\n"
    assert sorted(os.listdir(outside)) == ["app.py"]
    assert result.success, result.failures
    assert in_scope(manifest(tree)) == in_scope(original)
    # the undo point recorded the symlink as a symlink, and is itself restorable
    assert result.undo_checkpoint_id is not None
    undo = system.restore(result.undo_checkpoint_id)
    assert undo.success, undo.failures
    assert os.readlink(tree / "src") == str(outside)
    assert (outside / "app.py").read_bytes() == b"outside the tree\n"


def test_git_restore_leaves_git_metadata_and_status_alone(git_project: Path, cli) -> None:
    root = git_project
    populate(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "all")
    head = git(root, "rev-parse", "HEAD")
    system = RollbackRecoverySystem(root=root)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    mutate(root)

    out = cli("restore", "--checkpoint-id", checkpoint_id, cwd=root)

    assert out.returncode == 0, out.stderr
    assert git(root, "rev-parse", "HEAD") == head
    # everything restored matches the commit; the store never shows up in git status
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""


# --- the undo checkpoint holds what restore changes, proven before the first write (issue 8) ---------


def checkpoint_cli(cli, root: Path, step: int, name: str, *extra: str) -> str:
    out = cli(*extra, "checkpoint", "--lane", "standard", "--step-number", str(step), "--step-name", name, cwd=root)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def flip_in_pack(store: Path, oid: str, data: bytes) -> None:
    """Flip one byte of ``oid``'s own bytes inside its pack block (random bytes are stored verbatim)."""
    idx = [decode_index(p.stem, p.read_bytes()) for p in (store / "packs").glob("*.idx")]
    [(pack_id, block_offset, block_size, _, _)] = [entries[oid] for entries in idx if oid in entries]
    pack_file = store / "packs" / f"{pack_id}.pack"
    pack = bytearray(pack_file.read_bytes())
    probe = data[len(data) // 2:len(data) // 2 + 64]
    at = pack.find(probe, block_offset, block_offset + block_size)
    assert at > 0 and pack.find(probe, at + 1) == -1
    pack[at + 10] ^= 0xFF
    os.chmod(pack_file, 0o644)
    pack_file.write_bytes(bytes(pack))
    with pytest.raises(CorruptObject):
        ObjectStore(LocalBackend(store)).get(oid)


@pytest.mark.parametrize("size", [150_000, 5_000_000], ids=["one-object", "chunked"])
def test_undo_restores_a_file_whose_deduplicated_packed_copy_is_damaged(git_project: Path, cli, size: int) -> None:
    """Hole 4: a flipped byte in a pack (latent damage) must not cost the file restore deletes."""
    root, store = git_project, git_project / ".checkpoints"
    write(root / "keep.txt", b"keep\n")
    base = checkpoint_cli(cli, root, 1, "without work.bin")
    work = random.Random(size).randbytes(size)
    write(root / "work.bin", work)
    write(root / "only-in-b.txt", b"makes b's tree differ from the undo checkpoint's\n")
    with_work = checkpoint_cli(cli, root, 2, "with work.bin")  # stores work.bin; the stat cache now trusts it
    system = RollbackRecoverySystem(root=root)
    entry = flatten(system.open_store().objects, system.show(with_work).state_hash)["work.bin"]
    pieces, offset = {}, 0
    for oid in content_oids(entry):
        length = next(e[oid][4] for p in (store / "packs").glob("*.idx")
                      if oid in (e := decode_index(p.stem, p.read_bytes())))
        pieces[oid], offset = work[offset:offset + length], offset + length
    damaged = list(pieces)[len(pieces) // 2]
    flip_in_pack(store, damaged, pieces[damaged])
    os.unlink(root / "only-in-b.txt")

    out = cli("--json", "restore", "--checkpoint-id", base, cwd=root)

    if out.returncode != 0:  # a refusal is allowed, and must leave work.bin alone
        assert out.returncode == 13 and "Traceback" not in out.stderr, out.stderr
        assert (root / "work.bin").read_bytes() == work
        return
    assert not (root / "work.bin").exists()
    undo_id = json.loads(out.stdout)["undo_checkpoint_id"]
    undo = cli("restore", "--checkpoint-id", undo_id, cwd=root)
    assert undo.returncode == 0, undo.stderr
    assert (root / "work.bin").read_bytes() == work
    # every later reader gets the good copy, and gc's pack rewrite keeps it, not the damaged one
    assert ObjectStore(LocalBackend(store)).get(damaged) == pieces[damaged]
    for checkpoint_id in (base, undo_id):
        system.pin(checkpoint_id)
    swept = system.gc(Retention(older_than=timedelta(0), grace=timedelta(0)),
                      now=datetime.now() + timedelta(hours=1))
    assert with_work in swept.removed and swept.packs_rewritten >= 1
    (store / "objects" / damaged[:2] / damaged[2:]).unlink()  # the loose good copy: now only packs remain
    assert ObjectStore(LocalBackend(store)).get(damaged) == pieces[damaged]


def test_undo_is_refused_when_the_damaged_files_bytes_changed_meanwhile(git_project: Path, cli, manifest,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hole 4: a damaged object whose file changed after the undo snapshot cannot be proven: nothing changes."""
    root, store = git_project, git_project / ".checkpoints"
    base = checkpoint_cli(cli, root, 1, "without work.bin")
    work = random.Random(7).randbytes(150_000)
    write(root / "work.bin", work)
    checkpoint_cli(cli, root, 2, "with work.bin")
    flip_in_pack(store, blake3.blake3(work).hexdigest(), work)
    refs = refs_of(root)
    record_snapshot = CheckpointManager.record_snapshot  # restore records its one scan as the undo point

    def record_then_edit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        made = record_snapshot(self, *args, **kwargs)
        write(root / "work.bin", b"edited after the undo snapshot\n")  # the race the proof must catch
        return made

    monkeypatch.setattr(CheckpointManager, "record_snapshot", record_then_edit)
    with pytest.raises(UndoUnproven, match=r"work\.bin"):
        RollbackRecoverySystem(root=root).restore(base)
    assert (root / "work.bin").read_bytes() == b"edited after the undo snapshot\n"
    assert refs_of(root) == refs  # the unproven undo checkpoint is not left behind


def test_undo_holds_a_file_that_is_ignored_now_and_restore_overwrites(git_project: Path, cli) -> None:
    """Hole 5: the target holds .env, .env is ignored since: the undo checkpoint must hold its only copy."""
    root = git_project
    write(root / ".env", b"SECRET=committed\n")
    git(root, "add", ".env")
    git(root, "commit", "-q", "-m", "env")
    base = checkpoint_cli(cli, root, 1, "with .env")
    git(root, "rm", "-q", "--cached", ".env")
    (root / ".gitignore").write_text("*.log\nbuild/\n.env\n")
    write(root / ".env", b"SECRET=only-copy\n")
    write(root / "build" / "out.o", b"ignored, not in the target: never touched")

    out = cli("--json", "restore", "--checkpoint-id", base, cwd=root)

    assert out.returncode == 0, out.stderr
    assert (root / ".env").read_bytes() == b"SECRET=committed\n"
    result = json.loads(out.stdout)
    assert ".env" in result["written"]
    undo = cli("restore", "--checkpoint-id", result["undo_checkpoint_id"], cwd=root)
    assert undo.returncode == 0, undo.stderr
    assert (root / ".env").read_bytes() == b"SECRET=only-copy\n"
    assert (root / "build" / "out.o").read_bytes() == b"ignored, not in the target: never touched"


def test_ignored_path_restore_replaces_is_in_the_undo_checkpoint_in_plain_trees_too(project: Path) -> None:
    """Hole 5 outside git: .rrstoreignore, a file turned into an ignored symlink, and an ignored file."""
    root = project
    write(root / "config.ini", b"[old]\n")
    write(root / "cache.dat", b"checkpointed\n")
    write(root / "cfg" / "a.txt", b"a directory in the checkpoint\n")
    system = RollbackRecoverySystem(root=root)
    base = system.checkpoint("standard", 1, "base").checkpoint_id
    (root / ".rrstoreignore").write_text("config.ini\ncache.dat\ncfg\n")
    os.unlink(root / "config.ini")
    os.symlink("elsewhere.ini", root / "config.ini")
    write(root / "cache.dat", b"only copy\n")
    shutil.rmtree(root / "cfg")
    write(root / "cfg", b"an ignored file where the checkpoint has a directory\n")

    result = system.restore(base)

    assert result.success, result.failures
    assert (root / "config.ini").read_bytes() == b"[old]\n"
    assert (root / "cache.dat").read_bytes() == b"checkpointed\n"
    assert (root / "cfg" / "a.txt").read_bytes() == b"a directory in the checkpoint\n"
    assert result.undo_checkpoint_id is not None
    assert system.restore(result.undo_checkpoint_id).success
    assert os.readlink(root / "config.ini") == "elsewhere.ini"
    assert (root / "cache.dat").read_bytes() == b"only copy\n"
    assert (root / "cfg").read_bytes() == b"an ignored file where the checkpoint has a directory\n"


def test_a_file_that_appears_where_restore_creates_one_is_left_alone(project: Path) -> None:
    """Nothing was there when the undo checkpoint was taken, so what appears since is not in it."""
    source = project / "source"
    write(source / "a.txt", b"checkpointed a\n")
    write(source / "b.txt", b"checkpointed b\n")
    system = RollbackRecoverySystem(root=source, store=project / "store")
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    empty = project / "empty"
    empty.mkdir()

    calls: list[int] = []

    def someone_writes(done: int, total: int) -> None:  # after the first file (the first call): the other appears
        calls.append(done)
        for name in ("a.txt", "b.txt"):
            if len(calls) == 1 and not (empty / name).exists():
                write(empty / name, b"written by someone else meanwhile\n")

    result = RollbackRecoverySystem(root=empty, store=project / "store").restore(checkpoint_id,
                                                                                 progress=someone_writes, force=True)

    [appeared] = result.failures
    assert "appeared" in result.failures[appeared]
    assert (empty / appeared).read_bytes() == b"written by someone else meanwhile\n"


def test_no_undo_restores_without_an_undo_checkpoint(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    before = manifest(tree)
    mutate(tree)
    refs, objects = refs_of(tree), objects_of(tree)

    out = cli("--json", "restore", "--no-undo", "--checkpoint-id", checkpoint_id, cwd=tree)

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["undo_checkpoint_id"] is None
    assert in_scope(manifest(tree)) == in_scope(before)
    assert refs_of(tree) == refs and objects_of(tree) == objects
    text = system.restore(checkpoint_id, undo=False)
    assert text.undo_checkpoint_id is None and text.plan.empty


def test_undo_rebuilds_a_damaged_tree_it_reuses(project: Path) -> None:
    """The trees above what restore deletes are read back too; a damaged one is rebuilt from the snapshot."""
    root, store = project, project / ".checkpoints"
    write(root / "keep.txt", b"keep\n")
    system = RollbackRecoverySystem(root=root)
    base = system.checkpoint("standard", 1, "without sub").checkpoint_id
    write(root / "sub" / "deep" / "work.txt", b"only copy of this work\n")
    with_sub = system.checkpoint("standard", 2, "with sub").record
    sub_tree = flatten(system.open_store().objects, with_sub.state_hash)["sub"].oid
    loose = store / "objects" / sub_tree[:2] / sub_tree[2:]
    write(loose, b"\x28\xb5\x2f\xfd garbage: a damaged copy read before the packed one")

    result = RollbackRecoverySystem(root=root).restore(base)

    assert result.success and not (root / "sub").exists()
    assert ObjectStore(LocalBackend(store)).get(sub_tree)  # the rebuilt copy reads back
    assert result.undo_checkpoint_id is not None
    assert RollbackRecoverySystem(root=root).restore(result.undo_checkpoint_id).success
    assert (root / "sub" / "deep" / "work.txt").read_bytes() == b"only copy of this work\n"


def test_undo_proves_every_tree_it_reuses_not_only_those_above_what_restore_changes(project: Path) -> None:
    """A directory restore never touches (docs/) is still read when the undo is restored: it is proven too."""
    root, store = project, project / ".checkpoints"
    system = RollbackRecoverySystem(root=root)
    write(root / "docs" / "a.txt", b"new docs\n")
    system.checkpoint("standard", 1, "docs")
    write(root / "docs" / "a.txt", b"old docs\n")
    write(root / "src" / "x.txt", b"one\n")
    older = system.checkpoint("standard", 2, "older").checkpoint_id
    write(root / "docs" / "a.txt", b"new docs\n")  # docs/ is again the tree of step 1: deduplicated
    write(root / "src" / "x.txt", b"two: the only copy\n")
    now = system.checkpoint("standard", 3, "now").record
    docs_tree = flatten(system.open_store().objects, now.state_hash)["docs"].oid
    write(store / "objects" / docs_tree[:2] / docs_tree[2:], b"\x28\xb5\x2f\xfd a damaged copy of docs/")

    result = RollbackRecoverySystem(root=root).restore(older, paths=[str(root / "src")])

    assert result.success and (root / "src" / "x.txt").read_bytes() == b"one\n"
    assert result.undo_checkpoint_id is not None
    assert RollbackRecoverySystem(root=root).restore(result.undo_checkpoint_id).success
    assert (root / "src" / "x.txt").read_bytes() == b"two: the only copy\n"
    assert (root / "docs" / "a.txt").read_bytes() == b"new docs\n"


def test_a_full_restore_finds_packed_objects_in_the_index_without_a_loose_probe(project: Path, monkeypatch) -> None:
    """Issue 11: restore lists ``objects/`` once instead of one failed open or stat per packed object."""
    root = project
    files = {f"d{i % 7}/f{i}.txt": b"small file %d\n" % i * (i % 5 + 1) for i in range(300)}
    for rel, data in files.items():
        write(root / rel, data)
    system = RollbackRecoverySystem(root=root)
    checkpoint_id = system.checkpoint("standard", 1, "many small files").checkpoint_id
    for folder in {rel.partition("/")[0] for rel in files}:
        shutil.rmtree(root / folder)
    failed: list[str] = []

    def probing(name: str, missing: object) -> None:
        real = getattr(LocalBackend, name)

        def probe(self: LocalBackend, key: str, *args: object) -> object:
            try:
                found = real(self, key, *args)
            except KeyError:
                found = missing
            if found is missing and key.startswith("objects/"):
                failed.append(key)
            if found is missing and missing is KeyError:
                raise KeyError(key)
            return found

        monkeypatch.setattr(LocalBackend, name, probe)

    probing("read", KeyError)
    probing("stat", KeyError)
    probing("exists", False)

    result = RollbackRecoverySystem(root=root).restore(checkpoint_id)

    assert result.success and len(result.plan.write) == len(files)
    assert {rel: (root / rel).read_bytes() for rel in files} == files
    packed = {oid for p in (root / ".checkpoints" / "packs").glob("*.idx")
              for oid in decode_index(p.stem, p.read_bytes())}
    assert len(packed) > len(files)  # contents and trees are packed ...
    assert not {key.replace("/", "")[len("objects"):] for key in failed} & packed  # ... and none was probed loose
    # the only misses: the undo checkpoint's new record (loose), asked for just before it is written
    assert all((root / ".checkpoints" / key).is_file() for key in failed), failed
