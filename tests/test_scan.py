"""Snapshot scope: which paths a checkpoint holds, in a git work tree and outside one."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest
from conftest import git, write

from rrstore import RollbackRecoverySystem
from rrstore.tree import DIR, FILE, SYMLINK, Entry, flatten
from rrstore.worktree.scan import scan_scope


def checkpoint(root: Path, store: Path | None = None) -> tuple[RollbackRecoverySystem, dict[str, Entry]]:
    """Checkpoint ``root`` and return the system and every path in the stored tree."""
    system = RollbackRecoverySystem(root=root, store=store)
    state = system.checkpoint("standard", 1, "scope test").record.state_hash
    return system, flatten(system.checkpoint_manager.store.objects, state)


def files(tree: dict[str, Entry]) -> set[str]:
    return {path for path, entry in tree.items() if entry.kind != DIR}


def dirs(tree: dict[str, Entry]) -> set[str]:
    return {path for path, entry in tree.items() if entry.kind == DIR}


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


# --- inside a git work tree -------------------------------------------------------------------


def test_git_scope_is_tracked_plus_untracked_not_ignored(git_project: Path) -> None:
    write(git_project, "src/app.py", "print('app')\n")
    write(git_project, "src/old.py", "old\n")
    write(git_project, "keep.log", "tracked although ignored\n")
    git(git_project, "add", "src/app.py", "src/old.py")
    git(git_project, "add", "-f", "keep.log")
    git(git_project, "commit", "-q", "-m", "more")
    (git_project / "src" / "old.py").unlink()
    write(git_project, "README.md", "# changed, not staged\n")
    write(git_project, "notes.txt", "untracked\n")
    write(git_project, "newdir/x.py", "untracked in a new dir\n")
    write(git_project, "debug.log", "ignored\n")
    write(git_project, "src/trace.log", "ignored\n")
    write(git_project, "build/out.o", "ignored\n")
    write(git_project, "newdir/build/gen.o", "ignored\n")

    _, tree = checkpoint(git_project)

    assert files(tree) == {".gitignore", "README.md", "keep.log", "notes.txt", "newdir/x.py", "src/app.py"}
    assert dirs(tree) == {"src", "newdir"}
    assert tree["README.md"].oid == blake3.blake3(b"# changed, not staged\n").hexdigest()


def test_git_dir_and_store_are_never_in_scope(git_project: Path) -> None:
    system, tree = checkpoint(git_project)
    assert system.store_path == git_project / ".checkpoints"
    assert (git_project / ".checkpoints" / "config.json").is_file()
    assert not [p for p in tree if p.split("/")[0] in (".git", ".checkpoints")]
    # A second checkpoint, with a full store, sees the same tree.
    _, again = checkpoint(git_project)
    assert again == tree


# Names that are never written (tree.never_written), nested and in other cases: git lists them as
# untracked files on a case-sensitive file system, and a plain walk meets them.
NEVER_WRITTEN = ["sub/.GIT/config", "deep/er/.Git/hooks/post-checkout", "pkg/.checkpoints/refs/checkpoints/x",
                 "pkg2/.CHECKPOINTS/config.json", "win/.git./hooks/x", "win/git~1/hooks/x"]
LOOK_ALIKE = ["keep/.gitignore", "keep/.github/ci.yml", "keep/.gitkeep", "keep/.checkpoints.md", "keep/git~2"]


@pytest.mark.parametrize("mode", ["git", "plain"])
def test_names_never_written_are_left_out_at_any_depth_in_any_case(mode: str, request: pytest.FixtureRequest) -> None:
    """Fails before the scan used the tree rule: ``sub/.GIT/config`` and ``pkg/.checkpoints/...`` were checkpointed."""
    root: Path = request.getfixturevalue("git_project" if mode == "git" else "project")
    for rel in NEVER_WRITTEN + LOOK_ALIKE:
        write(root, rel, f"{rel}\n")
    if mode == "git":  # tracked, too: git refuses to track .GIT but not a nested .checkpoints
        write(root, "tracked/.checkpoints/notes.txt", "tracked\n")
        git(root, "add", "tracked", *LOOK_ALIKE)
        git(root, "commit", "-q", "-m", "a tracked .checkpoints")
    _, tree = checkpoint(root)
    assert not [p for p in tree if p.startswith(("sub/", "deep/er/", "pkg", "win/", "tracked/."))], sorted(tree)
    assert set(LOOK_ALIKE) <= files(tree)


def test_store_never_shows_in_git_status(git_project: Path) -> None:
    write(git_project, "work.txt", "untracked work\n")
    before = status(git_project)
    system = RollbackRecoverySystem(root=git_project)
    system.checkpoint("standard", 1, "one")
    write(git_project, "more.txt", "more\n")
    system.checkpoint("standard", 2, "two")
    (git_project / "more.txt").unlink()
    after = status(git_project)
    assert after == before == "?? work.txt\n"
    assert ".checkpoints" not in git(git_project, "status", "--porcelain", "--untracked-files=normal")


def test_store_is_excluded_even_without_its_gitignore(git_project: Path) -> None:
    checkpoint(git_project)
    (git_project / ".checkpoints" / ".gitignore").unlink()
    assert ".checkpoints" in status(git_project)  # git now sees it; the scope must not
    _, tree = checkpoint(git_project)
    assert files(tree) == {".gitignore", "README.md"}


def test_store_at_a_custom_path_inside_the_project_is_excluded(git_project: Path, project: Path) -> None:
    for root in (git_project, project):
        write(root, "data.txt", "data\n")
        _, tree = checkpoint(root, store=root / "var" / "cp")
        assert "data.txt" in tree
        assert (root / "var" / "cp" / "config.json").is_file()
        assert not [p for p in tree if p.startswith("var/")], root
        # "var" holds nothing but the store: it is not an empty directory of the project.
        assert "var" not in tree, root


def test_git_scope_of_a_subdirectory_of_the_repository(git_project: Path) -> None:
    write(git_project, "top.txt", "outside the root\n")
    sub = git_project / "sub"
    write(sub, "a.txt", "a\n")
    write(sub, "inner/b.txt", "b\n")
    write(sub, "x.log", "ignored by the repository's .gitignore\n")
    git(git_project, "add", "sub/a.txt")
    git(git_project, "commit", "-q", "-m", "sub")
    _, tree = checkpoint(sub)
    assert files(tree) == {"a.txt", "inner/b.txt"}
    assert not (git_project / ".checkpoints").exists()
    assert "sub/.checkpoints" not in status(git_project)


def test_git_empty_directories(git_project: Path) -> None:
    write(git_project, "src/app.py")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "src")
    for rel in ("empty", "src/empty", "a/b/c", "build", "newpkg/build/sub", "newpkg/empty"):
        (git_project / rel).mkdir(parents=True)
    write(git_project, "newpkg/s.py")

    _, tree = checkpoint(git_project)

    assert dirs(tree) == {"empty", "src", "src/empty", "a", "a/b", "a/b/c", "newpkg", "newpkg/empty"}
    assert files(tree) == {".gitignore", "README.md", "src/app.py", "newpkg/s.py"}


def test_git_directory_holding_only_ignored_files_is_not_recorded(git_project: Path) -> None:
    write(git_project, "logs/today.log", "ignored\n")
    _, tree = checkpoint(git_project)
    assert "logs" not in tree


def test_git_untracked_and_tracked_symlinks_are_links(git_project: Path, tmp_path: Path) -> None:
    write(git_project, "target.txt", "t\n")
    write(git_project, "realdir/inner.txt", "inner\n")
    write(tmp_path, "outside/secret.txt", "outside\n")
    os.symlink("target.txt", git_project / "link-file")
    os.symlink("realdir", git_project / "link-dir")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "links")
    os.symlink("does/not/exist", git_project / "dangling")
    os.symlink(str(tmp_path / "outside"), git_project / "link-out")

    _, tree = checkpoint(git_project)

    links = {p: e.target for p, e in tree.items() if e.kind == SYMLINK}
    assert links == {"link-file": "target.txt", "link-dir": "realdir", "dangling": "does/not/exist",
                     "link-out": str(tmp_path / "outside")}
    assert not [p for p in tree if p.startswith(("link-dir/", "link-out/"))]
    assert tree["realdir/inner.txt"].kind == FILE


# --- outside git: .rrstoreignore ---------------------------------------------------------------


def test_plain_directory_includes_everything_but_the_store(project: Path) -> None:
    write(project, "a.txt")
    write(project, "deep/er/b.txt")
    write(project, ".hidden")
    system, tree = checkpoint(project)
    assert files(tree) == {"a.txt", "deep/er/b.txt", ".hidden"}
    assert system.store_path == project / ".checkpoints"
    assert scan_scope(project, [system.store_path]).mode == "ignorefile"


def test_rrstoreignore_patterns(project: Path) -> None:
    write(project, ".rrstoreignore", "\n".join([
        "# comment line",
        "*.tmp",
        "!keep.tmp",
        "cache/",
        "/top-only.txt",
        "**/gen/*.py",
        "docs/*.pdf",
        "",
    ]))
    for rel in ("a.tmp", "keep.tmp", "sub/b.tmp", "sub/keep.tmp", "cache/x", "sub/cache/y", "other/cache",
                "top-only.txt", "sub/top-only.txt", "a/gen/m.py", "a/gen/m.txt", "gen/n.py", "gen/README",
                "docs/manual.pdf", "docs/deep/manual.pdf", "# comment line"):
        write(project, rel, rel)

    _, tree = checkpoint(project)

    assert files(tree) == {".rrstoreignore", "keep.tmp", "sub/keep.tmp", "other/cache", "sub/top-only.txt",
                           "a/gen/m.txt", "gen/README", "docs/deep/manual.pdf", "# comment line"}
    assert dirs(tree) == {"sub", "other", "a", "a/gen", "gen", "docs", "docs/deep"}


def test_rrstoreignore_negation_inside_an_ignored_directory_does_not_reinclude(project: Path) -> None:
    """gitignore rule: a file cannot be re-included if a parent directory is excluded."""
    write(project, ".rrstoreignore", "vendor/\n!vendor/important.txt\n")
    write(project, "vendor/important.txt")
    write(project, "main.txt")
    _, tree = checkpoint(project)
    assert files(tree) == {".rrstoreignore", "main.txt"}


def test_plain_directory_empty_directories(project: Path) -> None:
    write(project, "file.txt")
    for rel in ("empty", "a/b/c"):
        (project / rel).mkdir(parents=True)
    _, tree = checkpoint(project)
    assert dirs(tree) == {"empty", "a", "a/b", "a/b/c"}
    assert files(tree) == {"file.txt"}


def test_plain_directory_holding_only_ignored_files_is_not_recorded(project: Path) -> None:
    """As in git: a directory whose every file is ignored is not an (empty) directory of the snapshot."""
    write(project, ".rrstoreignore", "*.pyc\n")
    write(project, "app.py")
    write(project, "__pycache__/app.cpython-311.pyc")
    _, tree = checkpoint(project)
    assert files(tree) == {".rrstoreignore", "app.py"}
    assert "__pycache__" not in tree


def test_plain_directory_symlinks_are_links(project: Path, tmp_path: Path) -> None:
    write(project, "target.txt", "t\n")
    write(project, "realdir/inner.txt", "inner\n")
    write(tmp_path, "outside/secret.txt", "outside\n")
    os.symlink("target.txt", project / "link-file")
    os.symlink("realdir", project / "link-dir")
    os.symlink("does/not/exist", project / "dangling")
    os.symlink(str(tmp_path / "outside"), project / "link-out")
    os.symlink("self-loop", project / "self-loop")

    _, tree = checkpoint(project)

    links = {p: e.target for p, e in tree.items() if e.kind == SYMLINK}
    assert links == {"link-file": "target.txt", "link-dir": "realdir", "dangling": "does/not/exist",
                     "link-out": str(tmp_path / "outside"), "self-loop": "self-loop"}
    assert files(tree) - set(links) == {"target.txt", "realdir/inner.txt"}


def test_store_behind_a_symlink_is_excluded_and_not_followed(project: Path, tmp_path: Path) -> None:
    external = tmp_path / "external-store"
    external.mkdir()
    os.symlink(external, project / ".checkpoints")
    write(project, "a.txt")
    _, tree = checkpoint(project)
    assert files(tree) == {"a.txt"}
    assert (external / "config.json").is_file()
    assert any((external / "objects").iterdir())


# --- names --------------------------------------------------------------------------------------

ODD_NAMES = ["été.txt", "日本語/ファイル.md", "with space.txt", "my dir/inner file", "new\nline.txt",
             "tab\there", "emoji 😀", "-leading-dash", "quote\"d'", "back\\slash", "semi;colon*?[x]"]


@pytest.mark.parametrize("mode", ["git", "plain"])
def test_unicode_spaces_and_newlines_in_names(mode: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue("git_project" if mode == "git" else "project")
    for name in ODD_NAMES:
        write(root, name, f"content of {name}")
    if mode == "git":
        git(root, "add", "--", *ODD_NAMES[:5])
        git(root, "commit", "-q", "-m", "odd names")
    _, tree = checkpoint(root)
    found = files(tree) - {".gitignore", "README.md"}
    assert found == set(ODD_NAMES)
    for name in ODD_NAMES:
        assert tree[name].oid == blake3.blake3(f"content of {name}".encode()).hexdigest()
        assert tree[name].name == name.rpartition("/")[2]


def test_scope_lists_paths_relative_to_the_root(git_project: Path) -> None:
    write(git_project, "new\nline/file.txt")
    scope = scan_scope(git_project, [git_project / ".checkpoints"])
    assert scope.mode == "git"
    assert sorted(scope.paths) == [".gitignore", "README.md", "new\nline/file.txt"]
