"""Checkpoints in the git states users live in (issue 9): a merge, rebase, cherry-pick, revert or bisect
waiting for the user, most stopped on a conflict; in the main work tree and in a linked one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import GIT_ENV, STOPS, SeaweedFS, git, run_cli, stop_in, tree_manifest

from rrstore.errors import RRStoreError
from rrstore.tree import DIR, FILE, Entry, encode_tree


def conflicted(repo: Path, how: str) -> None:
    """Leave ``repo`` stopped on a real conflict in f.txt, by ``merge`` or by ``rebase``."""
    stop_in(repo, how)


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


def ok(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = run_cli(*args, cwd=repo, env=env)
    assert out.returncode == 0, (args, out.stderr)
    return out


def git_check(repo: Path) -> dict[str, object]:
    """validate's git check, from the real CLI (exit 20: something failed)."""
    out = run_cli("validate", "--json", cwd=repo)
    assert out.returncode in (0, 20), out.stderr
    return next(c for c in json.loads(out.stdout)["checks"] if c["name"] == "git repository accessible")


ADVICE = {"merge": "finish with git commit --no-edit or abort with git merge --abort",
          "rebase": "finish with git rebase --continue or abort with git rebase --abort",
          "cherry-pick": "finish with git cherry-pick --continue or abort with git cherry-pick --abort",
          "revert": "finish with git revert --continue or abort with git revert --abort",
          "bisect": "end it with git bisect reset"}


@pytest.mark.parametrize("how", list(STOPS))
def test_the_record_show_and_validate_name_the_waiting_operation(git_project: Path, how: str) -> None:
    repo = git_project
    calm = ok(repo, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "calm").stdout.strip()
    assert git_check(repo)["status"] == "pass"
    stop_in(repo, how)
    during = ok(repo, "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "waiting").stdout.strip()

    merge_head = git(repo, "rev-parse", "other").strip() if how == "merge" else None
    record = json.loads(ok(repo, "show", during, "--json").stdout)
    assert (record["git_operation"], record["git_merge_head"]) == (how, merge_head)
    shown = ok(repo, "show", during).stdout.splitlines()
    assert f"git_operation: {how}" in shown
    assert (f"git_merge_head: {merge_head}" in shown) == (how == "merge")
    assert not any(line.startswith("git_operation") for line in ok(repo, "show", calm).stdout.splitlines())

    check = git_check(repo)
    article = "an" if how[0] in "aeiou" else "a"
    head = f" (MERGE_HEAD {merge_head[:7]})" if merge_head else ""
    unmerged = "" if how == "bisect" else "; 1 unmerged path(s)"
    assert check["status"] == "fail"
    assert check["reason"] == f"{article} {how} is in progress{head}: {ADVICE[how]}{unmerged}"
    assert check["details"] == ([] if how == "bisect" else ["U f.txt"])
    text = run_cli("validate", "--verbose", cwd=repo)
    assert text.returncode == 20 and f"✗ git repository accessible: {check['reason']}" in text.stdout

    end = ["bisect", "reset"] if how == "bisect" else [how, "--abort"]
    git(repo, *end)
    assert git_check(repo)["status"] == "pass"  # finished: nothing waits, the check passes again


def test_a_linked_worktree_reports_its_own_merge(git_project: Path, tmp_path: Path) -> None:
    """A linked worktree keeps MERGE_HEAD in its own git dir (.git/worktrees/NAME); the main one stays calm."""
    repo = git_project
    stop_in(repo, "merge")
    git(repo, "merge", "--abort")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked), "main")
    stopped = subprocess.run(["git", "-C", str(linked), "merge", "other"], capture_output=True, text=True,
                             env={**os.environ, **GIT_ENV, "HOME": str(tmp_path)})
    assert stopped.returncode != 0 and (linked / ".git").is_file()

    during = ok(linked, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "x").stdout.strip()
    record = json.loads(ok(linked, "show", during, "--json").stdout)
    assert (record["git_operation"], record["git_merge_head"]) == ("merge", git(repo, "rev-parse", "other").strip())
    assert git_check(linked)["details"] == ["U f.txt"]
    calm = ok(repo, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "y").stdout.strip()
    assert json.loads(ok(repo, "show", calm, "--json").stdout)["git_operation"] is None
    assert git_check(repo)["status"] == "pass"


@pytest.mark.parametrize("how", ["merge", "rebase"])
def test_gc_push_and_pull_are_unaffected_by_checkpoints_taken_in_a_conflict(
        git_project: Path, tmp_path: Path, how: str, s3_remote: str, seaweedfs: SeaweedFS,
        s3_env: dict[str, str]) -> None:
    """The store the issue saw broken (gc and push exit 13): a real sweep, every checkpoint pushed, and all of
    them pulled back into a fresh store, whose restores give the same bytes."""
    repo = git_project
    (repo / "notes.txt").write_text("untracked notes\n")
    earlier = ok(repo, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "a").stdout.strip()
    before = tree_manifest(repo)
    conflicted(repo, how)
    during = ok(repo, "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "b").stdout.strip()
    in_conflict = tree_manifest(repo)
    undo = json.loads(ok(repo, "restore", "--checkpoint-id", earlier, "--json").stdout)["undo_checkpoint_id"]
    assert tree_manifest(repo) == before
    ok(repo, "restore", "--checkpoint-id", undo)
    assert tree_manifest(repo) == in_conflict
    ids = sorted(r["checkpoint_id"] for r in json.loads(ok(repo, "list", "--json").stdout))
    assert {earlier, during, undo} <= set(ids)

    # a real sweep: no checkpoint expires (every standard one is kept), unreachable objects go at once
    ok(repo, "gc", "--older-than", "0s", "--keep-lane", "standard", "--grace", "0s")
    assert sorted(r["checkpoint_id"] for r in json.loads(ok(repo, "list", "--json").stdout)) == ids
    ok(repo, "check", "--read-data")

    remote = ["--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint]
    pushed = json.loads(ok(repo, "push", *remote, "--json", env=s3_env).stdout)
    assert sorted(pushed["transferred"]) == ids and pushed["success"] is True

    fresh = tmp_path / "fresh-store"
    pulled = json.loads(ok(repo, "pull", *ids, *remote, "--store", str(fresh), "--json", env=s3_env).stdout)
    assert sorted(pulled["transferred"]) == ids
    ok(repo, "restore", "--checkpoint-id", earlier, "--store", str(fresh))
    assert tree_manifest(repo) == before
    ok(repo, "restore", "--checkpoint-id", during, "--store", str(fresh))
    assert tree_manifest(repo) == in_conflict
    assert "<<<<<<<" in (repo / "f.txt").read_text()
