"""Views and states a tester met after issue 9: a project whose remote URL changed, files a checkpoint
left out, symlinks leading out of the tree, and the messages of an empty view.

Real git repositories, real subprocesses of the CLI, and (for push and pull) the real SeaweedFS server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GIT_ENV, WRITER, git, make_repo, run_cli, write, writing

from rrstore import RollbackRecoverySystem
from rrstore.worktree import gitrepo


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


def test_resume_after_changing_the_origin_url_continues_at_the_failed_step(tmp_path: Path) -> None:
    log, flag = tmp_path / "ran.log", tmp_path / "fixed"
    steps = [("build", f"echo build >> {log}"), ("tests", f"echo tests >> {log}; test -e {flag}")]
    toml = "[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n" + "".join(
        f"  {{ name = {json.dumps(name)}, command = {json.dumps(command)} }},\n" for name, command in steps) + "]\n"
    repo = make_repo(tmp_path / "click", "git@github.com:pallets/click.git", {"rrstore.toml": toml})
    rr(repo, "workflow", "--lane", "standard", code=1)
    git(repo, "remote", "set-url", "origin", "git@github.com:myfork/click.git")
    flag.write_text("fixed\n")

    resumed = rr(repo, "workflow", "--lane", "standard", "--resume")
    assert log.read_text().split() == ["build", "tests", "tests"]  # step 1 was not run again
    assert "skipped 1 step(s): 1 build" in resumed.stderr


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


# 2. a file the checkpoint left out, once its writer stopped ------------------------------------------

def test_what_a_checkpoint_left_out_is_no_change_for_status_diff_validate_and_restore(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None, {"README.md": "# demo\n"})
    with writing(repo / "app.log"):
        taken = checkpoint(repo)
    record = json.loads(rr(repo, "show", taken, "--json").stdout)
    assert list(record["left_out"]) == ["app.log"]
    # the writer stopped: app.log is a quiet file now, which the checkpoint does not hold

    restored = rr(repo, "restore", taken)
    assert "already matches" in restored.stderr
    status = rr(repo, "status", "--exit-code")
    assert status.stdout.splitlines()[1] == f"matches the newest checkpoint {taken}; app.log left out of the checkpoint"
    assert json.loads(rr(repo, "status", "--json").stdout)["clean"] is True
    diffed = rr(repo, "diff", taken, "--exit-code")
    assert diffed.stdout == ""
    assert diffed.stderr.strip() == f"rrstore: app.log: left out of the checkpoint {taken}, not compared"
    assert json.loads(rr(repo, "diff", taken, "--json").stdout)["left_out"] == ["app.log"]
    checks = json.loads(rr(repo, "validate", "--checkpoint", taken, "--json", code=None).stdout)["checks"]
    [matches] = [c for c in checks if c["name"] == f"working tree matches {taken}"]
    assert matches["status"] == "pass", matches

    # a real change is still one, and app.log is still said apart
    write(repo, "README.md", "# changed\n")
    status = rr(repo, "status", "--exit-code", code=1)
    assert status.stdout.splitlines()[1] == (f"differs from the newest checkpoint {taken} (0 added, 0 removed, "
                                             "1 modified; app.log left out of the checkpoint)")
    assert rr(repo, "diff", taken).stdout == "M README.md\n"


def test_resume_strict_is_not_refused_for_a_log_the_failed_steps_checkpoint_left_out(tmp_path: Path) -> None:
    """Step 1 starts a log writer; step 2's checkpoint leaves the log out and step 2 fails; the writer
    stops; ``--resume --strict`` sees no change since step 1 ended (the log is what the base left out)."""
    script, pid, flag = tmp_path / "writer.py", tmp_path / "writer.pid", tmp_path / "fixed"
    script.write_text(WRITER)
    py = sys.executable
    start = f"{py} {script} app.log >/dev/null 2>&1 & echo $! > {pid}; sleep 0.2"
    steps = [("build", start), ("tests", f"test -e {flag}")]
    toml = "[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n" + "".join(
        f"  {{ name = {json.dumps(name)}, command = {json.dumps(command)} }},\n" for name, command in steps) + "]\n"
    repo = make_repo(tmp_path / "repo", None, {"README.md": "# demo\n", "rrstore.toml": toml})
    try:
        rr(repo, "workflow", "--lane", "standard", code=1)
    finally:
        os.kill(int(pid.read_text()), 9)
    [failed] = [r for r in json.loads(rr(repo, "list", "--json").stdout) if r["step_number"] == 2]
    assert list(failed["left_out"]) == ["app.log"]
    flag.write_text("the fix lives outside the tree\n")

    resumed = rr(repo, "workflow", "--lane", "standard", "--resume", "--strict")
    assert (f"rrstore: no change since step 1 (build) ended (checkpoint {failed['checkpoint_id']}); "
            "app.log left out of the checkpoint") in resumed.stderr.splitlines()
    assert "changed since" not in resumed.stderr


# 4. messages ------------------------------------------------------------------------------------------


def test_an_empty_view_says_the_store_holds_other_projects(tmp_path: Path) -> None:
    store = tmp_path / "store"
    requests = make_repo(tmp_path / "requests", "https://github.com/psf/requests", {"r.txt": "r\n"})
    checkpoint(requests, 1, "one", store=store)
    checkpoint(requests, 2, "two", store=store)
    click = make_repo(tmp_path / "click", "https://github.com/pallets/click", {"c.txt": "c\n"})
    note = ("rrstore: no checkpoints of this project (git:github.com/pallets/click); 2 of other projects: "
            "add --all-projects")

    listed = rr(click, "list", store=store)
    assert (listed.stdout, listed.stderr.strip()) == ("", note)
    status = rr(click, "status", store=store)
    assert status.stderr.strip() == note and status.stdout.splitlines()[1] == "no checkpoints yet"
    assert rr(click, "list", "--all-projects", store=store).stderr == ""
    assert rr(click, "list", "-q", store=store).stderr == ""
    mine = checkpoint(click, 1, "mine", store=store)
    listed = rr(click, "list", store=store)
    assert (listed.stdout.split()[0], listed.stderr) == (f"{mine}:", "")


def test_list_remote_and_pull_latest_name_the_remotes_other_projects(tmp_path: Path, seaweedfs, s3_remote: str,  # type: ignore[no-untyped-def]
                                                                     s3_env: dict[str, str]) -> None:
    requests = make_repo(tmp_path / "requests", "https://github.com/psf/requests", {"r.txt": "r\n"})
    checkpoint(requests)
    remote = ["--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint]
    assert run_cli("push", *remote, cwd=requests, env=s3_env).returncode == 0
    click = make_repo(tmp_path / "click", "https://github.com/pallets/click", {"c.txt": "c\n"})

    listed = run_cli("list", *remote, cwd=click, env=s3_env)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert listed.stderr.strip() == ("rrstore: no checkpoints of this project (git:github.com/pallets/click); "
                                     "1 of other projects: add --all-projects")
    pulled = run_cli("pull", "latest", *remote, cwd=click, env=s3_env)
    assert pulled.returncode == 12, pulled.stderr
    assert pulled.stderr.strip() == (
        f"rrstore: error: Checkpoint not found on {s3_remote}: latest: no checkpoint of this project "
        "git:github.com/pallets/click; the remote holds 1 of other projects (rrstore list --remote "
        f"{s3_remote} --endpoint-url {seaweedfs.endpoint} --all-projects)")


def test_restoring_a_checkpoint_taken_during_a_merge_warns_of_conflict_markers(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None, {"f.txt": "base\n"})
    git(repo, "checkout", "-q", "-b", "other")
    write(repo, "f.txt", "theirs\n")
    git(repo, "commit", "-q", "-am", "theirs")
    git(repo, "checkout", "-q", "main")
    write(repo, "f.txt", "ours\n")
    git(repo, "commit", "-q", "-am", "ours")
    merging = subprocess.run(["git", "-C", str(repo), "merge", "other"], capture_output=True,
                             env={**os.environ, **GIT_ENV, "HOME": str(repo)})
    assert merging.returncode != 0 and (repo / ".git" / "MERGE_HEAD").exists()
    head = git(repo, "rev-parse", "other").strip()[:7]
    taken = checkpoint(repo)
    git(repo, "merge", "--abort")

    warning = (f"rrstore: warning: checkpoint {taken} was taken during a merge (MERGE_HEAD {head}): "
               "its files may hold conflict markers")
    restored = rr(repo, "restore", taken)
    assert warning in restored.stderr.splitlines()
    assert "<<<<<<<" in (repo / "f.txt").read_text()
    again = rr(repo, "restore", taken, "--dry-run", "--json")
    assert json.loads(again.stdout)["warnings"] == [warning.removeprefix("rrstore: warning: ")]
    plain = checkpoint(repo, 2, "after")  # no operation waiting: no warning
    assert "warning" not in rr(repo, "restore", plain).stderr


# 3. a symlink leading out of the tree ---------------------------------------------------------------


def remote_ids(repo: Path, remote: list[str], env: dict[str, str]) -> set[str]:
    listed = run_cli("list", *remote, "--all-projects", "--json", cwd=repo, env=env)
    assert listed.returncode == 0, listed.stderr
    return {r["checkpoint_id"] for r in json.loads(listed.stdout)}


def refused_line(stderr: str, verb: str, remote: str) -> tuple[set[str], str]:
    """(the ids, the first one's reason) of the one error line a transfer of every checkpoint ends with."""
    [line] = [x for x in stderr.splitlines() if x.startswith("rrstore: error:")]
    lead = "rrstore: error: "
    count, _, rest = line[len(lead):].partition(f" checkpoint(s) refused, not {verb} {remote} (every other "
                                                "checkpoint was): ")
    ids, _, first = rest.partition("; the first: ")
    assert len(ids.split(", ")) == int(count), line
    return set(ids.split(", ")), first


def test_a_link_leading_out_warns_once_and_push_and_pull_of_all_send_every_other_checkpoint(
        tmp_path: Path, seaweedfs, s3_remote: str, s3_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path / "repo", None, {"README.md": "# demo\n", "src/app.py": "v1\n"})
    clean = checkpoint(repo)
    (repo / "hostlink").symlink_to("/etc/hostname")
    (repo / "src" / "inside").symlink_to("../README.md")  # stays in the tree: no warning
    linked = rr(repo, "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "linked")
    assert [x for x in linked.stderr.splitlines() if "warning" in x] == [
        "rrstore: warning: hostlink is a symlink leading out of the tree (/etc/hostname): push and export "
        "will refuse checkpoints that hold it"]
    with_link = linked.stdout.strip()
    write(repo, "src/app.py", "v2\n")
    restored = rr(repo, "restore", clean, "--json")  # its undo checkpoint holds the link too
    undo = json.loads(restored.stdout)["undo_checkpoint_id"]
    assert not (repo / "hostlink").is_symlink()
    write(repo, "src/app.py", "v3\n")
    later = checkpoint(repo, 3, "later")
    unsafe = {with_link, undo}

    remote = ["--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint]
    pushed = run_cli("push", *remote, cwd=repo, env=s3_env)
    assert pushed.returncode == 17, pushed.stderr
    assert set(pushed.stdout.split()) == {clean, later}  # sent before the refusal
    ids, first = refused_line(pushed.stderr, "pushed to", s3_remote)
    assert ids == unsafe and "path hostlink: symlink to '/etc/hostname' leads out of the tree" in first
    assert remote_ids(repo, remote, s3_env) == {clean, later}
    again = run_cli("push", *remote, "--json", cwd=repo, env=s3_env)  # nothing left to send but the refusal
    assert again.returncode == 17
    doc = json.loads(again.stdout)
    assert (set(doc["already_present"]), {r["checkpoint_id"] for r in doc["refused"]}) == ({clean, later}, unsafe)
    explicit = run_cli("push", with_link, *remote, cwd=repo, env=s3_env)
    assert explicit.returncode == 17 and len(explicit.stderr.splitlines()) == 1, explicit.stderr
    assert f"push to {s3_remote} refused, nothing was sent" in explicit.stderr
    assert remote_ids(repo, remote, s3_env) == {clean, later}

    # a remote another tool filled holds them all: pull of all takes every other one
    from rrstore.backends.s3 import S3Backend

    planted = S3Backend.from_url(s3_remote, endpoint_url=seaweedfs.endpoint)
    store = repo / ".checkpoints"
    for path in sorted(store.rglob("*")):
        key = path.relative_to(store).as_posix()
        if path.is_file() and key.split("/")[0] in ("objects", "packs", "refs"):
            planted.write(key, path.read_bytes(), durable=True)
    assert remote_ids(repo, remote, s3_env) == {clean, later, *unsafe}
    fresh = make_repo(tmp_path / "fresh", None, {"other.txt": "x\n"})
    pulled = run_cli("pull", *remote, cwd=fresh, env=s3_env)
    assert pulled.returncode == 17, pulled.stderr
    assert set(pulled.stdout.split()) == {clean, later}
    ids, first = refused_line(pulled.stderr, "pulled from", s3_remote)
    assert ids == unsafe and "leads out of the tree" in first
    local = json.loads(rr(fresh, "list", "--all-projects", "--json").stdout)
    assert {r["checkpoint_id"] for r in local} == {clean, later}
    one = run_cli("pull", with_link, *remote, cwd=fresh, env=s3_env)
    assert one.returncode == 17 and f"pull from {s3_remote} refused, nothing was changed" in one.stderr
    rr(fresh, "restore", later, "--force")
    assert (fresh / "src" / "app.py").read_text() == "v3\n" and not (fresh / "hostlink").is_symlink()


def test_push_of_all_sends_whole_the_checkpoints_sharing_trees_with_refused_ones(
        tmp_path: Path, seaweedfs, s3_remote: str, s3_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """A refused checkpoint's trees are half-walked when it fails (a second checkpoint of the same state must
    still be refused, not skipped as already checked), and the safe one sharing trees with them still
    gets every object it reaches, and restores byte-identically from the remote elsewhere."""
    root = tmp_path / "plain"
    for rel in ("a/deep/er/f.txt", "a/deep/g.txt", "a/h.txt", "b/i.txt"):
        write(root, rel, f"{rel}\n" * 50)
    (root / "b" / "out").symlink_to("/etc/hostname")
    system = RollbackRecoverySystem(root=root)
    first = system.checkpoint("standard", 1, "with link").checkpoint_id
    same = system.checkpoint("standard", 1, "the same state again").checkpoint_id  # its trees half-walked
    (root / "b" / "out").unlink()
    safe = system.checkpoint("standard", 2, "safe").checkpoint_id
    (root / "b" / "out").symlink_to("/etc/hostname")
    write(root, "a/h.txt", "changed\n")
    third = system.checkpoint("standard", 3, "link again").checkpoint_id
    # push of all walks them oldest first (the order the store got them; ids no longer sort by time)
    assert [r.checkpoint_id for r in system.list().checkpoints] == [third, safe, same, first]

    result = system.push([], s3_remote, seaweedfs.endpoint)
    assert (result.transferred, set(result.refused)) == ([safe], {first, same, third})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = RollbackRecoverySystem(root=elsewhere)
    assert other.pull([], s3_remote, seaweedfs.endpoint).transferred == [safe]
    other.restore(safe, force=True)
    for rel in ("a/deep/er/f.txt", "a/deep/g.txt", "a/h.txt", "b/i.txt"):
        assert (elsewhere / rel).read_text() == f"{rel}\n" * 50
    assert not (elsewhere / "b" / "out").is_symlink()
