"""The pre-commit framework's hook (.pre-commit-hooks.yaml) under the real ``pre-commit`` and a real ``git commit``.

The hook repository is a git repository made from this checkout as it is
now (uncommitted changes included), so the hook that runs is the code under
test: pre-commit clones it by path and rev, builds a virtual environment and
pip-installs it there, as it does for a user. That environment is built once
for the module (``PRE_COMMIT_HOME`` shared by its tests; about 10 s with a
warm pip cache).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from rrstore.lock import locked
from rrstore.store.store import OBJECTS_LOCK

REPO = Path(__file__).resolve().parent.parent
HOOK_ID = "rrstore-checkpoint"


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A commit's environment: an identity, no global git config (no core.hooksPath), one PRE_COMMIT_HOME."""
    home = tmp_path_factory.mktemp("precommit-home")
    (home / "gitconfig").write_text("")
    full = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR" and not k.startswith("GIT_")}
    full.update(PRE_COMMIT_HOME=str(home / "cache"), GIT_CONFIG_GLOBAL=str(home / "gitconfig"),
                GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
                GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    return full


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> tuple[Path, str]:
    """A git repository of this checkout's files as they are now (tracked, and untracked not ignored): path, sha."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    repo = tmp_path_factory.mktemp("hook-repo")
    for rel in filter(None, listed):
        source = REPO / rel
        if not source.is_file() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in the index
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, repo / rel, follow_symlinks=False)
    assert (repo / ".pre-commit-hooks.yaml").is_file()
    git(repo, "init", "-q", env=env)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "rrstore as under test", env=env)
    return repo, git(repo, "rev-parse", "HEAD", env=env).strip()


def make_project(root: Path, hook_repo: tuple[Path, str], env: dict[str, str], args: list[str] | None = None) -> Path:
    """A git repository whose .pre-commit-config.yaml names the hook repository by path and sha, hooks installed."""
    repo, sha = hook_repo
    root.mkdir()
    git(root, "init", "-q", env=env)
    hook: dict[str, object] = {"id": HOOK_ID, **({"args": args} if args else {})}
    config = {"repos": [{"repo": str(repo), "rev": sha, "hooks": [hook]}]}
    (root / ".pre-commit-config.yaml").write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    out = subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=root, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return root


def commit(root: Path, env: dict[str, str], message: str = "work") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "commit", "-m", message], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def rrstore(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=root, env=env, capture_output=True,
                          text=True)


def checkpoints(root: Path) -> list[dict[str, object]]:
    out = rrstore(root, "list", "--json")
    assert out.returncode in (0, 10), out.stderr  # 10: no store yet
    return json.loads(out.stdout) if out.returncode == 0 else []


def files_of(root: Path, checkpoint_id: str, tmp: Path) -> dict[str, bytes]:
    """Every regular file of a checkpoint, from its tar export (read without rrstore)."""
    archive = tmp / f"{checkpoint_id}.tar.zst"
    out = rrstore(root, "export", checkpoint_id, "--format", "tar", "-o", str(archive))
    assert out.returncode == 0, out.stderr
    raw = zstandard.ZstdDecompressor().stream_reader(archive.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_hook_checkpoints_what_the_commit_records(tmp_path: Path, hook_repo: tuple[Path, str],
                                                      env: dict[str, str]) -> None:
    root = make_project(tmp_path / "project", hook_repo, env)
    (root / "a.txt").write_text("staged\n")
    (root / "b.txt").write_text("also staged\n")
    git(root, "add", "-A", env=env)
    (root / "a.txt").write_text("edited after git add, not staged\n")
    (root / "notes.txt").write_text("untracked\n")

    out = commit(root, env)
    assert out.returncode == 0, out.stdout + out.stderr
    [record] = checkpoints(root)
    assert (record["lane"], record["step_number"], record["step_name"]) == ("standard", 0, "pre-commit")
    assert str(record["checkpoint_id"]) in out.stdout + out.stderr  # the hook is verbose: the commit shows the id
    files = files_of(root, str(record["checkpoint_id"]), tmp_path)
    assert files["a.txt"] == b"staged\n" == git(root, "show", "HEAD:a.txt", env=env).encode()
    assert files["b.txt"] == b"also staged\n"
    assert files["notes.txt"] == b"untracked\n"  # pre-commit leaves untracked files in place
    assert (root / "a.txt").read_text() == "edited after git add, not staged\n"  # pre-commit put it back
    assert git(root, "status", "--porcelain", env=env).split("\n")[0] == " M a.txt"

    git(root, "add", "a.txt", env=env)
    out = commit(root, env, "second")
    assert out.returncode == 0, out.stdout + out.stderr
    newest = checkpoints(root)[0]
    assert files_of(root, str(newest["checkpoint_id"]), tmp_path)["a.txt"] == b"edited after git add, not staged\n"


def test_a_failing_checkpoint_stops_the_commit_and_skip_commits(tmp_path: Path, hook_repo: tuple[Path, str],
                                                                env: dict[str, str]) -> None:
    root = make_project(tmp_path / "project", hook_repo, env)
    (root / "a.txt").write_text("one\n")
    git(root, "add", "-A", env=env)
    (root / ".checkpoints").write_text("not a store\n")  # the store cannot be made

    out = commit(root, env)
    assert out.returncode != 0
    assert "rrstore: error:" in out.stdout + out.stderr
    assert "Failed" in out.stdout + out.stderr
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode != 0  # no commit

    out = commit(root, {**env, "SKIP": HOOK_ID})
    assert out.returncode == 0, out.stdout + out.stderr
    assert git(root, "show", "HEAD:a.txt", env=env) == "one\n"


def test_a_busy_store_never_holds_up_the_commit(tmp_path: Path, hook_repo: tuple[Path, str],
                                                env: dict[str, str]) -> None:
    root = make_project(tmp_path / "project", hook_repo, env, args=["--time-limit", "1"])
    (root / "a.txt").write_text("one\n")
    git(root, "add", "-A", env=env)
    assert commit(root, env).returncode == 0
    [first] = checkpoints(root)

    (root / "a.txt").write_text("two\n")
    git(root, "add", "-A", env=env)
    with locked(root / ".checkpoints", OBJECTS_LOCK, exclusive=True):  # as a running gc holds it
        out = commit(root, env, "while gc runs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no checkpoint before this commit: not done after 1 s" in out.stdout + out.stderr
    assert git(root, "show", "HEAD:a.txt", env=env) == "two\n"
    assert [c["checkpoint_id"] for c in checkpoints(root)] == [first["checkpoint_id"]]
    assert not list((root / ".checkpoints" / "tmp").iterdir())  # stopped cleanly


def test_the_command_outside_the_framework(tmp_path: Path) -> None:
    """``rrstore pre-commit`` itself: the record it writes, its JSON, and a time limit that is no limit."""
    (tmp_path / "a.txt").write_text("one\n")
    out = rrstore(tmp_path, "pre-commit", "--lane", "docs", "--json", "-C", str(tmp_path))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert (record["lane"], record["step_number"], record["step_name"]) == ("docs", 0, "pre-commit")
    out = rrstore(tmp_path, "pre-commit", "--time-limit", "0", "-C", str(tmp_path))
    assert out.returncode == 2 and out.stderr.startswith("rrstore: error:") and out.stdout == ""
    assert len(checkpoints(tmp_path)) == 1
