"""Scope that matches intent (issue 9, points 5 and 6): venvs, cache directories, files that never settle.

Real git repositories, a real venv made by ``python -m venv --without-pip``, a
real CACHEDIR.TAG, real writer processes appending to a log while the real CLI
checkpoints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SeaweedFS, git, run_cli, tree_manifest, write, writing

from rrstore import RollbackRecoverySystem
from rrstore.errors import TornRead
from rrstore.worktree.scan import CACHE_REASON, CACHEDIR_SIGNATURE, VENV_REASON, scan_scope
from rrstore.worktree.snapshot import TORN_REASON

TAG = CACHEDIR_SIGNATURE + b"\n# This file is a cache directory tag created by the test.\n"
LEFT_OUT = {".venv": VENV_REASON, "build/cache": CACHE_REASON}


def make_venv(root: Path) -> Path:
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    assert (venv / "pyvenv.cfg").is_file()
    return venv


def populate(root: Path) -> None:
    """Work files, an unignored venv, a tagged cache, a CACHEDIR.TAG without the signature (not a cache)."""
    write(root, "src/app.py", "print('app')\n")
    write(root, "build/out.txt", "kept: build itself is not a cache\n")
    write(root, "build/cache/CACHEDIR.TAG", TAG)
    write(root, "build/cache/objects/blob.bin", os.urandom(4096))
    write(root, "notes/CACHEDIR.TAG", "just notes named like a tag\n")
    make_venv(root)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose .gitignore lists neither .venv nor logs (as flask's did not)."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, ".gitignore", "__pycache__/\n")
    write(root, "README.md", "# demo\n")
    write(root, "build/cache/tracked.txt", "git owns this one\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    populate(root)
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    root.mkdir()
    write(root, "README.md", "# demo\n")
    populate(root)
    return root


def cli_checkpoint(root: Path, *extra: str, step: int = 1) -> subprocess.CompletedProcess[str]:
    return run_cli("checkpoint", "--lane", "standard", "--step-number", str(step), "--step-name", f"s{step}",
                   *extra, cwd=root)


def show(root: Path, checkpoint_id: str) -> dict[str, object]:
    out = run_cli("show", checkpoint_id, "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def held_paths(root: Path, checkpoint_id: str) -> set[str]:
    system = RollbackRecoverySystem(root=root)
    from rrstore.tree import flatten

    manager = system.checkpoint_manager
    return set(flatten(manager.store.objects, manager.get(checkpoint_id).state_hash))


def below(manifest: dict[str, tuple[object, ...]], top: str) -> dict[str, tuple[object, ...]]:
    return {p: v for p, v in manifest.items() if p == top or p.startswith(top + "/")}


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rrstore: warning: left out")]


# --- venvs and cache directories ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_a_venv_and_a_cache_directory_are_left_out_warned_once_and_listed(kind: str, repo: Path,
                                                                           plain: Path) -> None:
    root = repo if kind == "git" else plain
    out = cli_checkpoint(root)
    assert out.returncode == 0, out.stderr
    checkpoint_id = out.stdout.strip()
    [line] = warnings(out.stderr)
    assert line == ("rrstore: warning: left out .venv (a virtual environment: pyvenv.cfg), build/cache "
                    "(a cache directory: CACHEDIR.TAG); include a directory with scope_include = [...] in "
                    "rrstore.toml"), out.stderr
    assert show(root, checkpoint_id)["left_out"] == LEFT_OUT
    held = held_paths(root, checkpoint_id)
    assert not [p for p in held if p.startswith(".venv")]
    assert {"src/app.py", "build/out.txt", "notes/CACHEDIR.TAG"} <= held  # a tag without the signature is a file
    assert "build/cache/objects/blob.bin" not in held and "build/cache/CACHEDIR.TAG" not in held
    # git owns tracked files: the one tracked file inside the cache directory stays in the checkpoint
    assert ("build/cache/tracked.txt" in held) == (kind == "git")


def test_the_warning_names_each_directory_once_and_a_venv_inside_a_cache_is_not_named(plain: Path) -> None:
    make_venv(plain / "build" / "cache")  # build/cache/.venv: inside a left-out directory already
    write(plain, "deep/a/b/CACHEDIR.TAG", TAG)
    write(plain, "deep/a/b/c/CACHEDIR.TAG", TAG)
    out = cli_checkpoint(plain)
    assert out.returncode == 0, out.stderr
    assert len(warnings(out.stderr)) == 1
    assert show(plain, out.stdout.strip())["left_out"] == {**LEFT_OUT, "deep/a/b": CACHE_REASON}


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_scope_include_keeps_them_in(kind: str, repo: Path, plain: Path) -> None:
    root = repo if kind == "git" else plain
    write(root, "rrstore.toml", 'scope_include = ["./.venv/", "build/cache"]\n')
    out = cli_checkpoint(root)
    assert out.returncode == 0, out.stderr
    assert warnings(out.stderr) == []
    checkpoint_id = out.stdout.strip()
    assert show(root, checkpoint_id)["left_out"] == {}
    held = held_paths(root, checkpoint_id)
    assert {".venv/pyvenv.cfg", ".venv/bin/python", "build/cache/objects/blob.bin"} <= held


def test_scope_include_keeps_a_git_ignored_directory_in_and_restore_brings_it_back(repo: Path) -> None:
    """An ignored build/ is in no checkpoint, unless scope_include names it: then restore carries it."""
    write(repo, ".gitignore", "__pycache__/\nout/\n*.log\n")
    write(repo, "out/lib/mod.o", "object code\n")
    write(repo, "out/run.log", "a log in out/\n")
    write(repo, "top.log", "an ignored file elsewhere\n")
    plain = cli_checkpoint(repo)
    assert plain.returncode == 0, plain.stderr
    assert not {p for p in held_paths(repo, plain.stdout.strip()) if p.startswith("out/") or p.endswith(".log")}

    write(repo, "rrstore.toml", 'scope_include = ["out", ".venv", "build/cache"]\n')
    kept = cli_checkpoint(repo, step=2)
    assert kept.returncode == 0, kept.stderr
    held = held_paths(repo, kept.stdout.strip())
    assert {"out/lib/mod.o", "out/run.log", ".venv/pyvenv.cfg"} <= held and "top.log" not in held
    (repo / "out" / "lib" / "mod.o").unlink()
    done = run_cli("restore", kept.stdout.strip(), cwd=repo)
    assert done.returncode == 0, done.stderr
    assert (repo / "out" / "lib" / "mod.o").read_text() == "object code\n"


def test_scope_include_must_be_a_list_of_paths(repo: Path) -> None:
    write(repo, "rrstore.toml", 'scope_include = ".venv"\n')
    out = cli_checkpoint(repo)
    assert out.returncode == 2, out.stderr
    assert "scope_include must be a list of strings" in out.stderr
    assert not (repo / ".checkpoints").exists()


def test_the_root_itself_being_a_venv_is_not_left_out(tmp_path: Path) -> None:
    root = make_venv(tmp_path)
    write(root, "work.txt", "mine\n")
    scope = scan_scope(root, [root / ".checkpoints"])
    assert scope.left_out == {}
    assert {"pyvenv.cfg", "work.txt"} <= set(scope.paths)


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_restore_leaves_a_left_out_venv_and_cache_alone(kind: str, repo: Path, plain: Path) -> None:
    root = repo if kind == "git" else plain
    first = cli_checkpoint(root).stdout.strip()
    # the venv moves on (a package installed), the cache grows, the work changes
    write(root, ".venv/lib/site.txt", "installed later\n")
    (root / ".venv" / "pyvenv.cfg").write_text((root / ".venv" / "pyvenv.cfg").read_text() + "# edited\n")
    write(root, "build/cache/objects/new.bin", os.urandom(2048))
    write(root, "src/app.py", "print('changed')\n")
    before = tree_manifest(root)
    venv_now, cache_now = below(before, ".venv"), below(before, "build/cache")

    text = run_cli("restore", first, "--dry-run", cwd=root)
    assert text.returncode == 0 and text.stdout == "W src/app.py\n", text
    assert text.stderr.strip().endswith("; left alone (left out of the scope): .venv, build/cache"), text.stderr
    dry = run_cli("restore", first, "--dry-run", "--json", cwd=root)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["kept"] == LEFT_OUT
    assert planned["written"] == ["src/app.py"] and planned["removed"] == []

    done = run_cli("restore", first, "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("kept", "written", "removed")} == {k: planned[k] for k in
                                                                       ("kept", "written", "removed")}
    after = tree_manifest(root)
    assert below(after, ".venv") == venv_now and below(after, "build/cache") == cache_now
    assert (root / "src" / "app.py").read_text() == "print('app')\n"
    # the undo checkpoint left out the same directories, and undoing leaves them alone too
    undo_id = result["undo_checkpoint_id"]
    assert show(root, undo_id)["left_out"] == LEFT_OUT
    assert run_cli("restore", undo_id, cwd=root).returncode == 0
    again = tree_manifest(root)
    assert again == before


def test_restore_of_a_checkpoint_that_held_the_venv_does_not_rewind_it(repo: Path) -> None:
    """A checkpoint taken while .venv was configured in: once it is left out again, restore leaves it."""
    write(repo, "rrstore.toml", 'scope_include = [".venv"]\n')
    old = cli_checkpoint(repo).stdout.strip()
    assert ".venv/pyvenv.cfg" in held_paths(repo, old)
    (repo / "rrstore.toml").unlink()
    write(repo, ".venv/lib/site.txt", "installed later\n")
    venv_now = below(tree_manifest(repo), ".venv")
    out = run_cli("restore", old, "--json", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["kept"] == LEFT_OUT
    assert below(tree_manifest(repo), ".venv") == venv_now
    assert (repo / "rrstore.toml").exists()  # the rest of the tree is restored as usual


# --- a file that never settles --------------------------------------------------------------------

@pytest.fixture
def logged(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, "README.md", "# demo\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def test_a_file_written_during_the_checkpoint_is_left_out_and_a_later_restore_keeps_it(logged: Path) -> None:
    log = logged / "logs" / "growing.log"
    with writing(log):
        out = cli_checkpoint(logged)
    assert out.returncode == 0, out.stderr
    checkpoint_id = out.stdout.strip()
    assert warnings(out.stderr) == ["rrstore: warning: left out logs/growing.log (kept changing while it was "
                                    "read); --strict aborts instead"]
    assert show(logged, checkpoint_id)["left_out"] == {"logs/growing.log": TORN_REASON}
    assert "logs/growing.log" not in held_paths(logged, checkpoint_id)
    assert "README.md" in held_paths(logged, checkpoint_id)

    quiet = log.read_bytes()  # the writers stopped: the log is a file like any other now
    (logged / "README.md").write_text("# changed\n")
    dry = run_cli("restore", checkpoint_id, "--dry-run", "--json", cwd=logged)
    assert json.loads(dry.stdout)["kept"] == {"logs/growing.log": TORN_REASON}
    assert json.loads(dry.stdout)["removed"] == []
    done = run_cli("restore", checkpoint_id, cwd=logged)
    assert done.returncode == 0, done.stderr
    assert log.read_bytes() == quiet
    assert (logged / "README.md").read_text() == "# demo\n"
    # a quiet log is held again by the next checkpoint
    later = cli_checkpoint(logged, step=2)
    assert later.returncode == 0 and warnings(later.stderr) == []
    assert "logs/growing.log" in held_paths(logged, later.stdout.strip())


def test_strict_keeps_aborting_with_exit_1_and_records_nothing(logged: Path) -> None:
    first = cli_checkpoint(logged)
    assert first.returncode == 0, first.stderr
    log = logged / "logs" / "growing.log"
    with writing(log):
        out = cli_checkpoint(logged, "--strict", step=2)
        with pytest.raises(TornRead):
            RollbackRecoverySystem(root=logged).checkpoint("standard", 3, "s3", strict=True)
    assert out.returncode == 1, out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"rrstore: error: {log} kept changing while it was read; checkpoint aborted, "
                                  "retry when it is quiet")
    listed = run_cli("list", "--json", cwd=logged)
    assert [r["checkpoint_id"] for r in json.loads(listed.stdout)] == [first.stdout.strip()]


# --- the venv's absolute symlink: one rule for what leaves the store ------------------------------


def test_a_venv_link_is_kept_locally_and_refused_alike_by_export_and_push(
        repo: Path, tmp_path: Path, seaweedfs: SeaweedFS, s3_remote: str, s3_env: dict[str, str]) -> None:
    """Checkpoint and restore keep `.venv/bin/python3.X -> /abs/python3.X`; export and push refuse it, both exit 17.

    So a checkpoint that push accepts always exports, and what export writes, import accepts.
    """
    write(repo, "rrstore.toml", 'scope_include = [".venv"]\n')
    checkpoint_id = cli_checkpoint(repo).stdout.strip()
    [link] = [p for p in (repo / ".venv" / "bin").iterdir() if p.is_symlink() and os.path.isabs(os.readlink(p))]
    target, name = os.readlink(link), f".venv/bin/{link.name}"  # python3.X -> the base interpreter

    exported = run_cli("export", checkpoint_id, "-o", str(tmp_path / "a.rra"), cwd=repo)
    pushed = run_cli("push", checkpoint_id, "--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint,
                     cwd=repo, env=s3_env)
    for out, lead in ((exported, "export refused, nothing was written"),
                      (pushed, f"push to {s3_remote} refused, nothing was sent")):
        assert out.returncode == 17, out.stderr
        [line] = out.stderr.splitlines()
        assert lead in line and f"path {name}: symlink to {target!r} leads out of the tree" in line
    assert not list(tmp_path.glob("a.rra*"))
    assert run_cli("export", checkpoint_id, "--format", "tar", "-o", str(tmp_path / "t.tar.zst"),
                   cwd=repo).returncode == 0

    # the local store keeps it: restore writes the link back as it was
    link.unlink()
    assert run_cli("restore", checkpoint_id, cwd=repo).returncode == 0
    assert os.readlink(link) == target

    # left out (the default), the same tree exports, pushes, and imports elsewhere
    (repo / "rrstore.toml").unlink()
    shareable = cli_checkpoint(repo, step=2).stdout.strip()
    assert run_cli("export", shareable, "-o", str(tmp_path / "b.rra"), cwd=repo).returncode == 0
    pushed = run_cli("push", shareable, "--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint,
                     cwd=repo, env=s3_env)
    assert pushed.returncode == 0, pushed.stderr
    other = tmp_path / "other"
    other.mkdir()
    imported = run_cli("import", str(tmp_path / "b.rra"), cwd=other)
    assert imported.returncode == 0, imported.stderr
