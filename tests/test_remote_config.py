"""Remote configuration once: ``[remote]`` in rrstore.toml, its precedence, and ``push`` for run/workflow.

Against the real SeaweedFS the suite starts (``s3_remote``, ``s3_env``): the
CLI in a subprocess as a user runs it, with the remote named only by the
settings file. SeaweedFS honours ``StorageClass`` (a HEAD reads it back) and
refuses server-side encryption without a KMS (500 InternalError), so SSE is
checked by the header boto3 sends (botocore's ``before-send`` hook) and by
the refusal surfacing as one error.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SeaweedFS, git, on_every_s3_client, run_cli

from rrstore import RollbackRecoverySystem
from rrstore.backends.s3 import S3Backend, parse_remote
from rrstore.errors import RRStoreError, UsageError
from rrstore.remoteconfig import RemoteSettings, parse_remote_settings, resolve_remote

Cli = Callable[..., subprocess.CompletedProcess[str]]


def remote_table(**keys: str) -> str:
    return "[remote]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())


def make_project(root: Path, toml: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("VALUE = 1\n")
    (root / "rrstore.toml").write_text(toml + "\n[recovery]\nretries = 0\n")
    return root


def remote_ids(url: str, endpoint: str) -> set[str]:
    """The checkpoint ids the remote holds (none when nothing was ever pushed there)."""
    bucket, prefix = parse_remote(url)
    return {key.rsplit("/", 1)[-1] for key in S3Backend(bucket, prefix, endpoint).list("refs/checkpoints")}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def endpoint(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.endpoint


def _env(s3_env: dict[str, str], **more: str) -> dict[str, str]:
    return {**s3_env, "RRSTORE_REMOTE": "", **more}


# the url from the settings file -----------------------------------------------------------------------


def test_push_pull_and_list_use_the_configured_remote_without_a_flag(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    toml = remote_table(url=s3_remote, endpoint_url=endpoint)
    a = make_project(tmp_path / "a", toml)
    env = _env(s3_env)
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "build", cwd=a, env=env)
    assert made.returncode == 0, made.stderr
    cp = RollbackRecoverySystem(root=a).list().checkpoints[0].checkpoint_id

    pushed = run_cli("push", cwd=a, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.split() == [cp] and remote_ids(s3_remote, endpoint) == {cp}

    listed = run_cli("list", "--remote", "--json", "--all-projects", cwd=a, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["checkpoint_id"] for r in json.loads(listed.stdout)] == [cp]
    local = run_cli("list", "--json", cwd=a, env=env)  # no --remote: still the local store
    assert [r["checkpoint_id"] for r in json.loads(local.stdout)] == [cp]

    b = make_project(tmp_path / "b", toml)  # another runner with the same settings, an empty store
    pulled = run_cli("pull", cp, cwd=b, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert [r.checkpoint_id for r in RollbackRecoverySystem(root=b).list(all_projects=True).checkpoints] == [cp]


def test_the_flag_wins_over_the_environment_which_wins_over_the_settings(
        tmp_path: Path, seaweedfs: SeaweedFS, endpoint: str, s3_env: dict[str, str]) -> None:
    configured, from_env, from_flag = (f"s3://{'/'.join(seaweedfs.new_prefix())}" for _ in range(3))
    root = make_project(tmp_path / "p", remote_table(url=configured, endpoint_url=endpoint))
    system = RollbackRecoverySystem(root=root)
    first = system.checkpoint("standard", 1, "one").checkpoint_id

    by_env = run_cli("push", first, cwd=root, env=_env(s3_env, RRSTORE_REMOTE=from_env))
    assert by_env.returncode == 0, by_env.stderr
    assert remote_ids(from_env, endpoint) == {first} and remote_ids(configured, endpoint) == set()
    by_flag = run_cli("push", first, "--remote", from_flag, cwd=root, env=_env(s3_env, RRSTORE_REMOTE=from_env))
    assert by_flag.returncode == 0, by_flag.stderr
    assert remote_ids(from_flag, endpoint) == {first} and remote_ids(configured, endpoint) == set()
    by_file = run_cli("push", first, cwd=root, env=_env(s3_env))
    assert by_file.returncode == 0, by_file.stderr
    assert remote_ids(configured, endpoint) == {first}


def test_endpoint_precedence_and_a_missing_remote_in_the_library() -> None:
    settings = RemoteSettings(url="s3://b/conf", endpoint_url="http://conf:1", source="rrstore.toml [remote]")
    assert resolve_remote(settings, None, None, {}).url == "s3://b/conf"
    assert resolve_remote(settings, None, None, {"RRSTORE_REMOTE": "s3://b/env"}).url == "s3://b/env"
    flag = resolve_remote(settings, "s3://b/flag", "http://flag:2", {"RRSTORE_REMOTE": "s3://b/env"})
    assert (flag.url, flag.endpoint_url, flag.origin) == ("s3://b/flag", "http://flag:2", "--remote")
    assert resolve_remote(settings, "s3://b/flag", None, {}).endpoint_url == "http://conf:1"
    assert resolve_remote(RemoteSettings(), "s3://b/x", None, {}).endpoint_url is None  # the AWS chain's
    with pytest.raises(UsageError, match="no remote given: pass --remote"):
        resolve_remote(RemoteSettings(), None, None, {})


def test_no_remote_anywhere_is_one_usage_line(tmp_path: Path, s3_env: dict[str, str]) -> None:
    root = make_project(tmp_path / "p", WORKFLOW)
    for command in (("push",), ("list", "--remote"), ("workflow", "--lane", "standard", "--remote")):
        done = run_cli(*command, cwd=root, env=_env(s3_env))
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "no remote given" in done.stderr
    assert not (root / ".checkpoints").exists()


# bad settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "says"), [
    ('[remote]\nurl = "s3://b/p"\nbucket = "b"\n', "unknown key 'bucket'"),
    ('[remote]\nurl = "s3://b/p"\naws_secret_access_key = "hunter2"\n', "'aws_secret_access_key' is refused"),
    ('[remote]\nurl = "s3://b/p"\npush = "sometimes"\n', "push must be one of never, on-failure, always"),
    ('[remote]\nurl = "s3://b/p"\nregion = 3\n', "region must be a non-empty string"),
    ('[remote]\nurl = "http://b/p"\n', "url: unsupported remote"),
    ('[remote]\nurl = "s3://b/p"\nsse = "rot13"\n', "sse must be one of AES256, aws:kms"),
    ('[remote]\nurl = "s3://b/p"\nstorage_class = "DEEP_ARCHIVE"\n', "cannot be read back at once"),
    ('[remote]\nendpoint_url = "localhost:8333"\n', "endpoint_url must start with http:// or https://"),
])
@pytest.mark.parametrize("command", [("push",), ("list", "--remote"),
                                     ("run", "--lane", "standard", "--step-number", "1", "--step-name", "t",
                                      "--", "true")])
def test_a_bad_remote_table_is_one_line_naming_the_file_and_changes_nothing(
        tmp_path: Path, table: str, says: str, command: tuple[str, ...]) -> None:
    root = make_project(tmp_path / "p", table)
    done = run_cli(*command, cwd=root, env={"RRSTORE_REMOTE": ""})
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{root / 'rrstore.toml'} [remote]" in line and says in line
    assert "hunter2" not in line
    assert not (root / ".checkpoints").exists()  # the run stopped before its checkpoint


def test_validate_fails_its_configuration_check_on_a_bad_remote_table(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[remote]\npassword = "x"\n')
    check = next(c for c in RollbackRecoverySystem(root=root).validate().checks if c.name == "configuration valid")
    assert not check.ok and "'password' is refused" in check.reason


def test_an_unknown_profile_is_one_error_before_any_request(tmp_path: Path, s3_env: dict[str, str]) -> None:
    root = make_project(tmp_path / "p", remote_table(url="s3://b/p", endpoint_url="http://127.0.0.1:9",
                                                     profile="no-such-profile", region="eu-west-3"))
    backend = RollbackRecoverySystem(root=root).open_remote()
    assert (backend.options.profile, backend.region) == ("no-such-profile", "eu-west-3")
    with pytest.raises(RRStoreError, match="no-such-profile"):
        backend.exists("config.json")


def test_pyproject_remote_table_is_read_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.rrstore.remote]\nurl = "s3://b/p"\npush = "always"\n')
    system = RollbackRecoverySystem(root=root)
    assert (system.remote_settings.url, system.remote_settings.push) == ("s3://b/p", "always")
    (root / "pyproject.toml").write_text('[tool.rrstore.remote]\nsecret_key = "x"\n')
    with pytest.raises(UsageError, match=r"pyproject.toml \[tool.rrstore.remote\]: 'secret_key' is refused"):
        _ = RollbackRecoverySystem(root=root).remote_settings
    with pytest.raises(UsageError, match="sse_kms_key_id needs sse"):
        parse_remote_settings({"sse_kms_key_id": "k"}, "x")


# push = ... for run ------------------------------------------------------------------------------------


def _run(root: Path, env: dict[str, str], command: str, step: int = 1, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--lane", "standard", "--step-number", str(step), "--step-name", f"s{step}", *extra,
                   "--", command, cwd=root, env=env)


def test_on_failure_pushes_a_failed_steps_checkpoint_and_a_passing_step_nothing(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    root = make_project(tmp_path / "p", remote_table(url=s3_remote, endpoint_url=endpoint, push="on-failure"))
    env = _env(s3_env)
    passed = _run(root, env, "true", 1, "--json")
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["push"] is None and remote_ids(s3_remote, endpoint) == set()

    failed = _run(root, env, "exit 3", 2, "--json")
    assert failed.returncode == 3, failed.stderr
    shown = json.loads(failed.stdout)
    assert shown["push"] == {"url": s3_remote, "checkpoints": [shown["checkpoint_id"]], "ok": True,
                             "transferred": [shown["checkpoint_id"]], "error": None}
    assert remote_ids(s3_remote, endpoint) == {shown["checkpoint_id"]}
    remote = RollbackRecoverySystem(root=root).list_remote().checkpoints  # the remote's record is the final one
    assert [(r.success, r.metrics["exit_status"]) for r in remote] == [(False, 3)]


def test_always_pushes_each_step(tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    root = make_project(tmp_path / "p", remote_table(url=s3_remote, endpoint_url=endpoint, push="always"))
    env = _env(s3_env)
    ids = []
    for step, command in ((1, "true"), (2, "true"), (3, "exit 1")):
        done = _run(root, env, command, step, "--json")
        assert done.returncode == (1 if step == 3 else 0), done.stderr
        ids.append(json.loads(done.stdout)["checkpoint_id"])
        assert remote_ids(s3_remote, endpoint) == set(ids)
    never = make_project(tmp_path / "never", remote_table(url=s3_remote, endpoint_url=endpoint))
    assert _run(never, env, "exit 1").returncode == 1
    assert remote_ids(s3_remote, endpoint) == set(ids)  # the default is never


@pytest.mark.parametrize("command", ["true", "exit 5"])
def test_a_push_that_fails_warns_and_never_changes_the_steps_exit_status(
        tmp_path: Path, s3_env: dict[str, str], command: str) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    root = make_project(tmp_path / "p", remote_table(url="s3://nowhere/ci", endpoint_url=dead, push="always"))
    env = _env(s3_env, AWS_MAX_ATTEMPTS="1")
    expected = 0 if command == "true" else 5
    shown = _run(root, env, command, 1, "--json")
    assert shown.returncode == expected, shown.stderr
    result = json.loads(shown.stdout)
    assert result["exit_status"] == expected and result["success"] is (expected == 0)
    assert result["push"]["ok"] is False and "cannot reach the S3 endpoint" in result["push"]["error"]
    warnings = [line for line in shown.stderr.splitlines() if line.startswith("rrstore: warning: push to")]
    assert len(warnings) == 1 and warnings[0].startswith("rrstore: warning: push to s3://nowhere/ci failed: ")
    quiet = _run(root, env, command, 2, "-q")
    assert quiet.returncode == expected
    assert quiet.stderr.count("rrstore: warning: push to s3://nowhere/ci failed: ") == 1  # shown with -q too
    record = RollbackRecoverySystem(root=root).list().checkpoints[0]
    assert record.success is (expected == 0)  # the record says what the step did, not what the push did


# push = "on-failure" for workflow, resumed elsewhere ----------------------------------------------------


STEPS = [("build", "mkdir -p build; cat src/app.py > build/out.txt"), ("tests", "test -f fix.marker"),
         ("package", "cat build/out.txt > dist.txt")]
WORKFLOW = "[workflow.standard]\nsteps = [\n" + "".join(
    f'  {{ name = "{name}", command = {json.dumps(command)} }},\n' for name, command in STEPS) + "]\n\n"


def test_a_failed_workflow_pushes_its_steps_and_a_fresh_clone_resumes_with_bare_remote(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    seed = make_project(tmp_path / "seed", WORKFLOW + remote_table(url=s3_remote, endpoint_url=endpoint,
                                                                  push="on-failure"))
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "project")
    env = _env(s3_env)
    first = run_cli("workflow", "--lane", "standard", "--json", cwd=seed, env=env)
    assert first.returncode == 1, first.stderr
    shown = json.loads(first.stdout)
    ran = [s["checkpoint_id"] for s in shown["steps"]]
    assert [p["checkpoints"] for p in shown["push"]] == [ran] and shown["steps"][1]["push"]["ok"]
    assert remote_ids(s3_remote, endpoint) == set(ran)  # step 2's (failed) and step 1's (good)

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(seed), str(clone))
    (clone / "fix.marker").write_text("fixed\n")
    resumed = run_cli("workflow", "--lane", "standard", "--resume", "--remote", cwd=clone, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 1 step(s): 1 build" in resumed.stderr and "(no recorded time)" not in resumed.stderr
    assert (clone / "dist.txt").read_text() == "VALUE = 1\n"
    assert remote_ids(s3_remote, endpoint) == set(ran)  # nothing failed: nothing more pushed


# storage class and encryption reach the request ----------------------------------------------------------


class Sent:
    """The headers of every PutObject any S3Backend of this process sends (botocore's before-send hook)."""

    def __init__(self) -> None:
        self.puts: list[dict[str, str]] = []

    def hook(self, client: Any) -> None:
        def before_send(request: Any, **_: Any) -> None:
            if request.method == "PUT":
                self.puts.append({k.lower(): v.decode() if isinstance(v, bytes) else v
                                  for k, v in request.headers.items()})
        client.meta.events.register("before-send.s3", before_send)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    seen = Sent()
    on_every_s3_client(monkeypatch, seen.hook)
    return seen


def test_storage_class_reaches_every_upload_and_the_server_keeps_it(
        tmp_path: Path, s3_remote: str, endpoint: str, sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRSTORE_REMOTE", raising=False)
    root = make_project(tmp_path / "p", remote_table(url=s3_remote, endpoint_url=endpoint,
                                                     storage_class="STANDARD_IA"))
    (root / "big.bin").write_bytes(bytes(range(256)) * 40000)  # a pack, uploaded through upload_file
    system = RollbackRecoverySystem(root=root)
    cp = system.checkpoint("standard", 1, "one").checkpoint_id
    assert system.push([cp]).transferred == [cp]
    assert sent.puts and all(p.get("x-amz-storage-class") == "STANDARD_IA" for p in sent.puts)
    assert all("x-amz-server-side-encryption" not in p for p in sent.puts)
    backend = system.open_remote()
    head = backend.client.head_object(Bucket=backend.bucket, Key=f"{backend.base}refs/checkpoints/{cp}")
    assert head["StorageClass"] == "STANDARD_IA"


def test_an_archive_on_s3_is_written_and_read_with_the_remote_settings(
        tmp_path: Path, s3_remote: str, endpoint: str, sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before the fix: export -o s3:// and import/verify s3:// ignored [remote] (endpoint, storage
    class, region, profile): without --endpoint-url they went to AWS, and the upload had no class."""
    monkeypatch.delenv("RRSTORE_REMOTE", raising=False)
    root = make_project(tmp_path / "p", remote_table(url=s3_remote, endpoint_url=endpoint,
                                                     storage_class="STANDARD_IA"))
    system = RollbackRecoverySystem(root=root)
    cp = system.checkpoint("standard", 1, "one").checkpoint_id
    url = f"{s3_remote}-archives/one.rra"
    system.export([cp], url)
    assert sent.puts and all(p.get("x-amz-storage-class") == "STANDARD_IA" for p in sent.puts)
    backend = system.open_remote()
    head = backend.client.head_object(Bucket=backend.bucket, Key=url.split("/", 3)[3])
    assert head["StorageClass"] == "STANDARD_IA"
    assert list(system.verify_archive(url).refs) == [cp]
    other = make_project(tmp_path / "q", remote_table(endpoint_url=endpoint))
    assert RollbackRecoverySystem(root=other).import_archive(url).added == [cp]


@pytest.mark.parametrize(("keys", "headers"), [
    ({"sse": "AES256"}, {"x-amz-server-side-encryption": "AES256"}),
    ({"sse": "aws:kms", "sse_kms_key_id": "alias/ci"},
     {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "alias/ci"}),
])
def test_server_side_encryption_is_sent_and_a_refusal_is_one_error(
        tmp_path: Path, s3_remote: str, endpoint: str, sent: Sent, monkeypatch: pytest.MonkeyPatch,
        keys: dict[str, str], headers: dict[str, str]) -> None:
    monkeypatch.delenv("RRSTORE_REMOTE", raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    root = make_project(tmp_path / "p", remote_table(url=s3_remote, endpoint_url=endpoint, **keys))
    system = RollbackRecoverySystem(root=root)
    cp = system.checkpoint("standard", 1, "one").checkpoint_id
    with pytest.raises(RRStoreError, match=f"cannot write {s3_remote}/"):  # SeaweedFS has no KMS configured
        system.push([cp])
    assert sent.puts and all(p.get(k) == v for p in sent.puts for k, v in headers.items())
    assert remote_ids(s3_remote, endpoint) == set()
