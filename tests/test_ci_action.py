"""The GitHub Action (``action.yml``) run the way GitHub runs a composite action, without GitHub.

The test reads ``action.yml``, renders its ``${{ inputs.* }}`` and
``${{ github.action_path }}`` expressions itself (any other expression
fails the test: it would reach GitHub unrendered here), and runs each
``run:`` step in order with ``bash --noprofile --norc -eo pipefail`` (GitHub's
``shell: bash``) in a real git clone, with ``GITHUB_STEP_SUMMARY``,
``GITHUB_OUTPUT`` and ``GITHUB_ENV`` as files and the remote on the real
SeaweedFS the suite starts. A second clone plays the fresh runner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import GIT_ENV, SeaweedFS, git, make_repo, run_cli, tree_manifest, write

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
CI_VARIABLES = ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "CI_PIPELINE_ID", "CI_JOB_ID", "RRSTORE_REMOTE",
                "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
FAILING = ("echo partial > half-done.txt; echo 'tests/test_app.py::test_add FAILED'; "
           "echo '=== 1 failed in 0.1s ==='; exit 3")


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real CI's variables must not leak into the runs these tests fake."""
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@dataclass
class ActionRun:
    exit_status: int
    summary: str
    outputs: dict[str, str]
    stderr: str


def render(text: str, inputs: dict[str, str], action_path: Path) -> str:
    """``text`` with the expressions GitHub would substitute; an expression the test does not know fails."""
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == "github.action_path":
            return str(action_path)
        if expr.startswith("inputs.") and expr[len("inputs."):] in inputs:
            return inputs[expr[len("inputs."):]]
        raise AssertionError(f"action.yml uses an expression this test cannot render: {expr}")
    return EXPRESSION.sub(value, text)


def key_values(path: Path) -> dict[str, str]:
    """A ``$GITHUB_OUTPUT``/``$GITHUB_ENV`` file: ``name=value`` lines and ``name<<EOF`` blocks."""
    out: dict[str, str] = {}
    lines = iter(path.read_text().splitlines()) if path.exists() else iter(())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, end = line.split("<<", 1)
            out[name] = "\n".join(iter(lambda: next(lines), end))
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


def run_action(workdir: Path, scratch: Path, env: dict[str, str], *, action_path: Path | str = ROOT,
               **given: str) -> ActionRun:
    """Run the action's steps in order as GitHub does, stopping at the first that fails."""
    action_path = Path(action_path)
    spec = yaml.safe_load(ACTION.read_text())
    assert spec["runs"]["using"] == "composite"
    declared = spec["inputs"]
    names = {name.replace("_", "-"): value for name, value in given.items()}
    assert set(names) <= set(declared), f"inputs action.yml does not declare: {set(names) - set(declared)}"
    inputs = {name: str(names.get(name, meta.get("default", ""))) for name, meta in declared.items()}
    scratch.mkdir(parents=True, exist_ok=True)
    files = {name: scratch / name.lower() for name in ("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV")}
    base = {**os.environ, **GIT_ENV, **env, **{name: str(path) for name, path in files.items()}}
    status, stderr = 0, ""
    for number, step in enumerate(spec["runs"]["steps"]):
        assert "uses" not in step and "if" not in step, "the test runs only unconditional run: steps"
        assert step["shell"] == "bash"
        script = scratch / f"step{number}.sh"
        script.write_text(render(step["run"], inputs, action_path))
        step_env = {**base, **key_values(files["GITHUB_ENV"]),
                    **{k: render(str(v), inputs, action_path) for k, v in step.get("env", {}).items()}}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workdir,
                              env=step_env, capture_output=True, text=True, timeout=300)
        status, stderr = done.returncode, stderr + done.stderr
        if status != 0:
            break
    summary = files["GITHUB_STEP_SUMMARY"]
    return ActionRun(status, summary.read_text() if summary.exists() else "", key_values(files["GITHUB_OUTPUT"]),
                     stderr)


def remote_ids(root: Path, remote: str, endpoint: str, env: dict[str, str]) -> list[str]:
    listed = run_cli("list", "--json", "--all-projects", "--remote", remote, "--endpoint-url", endpoint,
                     cwd=root, env=env)
    if listed.returncode == 10 and '"RemoteNotFound"' in listed.stderr:
        return []  # nothing was ever pushed there
    assert listed.returncode == 0, listed.stderr
    return [c["checkpoint_id"] for c in json.loads(listed.stdout)]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """The project every runner clones: a git repository with a tracked source file."""
    return make_repo(tmp_path / "origin", None, {"src/app.py": "print('hi')\n", ".gitignore": "*.log\n"})


def clone(origin: Path, root: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(root)], check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})
    return root


def built(root: Path) -> None:
    """What the job's earlier steps left: an untracked build output (binary), a changed tracked file."""
    write(root, "build/app.bin", os.urandom(70_000) + b"\x00\xff" * 1000)
    write(root, "src/app.py", "print('hi, built')\n")


def test_passing_step_checkpoints_and_pushes_nothing_on_failure_only(
        origin: Path, tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str], s3_remote: str) -> None:
    runner = clone(origin, tmp_path / "runner")
    built(runner)
    ran = run_action(runner, tmp_path / "gh", s3_env, python=sys.executable, install="none", lane="standard",
                     step_number="1", step_name="build", run="echo building; test -f build/app.bin",
                     remote=s3_remote, endpoint_url=seaweedfs.endpoint, push="on-failure", retries="0")
    assert ran.exit_status == 0, ran.stderr
    cid = ran.outputs["checkpoint-id"]
    assert ran.outputs["exit-code"] == "0" and ran.outputs["pushed"] == "false"
    local = json.loads(run_cli("list", "--json", cwd=runner).stdout)
    assert [(c["checkpoint_id"], c["success"]) for c in local] == [(cid, True)]
    assert "step 1 (build) passed" in ran.summary and cid in ran.summary
    assert "not pushed (push: on-failure)" in ran.summary
    assert remote_ids(runner, s3_remote, seaweedfs.endpoint, s3_env) == []


def test_failing_step_exits_with_its_status_writes_the_plan_and_pushes_a_restorable_checkpoint(
        origin: Path, tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str], s3_remote: str) -> None:
    runner = clone(origin, tmp_path / "runner")
    built(runner)
    before = tree_manifest(runner)
    ran = run_action(runner, tmp_path / "gh", s3_env, python=sys.executable, install="none", lane="standard",
                     step_number="2", step_name="tests", run=FAILING, remote=s3_remote,
                     endpoint_url=seaweedfs.endpoint, retries="0")
    assert ran.exit_status == 3, ran.stderr
    assert "1 failed in 0.1s" in ran.stderr  # the step's own output reached the job log
    cid = ran.outputs["checkpoint-id"]
    expected = json.loads(run_cli("classify", "--json", "--exit-code", "3", "--log", "-", cwd=runner,
                                  stdin=subprocess.run(["bash", "-c", FAILING], cwd=tmp_path,
                                                       capture_output=True, text=True).stdout).stdout)["failure_type"]
    assert expected == "test_failure" and ran.outputs["failure-type"] == expected
    summary = ran.summary
    assert "## rrstore: step 2 (tests) failed with exit status 3" in summary
    assert f"| Failure type | `{expected}` |" in summary and f"| Checkpoint | `{cid}` |" in summary
    assert "### Recovery plan:" in summary and "| Step | Action | Command | Time |" in summary
    assert f"rrstore pull {cid} --remote {s3_remote} --endpoint-url {seaweedfs.endpoint}" in summary
    assert f"rrstore restore --checkpoint-id {cid}" in summary
    assert ran.outputs["pushed"] == "true"
    assert remote_ids(runner, s3_remote, seaweedfs.endpoint, s3_env) == [cid]

    fresh = clone(origin, tmp_path / "fresh")  # a new runner: a clean clone, no store
    for args in (["pull", cid, "--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint],
                 ["restore", "--checkpoint-id", cid]):
        done = run_cli(*args, cwd=fresh, env=s3_env)
        assert done.returncode == 0, done.stderr
    assert tree_manifest(fresh) == before  # the tree as it was before the step, half-done.txt not in it


def test_checkpoint_only_and_push_always(origin: Path, tmp_path: Path, seaweedfs: SeaweedFS,
                                         s3_env: dict[str, str], s3_remote: str) -> None:
    """No command: the action only checkpoints; push always sends it, the remote from RRSTORE_REMOTE."""
    runner = clone(origin, tmp_path / "runner")
    built(runner)
    ran = run_action(runner, tmp_path / "gh", {**s3_env, "RRSTORE_REMOTE": s3_remote}, python=sys.executable,
                     install="none", step_number="1", step_name="build", endpoint_url=seaweedfs.endpoint,
                     push="always")
    assert ran.exit_status == 0, ran.stderr
    cid = ran.outputs["checkpoint-id"]
    assert "step 1 (build) checkpointed" in ran.summary and cid in ran.summary
    assert remote_ids(runner, s3_remote, seaweedfs.endpoint, s3_env) == [cid]


def test_push_failure_is_reported_and_never_the_steps_status(origin: Path, tmp_path: Path,
                                                             s3_env: dict[str, str]) -> None:
    runner = clone(origin, tmp_path / "runner")
    ran = run_action(runner, tmp_path / "gh", s3_env, python=sys.executable, install="none", step_number="1",
                     step_name="lint", run="exit 5", remote="s3://no-such-bucket-rrstore/x",
                     endpoint_url="http://127.0.0.1:9", retries="0")
    assert ran.exit_status == 5
    assert ran.outputs["pushed"] == "false" and "::warning::rrstore: push to" in ran.stderr
    assert "push to `s3://no-such-bucket-rrstore/x` failed" in ran.summary


def test_bad_input_is_one_clear_error(origin: Path, tmp_path: Path) -> None:
    runner = clone(origin, tmp_path / "runner")
    ran = run_action(runner, tmp_path / "gh", {}, python=sys.executable, install="none", step_name="x",
                     run="true")
    assert ran.exit_status == 2 and ran.stderr.splitlines()[-1].startswith("rrstore-ci: error: give --step-number N")
    assert "Traceback" not in ran.stderr and not (runner / ".checkpoints").exists()
    ran = run_action(runner, tmp_path / "gh2", {}, python=sys.executable, install="none", step_number="1",
                     step_name="x", push="sometimes")
    assert ran.exit_status == 2 and ran.stderr.splitlines()[-1].startswith("rrstore-ci: error: argument --push")
    assert not (runner / ".checkpoints").exists()


TOML = """[recovery]
retries = 0

[workflow.standard]
steps = [
  { name = "build", command = "echo build >> \\"$RAN_LOG\\"; mkdir -p build; head -c 9000 /dev/urandom > build/o.bin" },
  { name = "tests", command = "echo tests >> \\"$RAN_LOG\\"; test -f \\"$FLAKY_OK\\"" },
  { name = "package", command = "echo package >> \\"$RAN_LOG\\"; cat build/o.bin src/app.py > dist.bin" },
]
"""


def test_rerun_of_a_failed_job_resumes_on_a_new_runner(origin: Path, tmp_path: Path, seaweedfs: SeaweedFS,
                                                       s3_env: dict[str, str], s3_remote: str) -> None:
    """Attempt 1 fails at step 2 (a flaky check); 'Re-run failed jobs' (attempt 2, a fresh runner) skips step 1."""
    write(origin, "rrstore.toml", TOML)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "workflow")
    log, flaky = tmp_path / "ran.log", tmp_path / "flaky-ok"
    common = {**s3_env, "RAN_LOG": str(log), "FLAKY_OK": str(flaky), "GITHUB_RUN_ID": "4242"}
    inputs = {"python": sys.executable, "install": "none", "workflow": "true", "remote": s3_remote,
              "endpoint_url": seaweedfs.endpoint}
    runner_a = clone(origin, tmp_path / "runner-a")
    first = run_action(runner_a, tmp_path / "gh-a",
                       {**common, "GITHUB_RUN_ATTEMPT": "1"}, **inputs)
    assert first.exit_status == 1, first.stderr  # `test -f` of a missing file
    assert log.read_text().split() == ["build", "tests"]
    assert f"rrstore workflow --lane standard --resume --remote {s3_remote}" in first.summary
    assert first.outputs["pushed"] == "true" and first.outputs["checkpoint-id"] in first.summary
    assert "| 2 | tests | failed (exit 1) |" in first.summary

    flaky.write_text("")  # the transient cause is gone
    log.unlink()
    runner_b = clone(origin, tmp_path / "runner-b")
    second = run_action(runner_b, tmp_path / "gh-b", {**common, "GITHUB_RUN_ATTEMPT": "2"}, **inputs)
    assert second.exit_status == 0, second.stderr
    assert log.read_text().split() == ["tests", "package"]  # step 1 was not run again
    assert "skipped (passed before)" in second.summary and "time saved" in second.summary
    built_a = (runner_a / "build/o.bin").read_bytes()  # step 1's output reached runner B from the remote
    assert (runner_b / "build/o.bin").read_bytes() == built_a
    assert (runner_b / "dist.bin").read_bytes() == built_a + b"print('hi')\n"


def test_rerun_after_a_passing_attempt_pushed_always_runs_nothing(
        origin: Path, tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str], s3_remote: str) -> None:
    write(origin, "rrstore.toml", TOML)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "workflow")
    log, flaky = tmp_path / "ran.log", tmp_path / "flaky-ok"
    flaky.write_text("")
    common = {**s3_env, "RAN_LOG": str(log), "FLAKY_OK": str(flaky), "GITHUB_RUN_ID": "4343"}
    inputs = {"python": sys.executable, "install": "none", "workflow": "true", "remote": s3_remote,
              "endpoint_url": seaweedfs.endpoint, "push": "always"}
    first = run_action(clone(origin, tmp_path / "runner-a"), tmp_path / "gh-a", {**common, "GITHUB_RUN_ATTEMPT": "1"},
                       **inputs)
    assert first.exit_status == 0 and first.outputs["pushed"] == "true", first.stderr
    assert len(remote_ids(tmp_path / "runner-a", s3_remote, seaweedfs.endpoint, s3_env)) == 3
    log.unlink()
    second = run_action(clone(origin, tmp_path / "runner-b"), tmp_path / "gh-b",
                        {**common, "GITHUB_RUN_ATTEMPT": "2"}, **inputs)
    assert second.exit_status == 0, second.stderr
    assert not log.exists()  # no step ran again
    assert "Nothing to resume: this run already passed all 3 steps." in second.summary


def probe_wheel(folder: Path) -> Path:
    """A minimal real wheel (module ``rrstore_ci_probe``): pip installs it with no build and no network."""
    name, dist = "rrstore_ci_probe", "rrstore_ci_probe-1.0.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{dist}/METADATA": "Metadata-Version: 2.1\nName: rrstore-ci-probe\nVersion: 1.0\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    folder.mkdir()
    wheel = folder / "rrstore_ci_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def test_install_step_pip_installs_into_the_given_python(tmp_path: Path, origin: Path) -> None:
    """install: the words go to that Python's pip as given (a local wheel, --no-index: no network)."""
    venv = tmp_path / "venv"  # sees the packages of the Python under this test's venv, rrstore's deps among them
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})) / "rrstore-src.pth") \
        .write_text(str(ROOT) + "\n")  # rrstore itself, from this worktree, for the version check
    wheel = probe_wheel(tmp_path / "wheels")
    runner = clone(origin, tmp_path / "runner")
    ran = run_action(runner, tmp_path / "gh", {}, python=str(python),
                     install=f"--no-index --no-deps {wheel}", step_number="1", step_name="build")
    assert ran.exit_status == 0, ran.stderr
    where = subprocess.run([python, "-c", "import rrstore_ci_probe as p; print(p.VALUE, p.__file__)"],
                           capture_output=True, text=True)
    assert where.stdout.startswith(f"42 {venv}/"), where.stderr
    assert "step 1 (build) checkpointed" in ran.summary


def test_install_step_reports_a_failed_install(tmp_path: Path, origin: Path) -> None:
    """pip failing stops the action there (GitHub stops a composite at its first failing step)."""
    runner = clone(origin, tmp_path / "runner")
    ran = run_action(runner, tmp_path / "gh", {}, python=sys.executable,
                     install=f"--no-index --no-deps {tmp_path / 'missing.whl'}", step_number="1", step_name="x")
    assert ran.exit_status != 0 and ran.summary == "" and not (runner / ".checkpoints").exists()


GITLAB = ROOT / "docs" / "examples" / "gitlab-ci.yml"
OIDC = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")  # the example's role: not on the test server


def run_gitlab_job(name: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The example job's ``script`` lines in one bash, with its variables (global, ``extends``, its own)
    under ``env``; ``before_script`` clones and installs rrstore from the network, so this test's stands in."""
    spec = yaml.safe_load(GITLAB.read_text())
    job = spec[name]
    variables = {**spec.get("variables", {}), **spec.get(job.get("extends", ""), {}).get("variables", {}),
                 **job.get("variables", {})}
    variables = {k: str(v) for k, v in variables.items() if k not in OIDC}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # its `python` is this test's
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", "\n".join(job["script"])], cwd=workdir,
                          env={**os.environ, **GIT_ENV, **variables, **env, "RRSTORE_SRC": str(ROOT), "PATH": path},
                          capture_output=True, text=True, timeout=300)
    return done


def test_gitlab_example_retried_job_resumes_its_pipelines_run(origin: Path, tmp_path: Path, seaweedfs: SeaweedFS,
                                                               s3_env: dict[str, str], s3_remote: str) -> None:
    """Job 71 of pipeline 9001 fails at step 2; its retry (job 72) on a fresh clone skips step 1."""
    write(origin, "rrstore.toml", TOML)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "workflow")
    log, flaky, summary = tmp_path / "ran.log", tmp_path / "flaky-ok", tmp_path / "summary.md"
    env = {**s3_env, "RAN_LOG": str(log), "FLAKY_OK": str(flaky), "CI_PIPELINE_ID": "9001",
           "RRSTORE_REMOTE": s3_remote, "RRSTORE_CI_ENDPOINT_URL": seaweedfs.endpoint,
           "RRSTORE_CI_SUMMARY": str(summary)}
    runner_a = clone(origin, tmp_path / "runner-a")
    first = run_gitlab_job("tests", runner_a, {**env, "CI_JOB_ID": "71"})
    assert first.returncode == 1, first.stderr
    assert f"rrstore workflow --lane standard --resume --remote {s3_remote}" in summary.read_text()
    listed = run_cli("list", "--json", "--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint, cwd=runner_a,
                     env=s3_env)
    runs = {(c["step_number"], c["run"]["id"], c["run"]["attempt"]) for c in json.loads(listed.stdout)}
    assert runs == {(1, "gitlab-9001", "71"), (2, "gitlab-9001", "71")}

    flaky.write_text("")
    log.unlink()
    runner_b = clone(origin, tmp_path / "runner-b")
    second = run_gitlab_job("tests", runner_b, {**env, "CI_JOB_ID": "72"})
    assert second.returncode == 0, second.stderr
    assert log.read_text().split() == ["tests", "package"]
    assert (runner_b / "build/o.bin").read_bytes() == (runner_a / "build/o.bin").read_bytes()
    assert "skipped (passed before)" in summary.read_text()


def test_gitlab_example_single_steps(origin: Path, tmp_path: Path, s3_env: dict[str, str]) -> None:
    """The example's per-step job: a checkpoint, then a command; each leaves its lines in the summary."""
    runner, summary = clone(origin, tmp_path / "runner"), tmp_path / "summary.md"
    done = run_gitlab_job("lint", runner, {**s3_env, "RRSTORE_CI_SUMMARY": str(summary), "CI_PIPELINE_ID": "5"})
    assert done.returncode == 0, done.stderr
    local = json.loads(run_cli("list", "--json", cwd=runner).stdout)
    assert sorted((c["lane"], c["step_number"], c["step_name"]) for c in local) == [("docs", 1, "prepared"),
                                                                                     ("docs", 2, "lint")]
    assert "step 1 (prepared) checkpointed" in summary.read_text() and "step 2 (lint) passed" in summary.read_text()
