"""Shared fixtures: real directories, real git repositories, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rrstore import RollbackRecoverySystem

GIT_ENV = {
    "GIT_AUTHOR_NAME": "rrstore tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "rrstore tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A plain directory (not a git work tree) to checkpoint."""
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def git_project(tmp_path: Path) -> Path:
    """A git repository with one commit, created with git itself."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# demo\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def system_for() -> Callable[[Path], RollbackRecoverySystem]:
    def make(root: Path) -> RollbackRecoverySystem:
        return RollbackRecoverySystem(root=root)
    return make


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would: ``python -m rrstore ARGS`` in ``cwd``."""
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    full_env.pop("RRSTORE_DIR", None) if env is None or "RRSTORE_DIR" not in env else None
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, input=stdin, timeout=120)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def tree_manifest(root: Path, skip: tuple[str, ...] = (".git", ".checkpoints")) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` (by ``os.lstat``, links not followed) -> what a restore must reproduce.

    Files: ("file", sha256 of the bytes, size, user-exec bit); symlinks: ("symlink", target);
    directories (so empty ones count): ("dir",). Top-level names in ``skip`` are left out.
    """
    import hashlib
    import stat as stat_mod

    out: dict[str, tuple[object, ...]] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for item in it:
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                if not rel_dir and item.name in skip:
                    continue
                st = os.lstat(item.path)
                if stat_mod.S_ISLNK(st.st_mode):
                    out[rel] = ("symlink", os.readlink(item.path))
                elif stat_mod.S_ISDIR(st.st_mode):
                    out[rel] = ("dir",)
                    stack.append(rel)
                elif stat_mod.S_ISREG(st.st_mode):
                    digest = hashlib.sha256()
                    with open(item.path, "rb") as fh:
                        for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                            digest.update(block)
                    out[rel] = ("file", digest.hexdigest(), st.st_size, bool(st.st_mode & stat_mod.S_IXUSR))
                else:
                    out[rel] = ("other", stat_mod.S_IFMT(st.st_mode))
    return out


@pytest.fixture
def manifest() -> Callable[..., dict[str, tuple[object, ...]]]:
    """``manifest(root)``: the full lstat-based manifest of a tree (see ``tree_manifest``)."""
    return tree_manifest
