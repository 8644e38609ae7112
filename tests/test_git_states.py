"""Checkpoints in the git states users live in (issue 9): a merge conflict, a rebase stopped on one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import git, run_cli, tree_manifest

from rrstore.errors import RRStoreError
from rrstore.tree import DIR, FILE, Entry, encode_tree


def conflicted(repo: Path, how: str) -> None:
    """Leave ``repo`` stopped on a real conflict in f.txt, by ``merge`` or by ``rebase``."""
    (repo / "f.txt").write_text("base\n")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "f.txt").write_text("theirs\n")
    git(repo, "commit", "-q", "-am", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "f.txt").write_text("ours\n")
    git(repo, "commit", "-q", "-am", "ours")
    args = ["merge", "other"] if how == "merge" else ["rebase", "other"]
    stopped = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                                  "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(repo), "PATH": "/usr/bin:/bin"})
    assert stopped.returncode != 0, stopped.stdout
    listed = git(repo, "ls-files", "--stage", "f.txt").splitlines()
    assert len(listed) == 3  # stages 1-3: the state that broke checkpoints


@pytest.mark.parametrize("how", ["merge", "rebase"])
def test_a_checkpoint_during_a_conflict_holds_each_path_once_and_restores(git_project: Path, how: str) -> None:
    repo = git_project

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = run_cli(*args, cwd=repo)
        assert out.returncode == 0, (args, out.stderr)
        return out

    (repo / "notes.txt").write_text("untracked notes\n")
    earlier = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "before").stdout.strip()
    before = tree_manifest(repo)
    conflicted(repo, how)
    during = cli("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "conflict").stdout.strip()
    in_conflict = tree_manifest(repo)
    assert "<<<<<<<" in (repo / "f.txt").read_text()
    files = sum(1 for v in in_conflict.values() if v[0] == "file")
    assert json.loads(cli("show", during, "--json").stdout)["metrics"]["files_scanned"] == files  # f.txt once

    listed = cli("diff", earlier, during).stdout.splitlines()
    assert "M f.txt" in listed or "A f.txt" in listed
    undo = cli("restore", "--checkpoint-id", earlier, "--json")
    assert tree_manifest(repo) == before
    cli("restore", "--checkpoint-id", during)
    assert tree_manifest(repo) == in_conflict
    undo_id = json.loads(undo.stdout)["undo_checkpoint_id"]
    cli("restore", "--checkpoint-id", undo_id)  # the undo taken during the conflict restores too
    assert tree_manifest(repo) == in_conflict
    cli("gc", "--dry-run")
    assert run_cli("check", "--read-data", cwd=repo).returncode == 0


def test_the_writer_refuses_a_tree_with_a_duplicate_name() -> None:
    one = Entry("f.txt", FILE, "0" * 64, 1)
    with pytest.raises(RRStoreError, match="twice"):
        encode_tree([one, one._replace(oid="1" * 64)])
    with pytest.raises(RRStoreError):
        encode_tree([Entry("..", DIR, "2" * 64)])
