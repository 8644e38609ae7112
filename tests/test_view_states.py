"""Views and states a tester met after issue 9: a project whose remote URL changed, files a checkpoint
left out, symlinks leading out of the tree, and the messages of an empty view.

Real git repositories, real subprocesses of the CLI, and (for push and pull) the real SeaweedFS server.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import git, run_cli, write

from rrstore import RollbackRecoverySystem, gitrepo


def make_repo(root: Path, remote: str | None, files: dict[str, str]) -> Path:
    """A real git repository at ``root`` with one commit of ``files`` and, if given, remote ``origin``."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for rel, text in files.items():
        write(root, rel, text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    if remote is not None:
        git(root, "remote", "add", "origin", remote)
    return root


def rr(repo: Path, *args: str, code: int | None = 0, store: Path | None = None) -> subprocess.CompletedProcess[str]:
    out = run_cli(*args, cwd=repo, env={"RRSTORE_DIR": str(store)} if store else None)
    if code is not None:
        assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
    return out


def checkpoint(repo: Path, step: int = 1, name: str = "build", store: Path | None = None) -> str:
    out = rr(repo, "checkpoint", "--lane", "standard", "--step-number", str(step), "--step-name", name,
             store=store)
    return out.stdout.strip()


# 1. a project whose origin URL changed -------------------------------------------------------------


def test_changing_the_origin_url_keeps_the_projects_own_checkpoints(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "click", "git@github.com:pallets/click.git", {"src/app.py": "v1\n"})
    first = checkpoint(repo)
    write(repo, "src/app.py", "v2\n")
    git(repo, "commit", "-q", "-am", "v2")
    second = checkpoint(repo, 2, "test")
    git(repo, "remote", "set-url", "origin", "git@github.com:myfork/click.git")

    assert json.loads(rr(repo, "show", "latest", "--json").stdout)["checkpoint_id"] == second
    assert rr(repo, "list").stdout.split() == [f"{second}:", "test", "(standard)", f"{first}:", "build",
                                               "(standard)"]
    restored = rr(repo, "restore", first)  # no --force: it is this repository's own checkpoint
    assert "rrstore: warning" not in restored.stderr
    assert (repo / "src/app.py").read_text() == "v1\n"
    # new checkpoints carry the new identity; the old ones still belong
    assert json.loads(rr(repo, "status", "--json").stdout)["newest_checkpoint_id"] == second


def test_another_repository_at_the_same_path_stays_foreign(tmp_path: Path) -> None:
    store = tmp_path / "store"
    repo = make_repo(tmp_path / "work", "git@github.com:pallets/click.git", {"a.txt": "click\n"})
    taken = checkpoint(repo, store=store)
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    make_repo(repo, "git@github.com:psf/requests.git", {"b.txt": "requests\n"})  # none of click's commits

    missing = rr(repo, "show", "latest", code=12, store=store)
    assert "no checkpoint of this project git:github.com/psf/requests" in missing.stderr
    refused = rr(repo, "restore", taken, code=22, store=store)
    assert "belongs to git:github.com/pallets/click" in refused.stderr
    assert not (repo / "a.txt").exists()


def test_the_commits_of_a_listing_are_asked_of_git_in_one_call(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "click", "https://github.com/pallets/click", {"a.txt": "1\n"})
    for step in range(1, 4):
        write(repo, "a.txt", f"v{step}\n")
        git(repo, "commit", "-q", "-am", f"c{step}")
        checkpoint(repo, step, f"s{step}")
    git(repo, "remote", "set-url", "origin", "https://github.com/myfork/click")
    calls: list[set[str]] = []
    real = gitrepo.known_commits

    def counted(root: Path, shas: set[str]) -> set[str]:
        calls.append(set(shas))
        return real(root, shas)

    monkeypatch.setattr("rrstore.checkpoint.known_commits", counted)
    system = RollbackRecoverySystem(root=repo)
    assert len(system.list().checkpoints) == 3
    system.list()
    assert system.show("latest").step_name == "s3"
    assert len(calls) == 1 and len(calls[0]) == 3  # one cat-file --batch-check, cached by the view
