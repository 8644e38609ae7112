"""Issue 9, point 8: the smaller rough edges, each through the real CLI (or the Python API where the item is
about the API)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SeaweedFS, git, write

from rrstore import RollbackRecoverySystem
from rrstore.errors import UsageError
from rrstore.system import FailedResult

Cli = Callable[..., subprocess.CompletedProcess[str]]
LANE = ("--lane", "standard")


def take(cli: Cli, cwd: Path, step: int = 1, *extra: str) -> str:
    done = cli("checkpoint", *LANE, "--step-number", str(step), "--step-name", f"s{step}", *extra, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def listed(cli: Cli, cwd: Path) -> list[str]:
    done = cli("list", "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [r["checkpoint_id"] for r in json.loads(done.stdout)]


# 3. an error message records a failed step -----------------------------------------------------------


def test_an_error_message_records_a_failed_step_and_success_with_an_error_is_refused(
        project: Path, cli: Cli) -> None:
    write(project, "f.txt", "one\n")
    done = cli("checkpoint", *LANE, "--step-number", "1", "--step-name", "tests", "--error", "boom", "--json",
               cwd=project)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["success"], record["error_message"]) == (False, "boom")
    assert json.loads(cli("show", record["checkpoint_id"], "--json", cwd=project).stdout)["success"] is False

    refused = cli("checkpoint", *LANE, "--step-number", "2", "--step-name", "x", "--status", "success",
                  "--error", "boom", cwd=project)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == ["rrstore: error: a step recorded as successful cannot carry an error "
                                           "message (an error message alone records a failed step)"]
    assert listed(cli, project) == [record["checkpoint_id"]]  # nothing was recorded

    plain = json.loads(cli("checkpoint", *LANE, "--step-number", "2", "--step-name", "ok", "--json",
                           cwd=project).stdout)
    failed = json.loads(cli("checkpoint", *LANE, "--step-number", "3", "--step-name", "bad", "--status", "failed",
                            "--json", cwd=project).stdout)
    assert (plain["success"], plain["error_message"]) == (True, None)
    assert (failed["success"], failed["error_message"]) == (False, None)

    system = RollbackRecoverySystem(root=project)
    assert system.checkpoint("standard", 4, "api", error_message="boom").record.success is False
    with pytest.raises(UsageError):
        system.checkpoint("standard", 5, "api", success=True, error_message="boom")


# 5. cleanup never reports rrstore's own locks ---------------------------------------------------------


def test_cleanup_after_a_restore_reports_no_lock_but_still_a_stale_leftover(git_project: Path, cli: Cli) -> None:
    write(git_project, "app.py", "v1\n")
    first = take(cli, git_project, 1)
    write(git_project, "app.py", "v2\n")
    take(cli, git_project, 2)
    assert cli("restore", first, cwd=git_project).returncode == 0
    lock = git_project / ".checkpoints" / "locks" / "worktree.lock"
    assert lock.read_text().startswith("pid ")  # the restore's process is gone; the file still names it

    quiet = cli("cleanup", "--json", cwd=git_project)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["removed"] == []
    assert lock.exists()

    leftover = write(git_project, ".checkpoints/tmp/interrupted-write.tmp", b"t" * 100)
    stale_git = write(git_project, ".git/index.lock", b"")
    hour_ago = time.time() - 3600
    for path in (leftover, stale_git):
        os.utime(path, (hour_ago, hour_ago))
    done = cli("cleanup", cwd=git_project)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["removed git-lock .git/index.lock (1 file(s), 0 B)",
                                                "removed tmp .checkpoints/tmp/interrupted-write.tmp (1 file(s), 100 B)"]
    assert not leftover.exists() and not stale_git.exists() and lock.exists()
    assert (git_project / "app.py").read_text() == "v1\n"


# 8. run() returns errors as results -------------------------------------------------------------------


def test_run_returns_a_failed_result_for_an_unknown_command_and_bad_keywords(project: Path) -> None:
    write(project, "f.txt")
    system = RollbackRecoverySystem(root=project)
    unknown = system.run("bogus")
    assert isinstance(unknown, FailedResult) and unknown.success is False
    assert unknown.message.startswith("unknown command 'bogus': choose one of checkpoint, restore, list")
    assert isinstance(unknown.error, UsageError)

    missing = system.run("checkpoint", lane="standard")
    assert missing.success is False and "step_number" in missing.message and "it takes: lane" in missing.message
    extra = system.run("list", colour="red")
    assert extra.success is False and "'colour'" in extra.message
    assert not (project / ".checkpoints").exists()  # nothing ran

    made = system.run("checkpoint", lane="standard", step_number=1, step_name="Start")
    assert made.success is True and system.run("show", checkpoint_id=made.checkpoint_id).checkpoint_id == \
        made.checkpoint_id


# 9. the gc summary says what each number is -----------------------------------------------------------


def test_the_gc_summary_puts_each_number_next_to_what_it_counts(project: Path, cli: Cli) -> None:
    ids = []
    for step in (1, 2, 3):
        write(project, "data.bin", os.urandom(200_000))
        ids.append(take(cli, project, step))
    args = ("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1")
    dry = cli(*args, "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert re.fullmatch(r"gc would remove 2 checkpoint\(s\) and \d+ object\(s\), would keep 1 checkpoint\(s\); "
                        r"would free \d+ bytes \(\d+\.\d KiB\)\n", dry.stderr), dry.stderr

    done = cli(*args, cwd=project)
    assert done.returncode == 0, done.stderr
    match = re.fullmatch(r"gc removed 2 checkpoint\(s\) and \d+ object\(s\), kept 1 checkpoint\(s\); "
                         r"freed (\d+) bytes \((\d+\.\d) KiB\)\n", done.stderr)
    assert match, done.stderr
    assert int(match[1]) > 2 * 190_000 and f"{int(match[1]) / 1024:.1f}" == match[2]
    assert listed(cli, project) == [ids[2]]


# 4. "did you mean" comes newest first, prefix matches before similar ids -------------------------------


def test_suggestions_come_newest_first_and_prefix_matches_before_similar_ids(project: Path, cli: Cli) -> None:
    ids = []
    for step in (1, 2, 3):  # added in this order: step 3 is the newest
        write(project, "f.txt", f"{step}\n")
        ids.append(take(cli, project, step))
    write(project, "f.txt", "docs\n")
    docs = cli("checkpoint", "--lane", "docs", "--step-number", "1", "--step-name", "d", cwd=project).stdout.strip()
    first, second, third = ids

    by_prefix = cli("show", "standard-step", cwd=project)
    assert by_prefix.returncode == 12 and by_prefix.stdout == ""
    assert by_prefix.stderr == (f"rrstore: error: Checkpoint not found: standard-step; did you mean "
                                f"{third}, {second}, {first}?\n")  # the docs one is newer, but no prefix match

    mixed = cli("--json", "show", first[:-2], cwd=project)
    assert mixed.returncode == 12
    assert json.loads(mixed.stderr)["message"] == (f"Checkpoint not found: {first[:-2]}; did you mean "
                                                   f"{first}, {third}, {second}?")
    assert docs not in mixed.stderr


# 6. --endpoint-url without a remote is a usage error --------------------------------------------------


@pytest.mark.parametrize(("args", "needs"), [
    (("list",), "--remote s3://BUCKET/PREFIX"),
    (("export", "latest", "--output", "out.rrs"), "an --output s3://BUCKET/KEY"),
    (("check", "--repair", "--from", "backup.rrs"), "--remote or --from s3://BUCKET/PREFIX"),
    (("check",), "--remote or --from s3://BUCKET/PREFIX"),
])
def test_endpoint_url_without_a_remote_is_a_usage_error(project: Path, cli: Cli, args: tuple[str, ...],
                                                        needs: str) -> None:
    write(project, "f.txt")
    cp = take(cli, project)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    done = cli(*args, "--endpoint-url", "http://127.0.0.1:9", cwd=project)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"rrstore: error: --endpoint-url needs {needs}\n"
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    as_json = cli("--json", *args, "--endpoint-url", "http://127.0.0.1:9", cwd=project)
    assert json.loads(as_json.stderr) == {"error": "UsageError", "exit_code": 2,
                                          "message": f"--endpoint-url needs {needs}"}
    assert listed(cli, project) == [cp]  # and without it, list still lists the local store


# 7. pull of an id the remote lacks points at the remote ----------------------------------------------


def test_pull_of_an_unknown_id_suggests_the_remote_listing_and_remote_ids(
        tmp_path: Path, s3_remote: str, s3_env: dict[str, str], seaweedfs: SeaweedFS, cli: Cli) -> None:
    endpoint = seaweedfs.endpoint
    source, target = tmp_path / "source", tmp_path / "target"
    target.mkdir()
    remote = ("--remote", s3_remote, "--endpoint-url", endpoint)
    pushed = []
    for step in (1, 2):  # pushed one after the other: step 2 is the remote's newest
        write(source, "f.txt", f"{step}\n")
        pushed.append(take(cli, source, step))
        assert cli("push", pushed[-1], *remote, cwd=source, env=s3_env).returncode == 0
    listing = f"rrstore list --remote {s3_remote} --endpoint-url {endpoint} --all-projects"

    nope = cli("pull", "nope", *remote, cwd=target, env=s3_env)
    assert (nope.returncode, nope.stdout) == (12, "")
    assert nope.stderr == (f"rrstore: error: Checkpoint not found on {s3_remote}: nope; "
                           f"run '{listing}' to see its checkpoints\n")
    near = cli("pull", "standard-step", *remote, cwd=target, env=s3_env)
    assert near.returncode == 12
    assert near.stderr == (f"rrstore: error: Checkpoint not found on {s3_remote}: standard-step; did you mean "
                           f"{pushed[1]}, {pushed[0]}? Run '{listing}' to see its checkpoints\n")
    assert RollbackRecoverySystem(root=target).list().checkpoints == []  # nothing was pulled

    shown = cli("list", *remote, "--all-projects", cwd=target, env=s3_env)  # the suggestion works as written
    assert shown.returncode == 0
    project = RollbackRecoverySystem(root=source).project
    assert shown.stdout.splitlines() == [f"{pushed[1]}: s2 (standard) {project}",
                                         f"{pushed[0]}: s1 (standard) {project}"]


# 2. list with a damaged record still lists the rest, and exits 13 -------------------------------------


def test_list_with_a_damaged_record_prints_the_readable_ones_and_exits_13(project: Path, cli: Cli) -> None:
    ids = []
    for step in (1, 2, 3):
        write(project, "f.txt", f"{step}\n")
        ids.append(take(cli, project, step))
    (project / ".checkpoints" / "refs" / "checkpoints" / ids[1]).write_bytes(b"garbage\n")

    text = cli("list", cwd=project)
    assert text.returncode == 13
    assert text.stdout.splitlines() == [f"{ids[2]}: s3 (standard)", f"{ids[0]}: s1 (standard)"]
    warning, error = text.stderr.splitlines()
    assert warning.startswith(f"rrstore: warning: cannot read checkpoint {ids[1]}: corrupt object")
    assert error == (f"rrstore: error: store damaged: cannot read 1 checkpoint(s) ({ids[1]}); "
                     "the readable ones are listed; run 'rrstore check --repair' "
                     "(it moves a checkpoint that cannot be read to quarantine/)")

    as_json = cli("list", "--json", cwd=project)
    assert as_json.returncode == 13
    assert [r["checkpoint_id"] for r in json.loads(as_json.stdout)] == [ids[2], ids[0]]  # still an array
    [line] = as_json.stderr.splitlines()
    doc = json.loads(line)
    assert (doc["error"], doc["exit_code"], list(doc["damaged"])) == ("CheckpointsUnreadable", 13, [ids[1]])
    assert "ref does not hold an object id" in doc["damaged"][ids[1]]

    assert cli("list", "-v", cwd=project).returncode == 13
    listing = RollbackRecoverySystem(root=project).list()
    assert listing.success is False and list(listing.damaged) == [ids[1]]
    assert [r.checkpoint_id for r in listing.checkpoints] == [ids[2], ids[0]]
    (project / ".checkpoints" / "refs" / "checkpoints" / ids[1]).unlink()
    assert cli("list", cwd=project).returncode == 0


# 1. outside git, a subdirectory finds the project's store above it ------------------------------------


def test_a_plain_subdirectory_uses_the_store_above_it(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "plain"
    deeper = root / "src" / "pkg"
    write(root, "README.md", "top\n")
    write(deeper, "mod.py", "x = 1\n")
    first = take(cli, root, 1)
    write(deeper, "mod.py", "x = 2\n")
    second = take(cli, deeper, 2)  # from the subdirectory
    assert not (deeper / ".checkpoints").exists() and not (root / "src" / ".checkpoints").exists()
    assert listed(cli, deeper) == [second, first]
    record = json.loads(cli("show", second, "--json", cwd=deeper).stdout)
    assert record["root"] == str(root) and record["metrics"]["files_scanned"] == 2  # the whole project
    assert cli("restore", first, cwd=deeper).returncode == 0
    assert (deeper / "mod.py").read_text() == "x = 1\n"
    assert cli("status", "--exit-code", cwd=root / "src").returncode == 1  # compares the whole tree with 'latest'

    empty = tmp_path / "no-store"  # a .checkpoints without config.json is no store: cwd stays the root
    (empty / ".checkpoints").mkdir(parents=True)
    write(empty, "sub/f.txt")
    take(cli, empty / "sub")
    assert (empty / "sub" / ".checkpoints" / "config.json").is_file()


def test_a_configured_store_name_or_an_rrstore_toml_marks_the_root(tmp_path: Path, cli: Cli) -> None:
    named = tmp_path / "named"
    write(named, "pyproject.toml", '[project]\nname = "x"\n\n[tool.rrstore]\nstore = "ckpt"\n')
    write(named, "lib/a.py", "a\n")
    first = take(cli, named)
    second = take(cli, named / "lib", 2)
    assert (named / "ckpt" / "config.json").is_file() and not (named / "lib" / "ckpt").exists()
    assert listed(cli, named / "lib") == [second, first]

    configured = tmp_path / "configured"  # no store yet: the rrstore.toml alone says where the root is
    write(configured, "rrstore.toml", 'store = "snapshots"\n')
    write(configured, "docs/index.md", "# docs\n")
    take(cli, configured / "docs")
    assert (configured / "snapshots" / "config.json").is_file() and not (configured / "docs" / "snapshots").exists()


def test_in_git_the_work_tree_stays_the_root_whatever_is_above_it(tmp_path: Path, cli: Cli) -> None:
    outer = tmp_path / "outer"
    write(outer, "other.txt", "not in the repository\n")
    take(cli, outer)  # outer/.checkpoints is a real store
    repo = outer / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "sub/f.txt", "tracked\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    made = take(cli, repo / "sub")
    assert (repo / ".checkpoints" / "config.json").is_file() and listed(cli, repo / "sub") == [made]
    assert json.loads(cli("show", made, "--json", cwd=repo).stdout)["root"] == str(repo)
