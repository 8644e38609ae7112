"""Runs, not just checkpoints: a workflow run resumed on a fresh runner from the shared remote.

Real git clones of one bare ``origin`` act as CI runners, against the real
SeaweedFS the suite starts (``s3_remote``). The workflow's step 1 builds an
untracked file and rewrites a tracked one, step 2 passes only once the fix
(``fix.marker``) is committed, step 3 packages step 1's output. Each step
appends its name to a log outside the tree (``RAN_LOG``): the log, not
rrstore's report, proves which steps ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
import zstandard
from conftest import git, run_cli, tree_manifest

from rrstore import RollbackRecoverySystem
from rrstore.errors import CorruptObject, RunNotFound
from rrstore.record import ROW_FIELDS, CheckpointRecord
from rrstore.recordindex import FORMAT, INDEX_KEY, MAGIC, RecordIndex
from rrstore.recovery.runs import run_identity
from rrstore.store.objects import canonical_json

Cli = Callable[..., subprocess.CompletedProcess[str]]
CI_VARIABLES = ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "CI_PIPELINE_ID", "CI_JOB_ID")

STEPS = [("build", "mkdir -p build; sleep 0.3; cat src/app.py > build/out.txt; echo built >> VERSION"),
         ("tests", "test -f fix.marker"),
         ("package", "cat build/out.txt VERSION > dist.txt")]
LOG = 'echo {} >> "$RAN_LOG"; '
TOML = "[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n" + "".join(
    f'  {{ name = "{name}", command = {json.dumps(LOG.format(name) + command)} }},\n'
    for name, command in STEPS) + "]\n"


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the CI variables themselves: a real CI's must not group their runs."""
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Runner:
    """One clone of ``origin`` acting as a CI runner, with its own evidence log."""

    def __init__(self, root: Path, remote: str, endpoint: str, env: dict[str, str]) -> None:
        self.root, self.remote, self.endpoint = root, remote, endpoint
        self.log = root.parent / f"{root.name}.log"
        self.env = {**env, "RAN_LOG": str(self.log)}

    def ran(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def rrstore(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.root, env={**self.env, **env})

    def workflow(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.rrstore("workflow", "--lane", "standard", *args, **env)

    def resume(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.workflow("--resume", "--remote", self.remote, "--endpoint-url", self.endpoint, *args, **env)

    def push(self) -> None:
        pushed = self.rrstore("push", "--remote", self.remote, "--endpoint-url", self.endpoint)
        assert pushed.returncode == 0, pushed.stderr

    def records(self) -> list:  # type: ignore[type-arg]
        return RollbackRecoverySystem(root=self.root).list("standard").checkpoints


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "src").mkdir()
    (seed / "src" / "app.py").write_text("VALUE = 1\n")
    (seed / "VERSION").write_text("1.0\n")
    (seed / "rrstore.toml").write_text(TOML)
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "project with a workflow")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


@pytest.fixture
def clone(origin: Path, tmp_path: Path, s3_remote: str, seaweedfs, s3_env: dict[str, str]) -> Callable[[str], Runner]:  # type: ignore[no-untyped-def]
    def make(name: str) -> Runner:
        git(tmp_path, "clone", "-q", str(origin), str(tmp_path / name))
        return Runner(tmp_path / name, s3_remote, seaweedfs.endpoint, s3_env)
    return make


def fail_and_push(runner: Runner, **env: str) -> str:
    """Run the workflow on ``runner`` (step 2 fails), push its checkpoints; the run's id."""
    before = {r.checkpoint_id for r in runner.records()} if (runner.root / ".checkpoints").exists() else set()
    first = runner.workflow(**env)
    assert first.returncode == 1, first.stderr
    assert "workflow standard stopped at step 2" in first.stderr
    runner.push()
    runs = {r.run["id"] for r in runner.records() if r.checkpoint_id not in before}
    assert len(runs) == 1
    return runs.pop()


def commit_fix(runner: Runner) -> None:
    (runner.root / "fix.marker").write_text("fixed\n")
    git(runner.root, "add", "fix.marker")
    git(runner.root, "commit", "-q", "-m", "the fix")
    git(runner.root, "push", "-q", "origin", "HEAD")


def test_a_fresh_clone_resumes_the_failed_run_from_the_remote_and_ends_as_a_clean_run(
        clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    run_id = fail_and_push(a)
    assert a.ran() == ["build", "tests"]
    step1 = next(r for r in a.records() if r.step_number == 1)
    recorded = float(step1.metrics["step_wall_time_s"])
    assert recorded >= 0.3
    assert {r.run["ci_run"] for r in a.records()} == {""} and run_id.startswith("rrstore-")
    commit_fix(a)
    shutil.rmtree(a.root / ".checkpoints")  # the runner is gone

    b = clone("b")
    assert not (b.root / ".checkpoints").exists()
    resumed = b.resume()

    assert resumed.returncode == 0, resumed.stderr
    assert b.ran() == ["tests", "package"]  # step 1 skipped, 2 and 3 ran
    err = resumed.stderr
    assert f"run {run_id}: continues the newest run on branch main" in err
    assert "skipped 1 step(s): 1 build" in err
    assert f"time saved: {recorded:.2f}s of an estimated full run" in err
    assert "restored 2 path(s) the earlier steps made" in err  # build/out.txt, and VERSION step 1 rewrote
    # B's steps continue A's run; only the checkpoint the resume reads was pulled
    ids = [r.checkpoint_id for r in b.records()]
    step2_of_a = next(r for r in b.records() if r.step_number == 2 and not r.success)
    assert step2_of_a.run["id"] == run_id
    assert {r.run["id"] for r in b.records() if r.kind == "step"} == {run_id}
    assert not any(r.step_number == 1 for r in b.records() if r.kind == "step")
    assert len(ids) == len(set(ids))

    c = clone("c")  # a clean run of the fixed project, from scratch
    clean = c.workflow()
    assert clean.returncode == 0, clean.stderr
    assert c.ran() == ["build", "tests", "package"]
    assert tree_manifest(b.root) == tree_manifest(c.root)
    assert (b.root / "dist.txt").read_text() == "VALUE = 1\n1.0\nbuilt\n"


def test_run_picks_an_older_run_and_the_python_api_does_the_same(clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    older = fail_and_push(a)
    shutil.rmtree(a.root / ".checkpoints")
    newer = fail_and_push(a)
    assert older != newer
    commit_fix(a)

    b = clone("b")
    resumed = b.resume("--run", older, "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["continued_run"]["id"] == older and doc["continued_run"]["chosen_by"] == "--run"
    assert doc["run"]["id"] == older
    assert [s["step_number"] for s in doc["skipped"]] == [1] and doc["time_saved_s"] >= 0.3
    assert len(doc["pulled"]) == 1 and doc["pulled"][0] in doc["continued_run"]["checkpoints"]
    assert sorted(doc["filled_in"]) == ["VERSION", "build/out.txt"]

    d = clone("d")  # the Python API: the newest run by default
    result = RollbackRecoverySystem(root=d.root).workflow(
        "standard", resume=True, remote=b.remote, endpoint_url=b.endpoint)
    assert result.success and result.continued is not None
    assert result.continued.run_id == newer and result.run["id"] == newer
    assert [s.number for s in result.skipped] == [1] and result.time_saved_s >= 0.3


def test_the_current_branch_run_is_chosen_over_a_newer_run_on_another_branch(
        clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    on_main = fail_and_push(a)
    shutil.rmtree(a.root / ".checkpoints")
    git(a.root, "checkout", "-q", "-b", "feature")
    on_feature = fail_and_push(a)  # pushed last: the remote's newest run
    git(a.root, "checkout", "-q", "main")
    commit_fix(a)

    b = clone("b")
    resumed = b.resume("--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["continued_run"]["id"] == on_main != on_feature
    assert doc["continued_run"]["git_branch"] == "main"


def test_a_github_re_run_continues_its_first_attempt(clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    first = fail_and_push(a, GITHUB_RUN_ID="4242", GITHUB_RUN_ATTEMPT="1")
    assert first == "github-4242"
    assert {(r.run["ci_run"], r.run["attempt"]) for r in a.records()} == {("github-4242", "1")}
    other = clone("other")
    assert fail_and_push(other, GITHUB_RUN_ID="4300", GITHUB_RUN_ATTEMPT="1") == "github-4300"  # newer
    commit_fix(a)

    b = clone("b")
    resumed = b.resume("--json", GITHUB_RUN_ID="4242", GITHUB_RUN_ATTEMPT="2")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["continued_run"]["id"] == "github-4242"
    assert doc["continued_run"]["chosen_by"] == "this CI run (github-4242)"
    assert doc["run"] == {"id": "github-4242", "ci_run": "github-4242", "attempt": "2"}
    mine = [r for r in b.records() if r.kind == "step" and r.success]
    assert {(r.step_number, r.run["attempt"]) for r in mine} == {(2, "2"), (3, "2")}


def test_a_remote_without_a_run_of_the_lane_is_one_line_and_changes_nothing(
        clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    made = a.rrstore("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "manual")
    assert made.returncode == 0, made.stderr
    a.push()  # a checkpoint, but no workflow run

    b = clone("b")
    before = tree_manifest(b.root)
    resumed = b.resume()
    assert resumed.returncode == 12, resumed.stderr
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in resumed.stderr
    assert lines[0].startswith("rrstore: error: no run of the standard workflow on branch main on s3://")
    assert not (b.root / ".checkpoints").exists()
    assert b.ran() == [] and tree_manifest(b.root) == before
    with pytest.raises(RunNotFound):
        RollbackRecoverySystem(root=b.root).workflow("standard", remote=b.remote, endpoint_url=b.endpoint,
                                                     run="rrstore-nope")


# records and record indexes written before the run field ------------------------------------------


def test_a_record_without_the_run_field_decodes_and_a_crafted_run_is_refused(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    (project / "f.txt").write_text("x\n")
    record = system.checkpoint("standard", 1, "s1").record
    old = record.to_dict()
    del old["run"]  # what an rrstore before the field wrote
    assert CheckpointRecord.from_dict(record.record_oid, old).run == {}
    with pytest.raises(CorruptObject, match="field run"):
        CheckpointRecord.from_dict(record.record_oid, record.to_dict() | {"run": {"id": 7}})
    with pytest.raises(CorruptObject):
        CheckpointRecord.from_dict(record.record_oid, record.to_dict() | {"run": ["id"]})


def test_a_record_index_of_the_older_field_list_is_a_cache_miss_never_an_error(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    for step in range(3):
        (project / "f.txt").write_text(f"{step}\n")
        system.checkpoint("standard", step, f"s{step}")
    expected = cli("list", "--json", cwd=project)
    assert expected.returncode == 0, expected.stderr
    index_path = project / ".checkpoints" / INDEX_KEY
    assert index_path.exists()
    index = RecordIndex.decode(index_path.read_bytes())
    at = ROW_FIELDS.index("run")
    # the same index as an rrstore without the field wrote it: its field list and rows lack ``run``
    older = {"format": FORMAT, "fields": [f for f in ROW_FIELDS if f != "run"],
             "refs": {i: [e.token, e.oid, e.added_ns] for i, e in index.refs.items()},
             "records": {oid: row[:at] + row[at + 1:] for oid, row in index.records.items()}}
    body = MAGIC + zstandard.ZstdCompressor().compress(canonical_json(older))
    index_path.write_bytes(body + blake3.blake3(body).digest())

    again = cli("list", "--json", cwd=project)
    assert again.returncode == 0 and again.stderr == "" and again.stdout == expected.stdout
    rewritten = RecordIndex.decode(index_path.read_bytes())  # rebuilt in the current layout
    assert rewritten.records and all(len(row) == len(ROW_FIELDS) for row in rewritten.records.values())


def test_run_identity_from_gitlab_github_or_rrstore_and_a_resume_keeps_the_run() -> None:
    gitlab = run_identity({"CI_PIPELINE_ID": "9", "CI_JOB_ID": "77"})
    assert gitlab == {"id": "gitlab-9", "ci_run": "gitlab-9", "attempt": "77"}
    github = run_identity({"GITHUB_RUN_ID": "5", "GITHUB_RUN_ATTEMPT": "3", "CI_PIPELINE_ID": "9"})
    assert github == {"id": "github-5", "ci_run": "github-5", "attempt": "3"}
    assert run_identity({"GITHUB_RUN_ID": "6"}, continuing="github-5")["id"] == "github-5"
    own = {run_identity({})["id"] for _ in range(3)}
    assert len(own) == 3 and all(i.startswith("rrstore-") and len(i) == 24 for i in own)


def test_run_without_remote_picks_a_run_of_this_store(clone: Callable[[str], Runner]) -> None:
    a = clone("a")
    older = fail_and_push(a)
    newer = fail_and_push(a)
    (a.root / "fix.marker").write_text("fixed\n")
    unknown = a.workflow("--run", "rrstore-0000")
    assert unknown.returncode == 12 and "no run 'rrstore-0000' of the standard workflow" in unknown.stderr
    # the command the message points to shows the runs, each step checkpoint's in its RUN column
    listing = unknown.stderr.rpartition("see its checkpoints and their runs: ")[2].rstrip(")\n").split()
    assert listing[:3] == ["rrstore", "list", "-v"]
    table = a.rrstore(*listing[1:]).stdout.splitlines()
    assert table[0].split()[-2] == "RUN"  # the step names here are one word
    assert {line.split()[-2] for line in table[1:]} == {older, newer}
    resumed = a.workflow("--run", older, "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["continued_run"]["id"] == older != newer and doc["pulled"] == [] and doc["filled_in"] == []
    assert [s["step_number"] for s in doc["skipped"]] == [1]


# a record's git_commit reaches git only as a commit id; what the fix deleted stays deleted ---------


@pytest.mark.parametrize("crafted", ["--output=notes.txt", "--output=.git/config", "HEAD~1", "ABCDEF" * 7, "a" * 39])
def test_a_record_whose_git_commit_is_not_a_commit_id_is_corrupt(git_project: Path, crafted: str) -> None:
    system = RollbackRecoverySystem(root=git_project)
    record = system.checkpoint("standard", 1, "s1").record
    assert record.git_commit is not None and len(record.git_commit) == 40
    for commit in (None, record.git_commit, "b" * 64):  # older records have None; SHA-256 repositories
        assert CheckpointRecord.from_dict(record.record_oid, record.to_dict() | {"git_commit": commit}).git_commit \
            == commit
    with pytest.raises(CorruptObject, match="git_commit"):
        CheckpointRecord.from_dict(record.record_oid, record.to_dict() | {"git_commit": crafted})
    row = record.row()
    row[ROW_FIELDS.index("git_commit")] = crafted
    with pytest.raises(CorruptObject, match="git_commit"):
        CheckpointRecord.from_row(record.record_oid, row)


@pytest.mark.parametrize("target", ["notes.txt", ".git/config"])
def test_fill_in_never_hands_git_an_option_for_a_commit(git_project: Path, target: str) -> None:
    """A crafted record that got past decoding (in memory): git writes no file, the fix stays."""
    import dataclasses

    from rrstore.recovery.run import RunHooks
    from rrstore.recovery.runs import fill_in
    from rrstore.worktree.gitrepo import differ_from_commit, tracked_at

    root = git_project
    (root / "a.txt").write_text("committed\n")
    (root / "notes.txt").write_text("committed notes\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "c2")
    system = RollbackRecoverySystem(root=root)
    (root / "a.txt").write_text("what a step wrote\n")
    record = system.checkpoint("standard", 1, "s1").record
    (root / "a.txt").write_text("the user's fix\n")
    (root / "notes.txt").write_text("uncommitted notes\n")
    before = tree_manifest(root, skip=(".checkpoints",))
    crafted = dataclasses.replace(record, git_commit=f"--output={target}")
    assert differ_from_commit(root, crafted.git_commit or "", ["a.txt"]) is None
    assert tracked_at(root, crafted.git_commit or "") is None
    assert fill_in(system, crafted, RunHooks()) == []
    assert tree_manifest(root, skip=(".checkpoints",)) == before
    assert subprocess.run(["git", "status"], cwd=root, capture_output=True).returncode == 0


def _deleting_fix(root: Path) -> tuple[RollbackRecoverySystem, CheckpointRecord]:
    """A run's failed step 2 (step 1 made build.out), then a fix that commits ``git rm test_broken.py``,
    then build.out gone as on a fresh clone of the fix."""
    (root / "test_broken.py").write_text("assert False\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "c2")
    (root / "build.out").write_text("made by step 1\n")
    system = RollbackRecoverySystem(root=root)
    record = system.checkpoint("standard", 2, "test", error_message="tests failed").record
    git(root, "rm", "-q", "test_broken.py")
    git(root, "commit", "-q", "-m", "fix: drop the broken test")
    (root / "build.out").unlink()
    return system, record


def test_fill_in_leaves_deleted_what_the_fix_commit_deleted(git_project: Path) -> None:
    from rrstore.recovery.run import RunHooks
    from rrstore.recovery.runs import fill_in

    system, record = _deleting_fix(git_project)
    assert fill_in(system, record, RunHooks()) == ["build.out"]
    assert (git_project / "build.out").read_text() == "made by step 1\n"
    assert not (git_project / "test_broken.py").exists()


def test_fill_in_without_the_runs_commit_restores_no_untracked_path_and_says_why(git_project: Path) -> None:
    """A shallow clone lacks the run's commit: a step's output cannot be told from a deleted file."""
    import dataclasses

    from rrstore.recovery.run import RunHooks
    from rrstore.recovery.runs import fill_in

    system, record = _deleting_fix(git_project)
    said: list[str] = []
    unknown = dataclasses.replace(record, git_commit="c" * 40)  # a commit this clone does not have
    assert fill_in(system, unknown, RunHooks(notify=said.append)) == []
    assert not (git_project / "build.out").exists() and not (git_project / "test_broken.py").exists()
    assert len(said) == 1 and f"this clone lacks the run's commit {'c' * 40}" in said[0]
    assert "build.out" in said[0] and "git fetch --unshallow" in said[0]


def test_outputs_in_an_ignored_directory_are_carried_only_with_scope_include(
        clone: Callable[[str], Runner]) -> None:
    """build/ in .gitignore: no checkpoint holds step 1's build/out.txt, so a fresh clone's resume
    fails at step 3 and says why; with scope_include = ["build"] it is carried and the run ends."""
    a = clone("a")
    (a.root / ".gitignore").write_text("build/\n")
    git(a.root, "add", ".gitignore")
    git(a.root, "commit", "-q", "-m", "ignore build/")
    fail_and_push(a)
    commit_fix(a)
    b = clone("b")
    lost = b.resume()
    assert lost.returncode != 0 and b.ran() == ["tests", "package"]
    assert "build/out.txt: No such file" in lost.stderr
    assert "scope_include setting" in lost.stderr and "not restored on this runner" in lost.stderr

    git(a.root, "checkout", "--", "VERSION")  # as step 1 found it
    toml = a.root / "rrstore.toml"
    toml.write_text('scope_include = ["build"]\n' + toml.read_text())
    git(a.root, "commit", "-q", "-am", "carry build/")
    git(a.root, "push", "-q", "origin", "HEAD")
    git(a.root, "rm", "-q", "fix.marker")  # step 2 fails again, in a new run that holds build/
    git(a.root, "commit", "-q", "-m", "unfix")
    fail_and_push(a)
    commit_fix(a)
    c = clone("c")
    carried = c.resume()
    assert carried.returncode == 0, carried.stderr
    assert c.ran() == ["tests", "package"]
    assert (c.root / "dist.txt").read_text() == "VALUE = 1\n1.0\nbuilt\n"
