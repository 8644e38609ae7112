"""One project, one view (issue 9): several real git repositories sharing one store through RRSTORE_DIR.

Each sees only its own checkpoints ('latest', list, status, plan, validate, workflow --resume);
``--all-projects`` shows all with their project; another project's checkpoint is restored only
with ``--force``; gc's keep-last counts per project; records without a project keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, tree_manifest, write

from rrstore import RollbackRecoverySystem
from rrstore.errors import ForeignCheckpoint
from rrstore.worktree.gitrepo import normalise_remote, project_identity

CLICK = "git:github.com/pallets/click"
REQUESTS = "git:github.com/psf/requests"


@dataclass
class Shared:
    store: Path
    click: Path
    requests: Path
    solo: Path  # a repository without a remote

    def cli(self, repo: Path, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        out = run_cli(*args, cwd=repo, env={"RRSTORE_DIR": str(self.store)})
        if code is not None:
            assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
        return out

    def checkpoint(self, repo: Path, step: int, name: str, lane: str = "standard") -> str:
        out = self.cli(repo, "checkpoint", "--lane", lane, "--step-number", str(step), "--step-name", name)
        return out.stdout.strip()

    def system(self, repo: Path) -> RollbackRecoverySystem:
        return RollbackRecoverySystem(root=repo, store=self.store)


@pytest.fixture
def shared(tmp_path: Path) -> Shared:
    click = make_repo(tmp_path / "src" / "click", "https://user:secret@github.com/pallets/click.git",
                      {"src/click/core.py": "CORE = 1\n", "README.md": "# click\n", "tests/test_basic.py": "x\n"})
    requests = make_repo(tmp_path / "src" / "requests", "git@github.com:psf/requests.git",
                         {"src/requests/api.py": "API = 1\n", "README.md": "# requests\n", "setup.cfg": "[x]\n"})
    solo = make_repo(tmp_path / "src" / "solo", None, {"solo.txt": "alone\n"})
    return Shared(tmp_path / "shared-store", click, requests, solo)


def ids(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in out.stdout.splitlines()]


def test_identity_is_the_normalised_remote_else_the_first_commit_else_the_path(shared: Shared,
                                                                               tmp_path: Path) -> None:
    assert project_identity(shared.click) == CLICK  # credentials and .git gone
    assert project_identity(shared.requests) == REQUESTS  # scp-like form
    first = git(shared.solo, "rev-list", "--max-parents=0", "HEAD").strip()
    assert project_identity(shared.solo) == f"git:root-{first}"
    git(shared.solo, "commit", "-q", "--allow-empty", "-m", "second")
    assert project_identity(shared.solo) == f"git:root-{first}"  # the first commit, not HEAD
    assert project_identity(shared.click / "src") == f"{CLICK}#src"  # a subdirectory is another tree

    # no origin: the first remote by name
    git(shared.solo, "remote", "add", "upstream", "https://gitlab.example.org/team/solo/")
    git(shared.solo, "remote", "add", "backup", "ssh://git@backup.example.org:22/team/solo.git")
    assert project_identity(shared.solo) == "git:backup.example.org/team/solo"

    empty = tmp_path / "empty-repo"
    empty.mkdir()
    git(empty, "init", "-q")
    assert project_identity(empty) == f"path:{empty.resolve()}"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert project_identity(plain) == f"path:{plain.resolve()}"

    forms = ["https://github.com/pallets/flask", "https://u:p@github.com/pallets/flask.git/",
             "git@github.com:pallets/flask.git", "ssh://git@github.com/pallets/flask", "git://github.com/pallets/flask"]
    assert {normalise_remote(url, tmp_path) for url in forms} == {"github.com/pallets/flask"}
    assert normalise_remote("https://host:8443/a/b", tmp_path) != normalise_remote("https://host/a/b", tmp_path)


def test_each_project_sees_only_its_own_checkpoints(shared: Shared) -> None:
    c1 = shared.checkpoint(shared.click, 1, "click gates")
    write(shared.click, "src/click/core.py", "CORE = 2\n")
    c2 = shared.checkpoint(shared.click, 2, "click tests")
    r1 = shared.checkpoint(shared.requests, 1, "requests gates")  # the store's newest
    s1 = shared.checkpoint(shared.solo, 1, "solo gates")

    assert ids(shared.cli(shared.click, "list")) == [c2, c1]
    assert ids(shared.cli(shared.requests, "list")) == [r1]
    assert ids(shared.cli(shared.solo, "list")) == [s1]
    assert [r["checkpoint_id"] for r in json.loads(shared.cli(shared.click, "list", "--json").stdout)] == [c2, c1]
    assert shared.cli(shared.click, "show", "latest").stdout.splitlines()[0] == f"checkpoint_id: {c2}"
    assert json.loads(shared.cli(shared.requests, "show", "latest", "--json").stdout)["project"] == REQUESTS

    status = json.loads(shared.cli(shared.click, "status", "--json").stdout)
    assert status["newest_checkpoint_id"] == c2 and status["clean"] is True
    assert shared.cli(shared.click, "status").stdout.splitlines()[1] == f"matches the newest checkpoint {c2}"
    assert json.loads(shared.cli(shared.click, "status", "--all-projects", "--json").stdout)[
        "newest_checkpoint_id"] == s1

    plan = json.loads(shared.cli(shared.click, "plan", "--failure-type", "unknown", "--json").stdout)
    assert plan["checkpoint_id"] == c2
    assert shared.system(shared.requests).plan("unknown", "standard").checkpoint_id == r1

    checked = shared.cli(shared.click, "validate", "--checkpoint", "latest", code=None)
    assert f"working tree matches {c2}" in checked.stdout
    assert f"working tree matches {s1}" not in checked.stdout and r1 not in checked.stdout

    # --all-projects: every checkpoint, with its project
    every = shared.cli(shared.click, "list", "--all-projects").stdout.splitlines()
    solo = project_identity(shared.solo)
    assert every == [f"{s1}: solo gates (standard) {solo}", f"{r1}: requests gates (standard) {REQUESTS}",
                     f"{c2}: click tests (standard) {CLICK}", f"{c1}: click gates (standard) {CLICK}"]
    table = shared.cli(shared.click, "list", "--all-projects", "-v").stdout.splitlines()
    assert "PROJECT" in table[0] and REQUESTS in next(line for line in table if line.split()[0] == r1)
    listed = json.loads(shared.cli(shared.requests, "list", "--all-projects", "--json").stdout)
    assert {r["checkpoint_id"]: r["project"] for r in listed} == {s1: solo, r1: REQUESTS, c2: CLICK, c1: CLICK}
    api = shared.system(shared.click)
    assert [r.checkpoint_id for r in api.list(all_projects=True).checkpoints] == [s1, r1, c2, c1]
    assert [r.checkpoint_id for r in api.checkpoint_manager.list_checkpoints()] == [c2, c1]

    # explicit ids, and the ids "did you mean" prints, reach every project's checkpoint
    assert shared.cli(shared.click, "show", r1).stdout.splitlines()[0] == f"checkpoint_id: {r1}"
    assert shared.cli(shared.click, "diff", r1).stdout  # diffing needs no --force
    typo = shared.cli(shared.click, "show", r1[:-1], code=12)
    assert r1 in typo.stderr


def test_latest_in_a_project_without_checkpoints_says_the_others_are_elsewhere(shared: Shared) -> None:
    shared.checkpoint(shared.requests, 1, "requests gates")
    out = shared.cli(shared.click, "restore", "--checkpoint-id", "latest", code=12)
    assert out.stderr.splitlines() == [
        f"rrstore: error: Checkpoint not found: latest: no checkpoint of this project {CLICK}; the store holds "
        "1 of other projects (rrstore list --all-projects)"]
    assert shared.cli(shared.click, "list").stdout == ""


def test_restoring_another_projects_checkpoint_needs_force(shared: Shared) -> None:
    shared.checkpoint(shared.click, 1, "click gates")
    write(shared.requests, "notes.txt", "untracked notes\n")
    theirs = shared.checkpoint(shared.requests, 1, "requests gates")
    their_tree = tree_manifest(shared.requests)
    write(shared.click, "src/click/core.py", "CORE = 'being fixed'\n")
    before = tree_manifest(shared.click)
    refs = sorted(os.listdir(shared.store / "refs" / "checkpoints"))
    expected = (f"checkpoint {theirs} belongs to {REQUESTS} (root {shared.requests.resolve()}), not this project "
                f"{CLICK}; add --force to restore it here")

    refused = shared.cli(shared.click, "restore", "--checkpoint-id", theirs, code=22)
    assert refused.stderr.splitlines() == [f"rrstore: error: {expected}"] and refused.stdout == ""
    assert tree_manifest(shared.click) == before  # byte for byte
    assert sorted(os.listdir(shared.store / "refs" / "checkpoints")) == refs  # not even an undo checkpoint
    as_json = json.loads(shared.cli(shared.click, "--json", "restore", theirs, code=22).stderr)
    assert (as_json["error"], as_json["exit_code"]) == ("ForeignCheckpoint", 22)
    with pytest.raises(ForeignCheckpoint) as caught:
        shared.system(shared.click).restore(theirs)
    assert (caught.value.owner, caught.value.project, caught.value.exit_code) == (REQUESTS, CLICK, 22)

    dry = shared.cli(shared.click, "restore", "--checkpoint-id", theirs, "--dry-run")
    assert dry.stderr.splitlines()[0] == f"rrstore: warning: {expected}"
    assert "W src/requests/api.py" in dry.stdout.splitlines() and "D src/click/core.py" in dry.stdout.splitlines()
    assert tree_manifest(shared.click) == before
    assert shared.system(shared.click).restore(theirs, dry_run=True).warnings == [expected]

    done = shared.cli(shared.click, "restore", "--checkpoint-id", theirs, "--force", "--json")
    undo = json.loads(done.stdout)["undo_checkpoint_id"]
    assert tree_manifest(shared.click, skip=(".git",)) == their_tree
    # the undo point is this project's own: restoring it needs no --force and gives the fix back
    assert shared.cli(shared.click, "show", undo, "--json").stdout.count(CLICK) == 1
    shared.cli(shared.click, "restore", "--checkpoint-id", undo)
    assert tree_manifest(shared.click) == before


def test_gc_keep_last_keeps_each_projects_newest(shared: Shared) -> None:
    kept, removed = [], []
    for repo in (shared.click, shared.requests):
        removed.append(shared.checkpoint(repo, 1, "older"))
        write(repo, "README.md", f"newer {repo.name}\n")
        kept.append(shared.checkpoint(repo, 2, "newer"))
    kept.append(shared.checkpoint(shared.solo, 1, "only one"))
    shared.checkpoint(shared.click, 3, "docs", lane="docs")  # another lane of click: its own count
    requests_tree = tree_manifest(shared.requests)

    out = json.loads(shared.cli(shared.click, "gc", "--older-than", "0s", "--keep-last", "1", "--json").stdout)

    assert sorted(out["removed"]) == sorted(removed)
    assert set(kept) <= set(out["kept"]) and len(out["kept"]) == 4
    write(shared.requests, "README.md", "edited\n")
    undo = json.loads(shared.cli(shared.requests, "restore", "--checkpoint-id", "latest", "--json").stdout)
    assert tree_manifest(shared.requests) == requests_tree  # requests' newest survived click's gc
    assert ids(shared.cli(shared.requests, "list")) == [undo["undo_checkpoint_id"], kept[1]]


def test_workflow_resume_continues_this_projects_run(shared: Shared, tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    for repo in (shared.click, shared.requests):
        write(repo, "rrstore.toml",
              "[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n"
              '  { name = "gates", command = "true" },\n'
              f'  {{ name = "tests", command = "test -f {flags}/{repo.name}" }},\n'
              '  { name = "package", command = "true" },\n]\n')
        git(repo, "add", "rrstore.toml")
        git(repo, "commit", "-q", "-m", "workflow")
    failed = shared.system(shared.click).workflow("standard")
    assert failed.exit_status != 0 and failed.failed_step is not None and failed.failed_step.record.step_number == 2
    (flags / "requests").write_text("ok\n")
    assert shared.system(shared.requests).workflow("standard").success  # the store's newest run: complete

    (flags / "click").write_text("ok\n")  # the fix, outside the tree
    resumed = shared.system(shared.click).workflow("standard", resume=True)

    assert not resumed.nothing_to_resume and resumed.start_step == 2 and resumed.success
    assert resumed.resumed_from and shared.system(shared.click).show(resumed.resumed_from).project == CLICK
    assert [s.record.step_number for s in resumed.steps] == [2, 3]


def test_records_without_a_project_belong_to_their_root(shared: Shared) -> None:
    system = shared.system(shared.click)
    legacy = system.checkpoint("standard", 1, "before identities").record
    legacy.project = ""  # as an older rrstore wrote it
    with system.open_store().writing():
        system.checkpoint_manager.update(legacy)
    assert json.loads(shared.cli(shared.click, "show", legacy.checkpoint_id, "--json").stdout)["project"] == ""
    shared.checkpoint(shared.requests, 1, "requests gates")

    assert ids(shared.cli(shared.click, "list")) == [legacy.checkpoint_id]
    assert shared.cli(shared.click, "show", "latest").stdout.splitlines()[0] == f"checkpoint_id: {legacy.checkpoint_id}"
    assert legacy.checkpoint_id not in ids(shared.cli(shared.requests, "list"))
    every = shared.cli(shared.requests, "list", "--all-projects").stdout.splitlines()
    assert f"{legacy.checkpoint_id}: before identities (standard) (root {shared.click.resolve()})" in every
    write(shared.click, "README.md", "changed\n")
    shared.cli(shared.click, "restore", "--checkpoint-id", "latest")
    assert (shared.click / "README.md").read_text() == "# click\n"

    refused = shared.cli(shared.requests, "restore", "--checkpoint-id", legacy.checkpoint_id, code=22)
    assert refused.stderr.splitlines() == [
        f"rrstore: error: checkpoint {legacy.checkpoint_id} belongs to another project (its record predates "
        f"project identities) (root {shared.click.resolve()}), not this project {REQUESTS}; add --force to "
        "restore it here"]
    gc = json.loads(shared.cli(shared.requests, "gc", "--older-than", "0s", "--keep-last", "1", "--json").stdout)
    assert legacy.checkpoint_id in gc["kept"], gc


def test_two_clones_of_one_remote_are_one_project(tmp_path: Path) -> None:
    upstream = make_repo(tmp_path / "upstream", None, {"app.py": "APP = 1\n"})
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream), str(bare)], check=True, capture_output=True)
    first, second = tmp_path / "ci" / "runner-1" / "app", tmp_path / "laptop" / "app"
    for clone in (first, second):
        subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True, capture_output=True)
    git(second, "remote", "set-url", "origin", f"file://{bare}/")  # the same remote, spelled otherwise
    assert project_identity(first) == project_identity(second) == f"git:{tmp_path.resolve() / 'app'}"  # .git dropped
    shared = Shared(tmp_path / "store", first, second, upstream)

    write(first, "app.py", "APP = 2\n")
    taken = shared.checkpoint(first, 1, "on the runner")
    wanted = tree_manifest(first, skip=(".git",))

    assert ids(shared.cli(second, "list")) == [taken]
    shared.cli(second, "restore", "--checkpoint-id", "latest")  # no --force: the same project
    assert tree_manifest(second, skip=(".git",)) == wanted
    assert ids(shared.cli(upstream, "list")) == []  # the upstream itself has no remote: another project


def test_imported_checkpoints_keep_their_project(shared: Shared, tmp_path: Path) -> None:
    """A checkpoint carried to another store (archive, or pull: records travel as they are) stays its project's."""
    theirs = shared.checkpoint(shared.requests, 1, "requests gates")
    archive = tmp_path / "requests.rra"
    shared.cli(shared.requests, "export", theirs, "-o", str(archive))
    own = tmp_path / "own-store"
    out = run_cli("--store", str(own), "import", str(archive), cwd=shared.click)
    assert out.returncode == 0, out.stderr
    shown = run_cli("--store", str(own), "show", theirs, "--json", cwd=shared.click)
    assert json.loads(shown.stdout)["project"] == REQUESTS
    assert run_cli("--store", str(own), "list", cwd=shared.click).stdout == ""
    assert run_cli("--store", str(own), "restore", theirs, cwd=shared.click).returncode == 22


def test_a_shared_remote_lists_and_pulls_this_projects_checkpoints(shared: Shared, tmp_path: Path, seaweedfs,
                                                                   s3_remote: str, s3_env: dict[str, str]) -> None:
    """A team bucket for several repositories: a fresh clone of click lists and pulls click's checkpoints
    only, though requests pushed last; what it pulls keeps its project, so it restores without --force."""
    endpoint = seaweedfs.endpoint
    env = {**s3_env, "RRSTORE_REMOTE": s3_remote}
    ours = shared.checkpoint(shared.click, 1, "click gates")
    theirs = shared.checkpoint(shared.requests, 1, "requests gates")
    for repo in (shared.click, shared.requests):
        out = run_cli("push", "--endpoint-url", endpoint, cwd=repo, env={**env, "RRSTORE_DIR": str(shared.store)})
        assert out.returncode == 0, out.stderr
    runner = tmp_path / "runner" / "click"
    subprocess.run(["git", "clone", "-q", str(shared.click), str(runner)], check=True, capture_output=True)
    git(runner, "remote", "set-url", "origin", "git@github.com:pallets/click.git")  # as CI clones it
    wanted = tree_manifest(shared.click, skip=(".git",))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = run_cli(*args, "--endpoint-url", endpoint, cwd=runner, env=env)
        assert out.returncode == 0, (args, out.stderr)
        return out

    assert ids(cli("list", "--remote", s3_remote)) == [ours]
    assert set(ids(cli("list", "--remote", s3_remote, "--all-projects"))) == {ours, theirs}
    assert cli("pull", "latest").stdout.split() == [ours]
    shown = json.loads(run_cli("show", ours, "--json", cwd=runner).stdout)
    assert (shown["project"], shown["root"]) == (CLICK, str(shared.click.resolve()))  # its own, as taken
    write(runner, "src/click/core.py", "broken on the runner\n")
    assert run_cli("restore", "latest", cwd=runner).returncode == 0
    assert tree_manifest(runner, skip=(".git", ".checkpoints")) == wanted
    assert cli("pull", "latest", "--all-projects").stdout.split() == [theirs]
    assert run_cli("restore", theirs, cwd=runner).returncode == 22


def test_checkpoints_taken_before_git_init_or_a_remote_stay_the_projects_own(tmp_path: Path) -> None:
    """A project that gains a history, then a remote, changes identity; what it took before is still its own."""
    root = tmp_path / "app"
    write(root, "app.py", "APP = 1\n")
    shared = Shared(tmp_path / "store", root, root, root)
    plain = shared.checkpoint(root, 1, "before git init")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    first = shared.checkpoint(root, 2, "before the remote")
    git(root, "remote", "add", "origin", "https://github.com/example/app.git")
    write(root, "app.py", "APP = 2\n")
    third = shared.checkpoint(root, 3, "with the remote")
    other = make_repo(tmp_path / "other", None, {"other.txt": "other\n"})
    foreign = shared.checkpoint(other, 1, "another project")

    projects = {r["checkpoint_id"]: r["project"] for r in json.loads(shared.cli(root, "list", "--json").stdout)}
    root_commit = git(root, "rev-list", "--max-parents=0", "HEAD").strip()
    assert projects == {third: "git:github.com/example/app", first: f"git:root-{root_commit}",
                        plain: f"path:{root.resolve()}"}
    shared.cli(root, "restore", plain)  # its own: no --force
    assert (root / "app.py").read_text() == "APP = 1\n"
    assert shared.cli(root, "restore", foreign, code=22).stdout == ""
    assert ids(shared.cli(other, "list")) == [foreign]  # the other project does not take them
