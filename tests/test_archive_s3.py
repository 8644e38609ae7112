"""Archives on S3 both ways: ``export -o s3://``, then ``verify`` and ``import`` of ``s3://BUCKET/KEY``.

Against the real SeaweedFS server of conftest (``seaweedfs``, ``s3_remote``,
``s3_env``), through the installed CLI in a subprocess. The archive is
streamed from the server: a damaged one is refused exactly as a local one
is, every error line names the URL as it was typed, and verifying a large
archive writes no local copy and holds none in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GIT_ENV, SeaweedFS, one_error_line, run_cli

from rrstore import RollbackRecoverySystem
from rrstore.archive.files import verify_archive
from rrstore.archive.stream import FrameWalk
from rrstore.backends.s3 import parse_remote
from rrstore.errors import ArchiveError

Manifest = dict[str, tuple[object, ...]]
MiB = 1 << 20


def fill(root: Path, big: int = 5 * MiB, seed: str = "") -> None:
    """Sources, an executable, a symlink, an empty directory and one random file (chunked when over 4 MiB)."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (root / "src" / f"mod{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * (i + 1))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir(exist_ok=True)
    (root / "link").symlink_to("src/mod0.py")
    (root / "big.bin").write_bytes(random.Random(seed).randbytes(big))


def take(root: Path) -> str:
    return RollbackRecoverySystem(root=root).checkpoint("standard", 1, "build").checkpoint_id


def store_files(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture
def exported(tmp_path: Path, s3_remote: str, s3_env: dict[str, str], seaweedfs: SeaweedFS,
             manifest: Callable[..., Manifest]) -> tuple[str, str, Manifest]:
    """(archive URL, checkpoint id, the tree's manifest): one checkpoint exported to S3 with the CLI."""
    source = tmp_path / "source"
    source.mkdir()
    fill(source)
    checkpoint_id = take(source)
    url = f"{s3_remote}/archives/build.rra"
    out = run_cli("export", checkpoint_id, "-o", url, "--endpoint-url", seaweedfs.endpoint, cwd=source, env=s3_env)
    assert out.returncode == 0, out.stderr
    return url, checkpoint_id, manifest(source)


def _put(seaweedfs: SeaweedFS, url: str, data: bytes) -> None:
    bucket, key = parse_remote(url)
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=data)


def _get(seaweedfs: SeaweedFS, url: str) -> bytes:
    bucket, key = parse_remote(url)
    return bytes(seaweedfs.client().get_object(Bucket=bucket, Key=key)["Body"].read())


# round trip ------------------------------------------------------------------------------------------


def test_verify_and_import_from_s3_round_trip_byte_identically(
        tmp_path: Path, exported: tuple[str, str, Manifest], s3_env: dict[str, str], seaweedfs: SeaweedFS,
        manifest: Callable[..., Manifest]) -> None:
    url, checkpoint_id, expected = exported
    endpoint = ("--endpoint-url", seaweedfs.endpoint)
    target = tmp_path / "target"
    target.mkdir()

    verified = run_cli("verify", url, *endpoint, cwd=target, env=s3_env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == f"{checkpoint_id}\n"
    assert verified.stderr.startswith(f"archive {url} is valid: 1 checkpoint(s), ")
    assert not (target / ".checkpoints").exists()  # verify needs no store and makes none
    as_json = json.loads(run_cli("--json", "verify", url, *endpoint, cwd=target, env=s3_env).stdout)
    assert (as_json["path"], as_json["valid"], as_json["checkpoints"]) == (url, True, [checkpoint_id])
    assert as_json["archive_bytes"] == len(_get(seaweedfs, url))

    imported = run_cli("import", url, *endpoint, cwd=target, env=s3_env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"{checkpoint_id}\n"
    assert imported.stderr.startswith(f"imported 1 checkpoint(s) from {url} (0 already present): ")
    assert not list((target / ".checkpoints" / "tmp").iterdir())  # nothing staged, nothing left
    again = json.loads(run_cli("--json", "import", url, *endpoint, cwd=target, env=s3_env).stdout)
    assert (again["path"], again["added"], again["unchanged"]) == (url, [], [checkpoint_id])

    restored = run_cli("restore", "--force", "--checkpoint-id", checkpoint_id, cwd=target)
    assert restored.returncode == 0, restored.stderr
    assert manifest(target) == expected


def test_the_python_api_takes_s3_urls_too(tmp_path: Path, exported: tuple[str, str, Manifest],
                                          seaweedfs: SeaweedFS, manifest: Callable[..., Manifest]) -> None:
    url, checkpoint_id, expected = exported
    target = tmp_path / "target"
    target.mkdir()
    system = RollbackRecoverySystem(root=target)
    assert list(system.verify_archive(url, endpoint_url=seaweedfs.endpoint).refs) == [checkpoint_id]
    assert system.import_archive(url, endpoint_url=seaweedfs.endpoint).added == [checkpoint_id]
    system.restore(checkpoint_id, force=True)
    assert manifest(target) == expected


# damaged archives -------------------------------------------------------------------------------------


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a flipped byte": (lambda data: data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x40])
                       + data[len(data) // 2 + 1:], ""),
    "cut in half": (lambda data: data[:len(data) // 2], "truncated"),
    "the last two bytes cut": (lambda data: data[:-2], "truncated"),
    "data after the end": (lambda data: data + data[:100], ""),
    "not an archive": (lambda data: b"PK\x03\x04 a zip file, not zstd at all", "damaged compressed data"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_archive_on_s3_is_refused_and_nothing_is_imported(
        tmp_path: Path, exported: tuple[str, str, Manifest], s3_env: dict[str, str], seaweedfs: SeaweedFS,
        damage: str) -> None:
    url, _checkpoint_id, _ = exported
    spoil, phrase = DAMAGE[damage]
    bad = url.replace("build.rra", "bad.rra")
    _put(seaweedfs, bad, spoil(_get(seaweedfs, url)))
    fresh, used = tmp_path / "fresh", tmp_path / "used"
    fresh.mkdir()
    used.mkdir()
    (used / "a.txt").write_text("mine\n")
    own = take(used)
    before = store_files(used / ".checkpoints")
    for command in ("verify", "import"):
        for cwd in (fresh, used):
            line = one_error_line(run_cli(command, bad, "--endpoint-url", seaweedfs.endpoint, cwd=cwd,
                                          env=s3_env), 16)
            assert line.startswith(f"rrstore: error: bad archive {bad}: ") and phrase in line, line
            assert line.endswith("; nothing was imported") == (command == "import"), line
    assert not (fresh / ".checkpoints").exists()
    assert store_files(used / ".checkpoints") == before
    assert [r.checkpoint_id for r in RollbackRecoverySystem(root=used).list().checkpoints] == [own]


# errors name the URL as given ------------------------------------------------------------------------


def test_a_missing_key_or_bucket_and_bad_urls_are_one_line_naming_the_url(
        tmp_path: Path, exported: tuple[str, str, Manifest], s3_env: dict[str, str], seaweedfs: SeaweedFS) -> None:
    url, _, _ = exported
    endpoint = ("--endpoint-url", seaweedfs.endpoint)
    missing = url.replace("build.rra", "nope.rra")
    no_bucket = "s3://no-such-bucket-rrstore-archives/ci-checkpoints/a.rra"  # never created
    bucket = parse_remote(url)[0]
    for command in ("verify", "import"):
        line = one_error_line(run_cli(command, missing, *endpoint, cwd=tmp_path, env=s3_env), 2)
        assert line == f"rrstore: error: no such archive: {missing}"
        line = one_error_line(run_cli(command, no_bucket, *endpoint, cwd=tmp_path, env=s3_env), 1)
        assert line.startswith(f"rrstore: error: cannot read archive {no_bucket}: bucket "), line
        for bad in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}//a.rra", f"{url}/", "s3://"):
            line = one_error_line(run_cli(command, bad, *endpoint, cwd=tmp_path, env=s3_env), 2)
            assert line == f"rrstore: error: invalid archive URL {bad}: give s3://BUCKET/KEY"
        dead = one_error_line(run_cli(command, url, "--endpoint-url", "http://127.0.0.1:9", cwd=tmp_path,
                                      env={**s3_env, "AWS_MAX_ATTEMPTS": "1"}), 1)
        assert dead.startswith("rrstore: error: cannot reach the S3 endpoint http://127.0.0.1:9 to read "
                               f"{url}: "), dead
        line = one_error_line(run_cli(command, "local.rra", *endpoint, cwd=tmp_path, env=s3_env), 2)
        assert line == "rrstore: error: --endpoint-url needs an ARCHIVE s3://BUCKET/KEY"
    assert not (tmp_path / ".checkpoints").exists()


def test_credentials_missing_or_refused_name_the_url(
        tmp_path: Path, exported: tuple[str, str, Manifest], s3_env: dict[str, str], seaweedfs: SeaweedFS,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, _ = exported
    endpoint = ("--endpoint-url", seaweedfs.endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    anonymous = {k: v for k, v in s3_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    wrong = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    for command in ("verify", "import"):
        line = one_error_line(run_cli(command, url, *endpoint, cwd=tmp_path, env=anonymous), 1)
        assert line.startswith(f"rrstore: error: cannot read archive {url}: no usable AWS credentials"), line
        line = one_error_line(run_cli(command, url, *endpoint, cwd=tmp_path, env=wrong), 14)
        assert line == f"rrstore: error: permission denied: cannot read {url}"
    assert not (tmp_path / ".checkpoints").exists()


# streamed, never copied ------------------------------------------------------------------------------


def _verify_measured(url: str, endpoint: str, cwd: Path, env: dict[str, str],
                     max_file: int) -> tuple[subprocess.CompletedProcess[str], int]:
    """``rrstore verify URL`` unable to write any file over ``max_file`` bytes; (its result, its peak RSS)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))

    out, err = cwd.parent / "verify.out", cwd.parent / "verify.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "rrstore", "verify", url, "--endpoint-url", endpoint],
                                cwd=cwd, env={**os.environ, **GIT_ENV, **env}, stdout=stdout, stderr=stderr,
                                preexec_fn=limit)
        _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the session's
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return done, usage.ru_maxrss * 1024


def test_verify_of_a_large_archive_on_s3_keeps_no_local_copy(
        tmp_path: Path, s3_remote: str, s3_env: dict[str, str], seaweedfs: SeaweedFS) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    urls = {}
    for root, size in ((big, 40 * MiB), (small, 64 << 10)):
        root.mkdir()
        fill(root, size, seed=root.name)
        urls[root.name] = f"{s3_remote}/{root.name}.rra"
        RollbackRecoverySystem(root=root).export([take(root)], urls[root.name], endpoint_url=seaweedfs.endpoint)
    size = len(_get(seaweedfs, urls["big"]))
    assert size > 40 * MiB  # random bytes: the archive is as big as the file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**s3_env, "TMPDIR": str(elsewhere)}
    peaks = {}
    for name, url in urls.items():
        done, peaks[name] = _verify_measured(url, seaweedfs.endpoint, elsewhere, env, max_file=4 * MiB)
        assert done.returncode == 0, done.stderr  # no file over 4 MiB was written (else SIGXFSZ / EFBIG)
        assert done.stderr.startswith(f"archive {url} is valid")
    # Not held in memory either. The peak is mostly boto3 loading its service model, freed before the GET,
    # so a whole copy in memory shows as less than its size (+19 MB measured for 40 MiB): keep the bound low.
    assert peaks["big"] - peaks["small"] < 8 * MiB, peaks
    assert not list(elsewhere.iterdir())


# the frame walk that replaces seeking ----------------------------------------------------------------


def test_the_frame_walk_finds_a_stream_cut_anywhere_however_it_is_fed(tmp_path: Path, project: Path) -> None:
    (project / "a.txt").write_text("hello\n" * 1000)
    archive = tmp_path / "a.rra"
    RollbackRecoverySystem(root=project).export([take(project)], archive)
    data = archive.read_bytes()
    skippable = (0x184D2A5A).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"

    def walked(blob: bytes, piece: int) -> str:
        walk = FrameWalk()
        for at in range(0, len(blob), piece):
            walk.feed(blob[at:at + piece])
        return walk.problem()

    for piece in (1, 3, 7, 4096, len(data) + 20):
        assert walked(data, piece) == walked(data + skippable, piece) == walked(b"", piece) == ""
        for cut in (*range(1, 12), len(data) // 2, len(data) - 3, len(data) - 1):
            assert walked(data[:cut], piece).startswith("truncated: the compressed stream stops inside"), cut
        assert walked(data + skippable[:-1], piece) != ""
    for cut in range(1, 5):  # inside the frame's checksum: the content is all there, only the walk sees it
        archive.write_bytes(data[:-cut])
        with pytest.raises(ArchiveError, match="truncated"):
            verify_archive(archive)


def test_export_without_credentials_or_refused_names_the_url(
        tmp_path: Path, s3_remote: str, s3_env: dict[str, str], seaweedfs: SeaweedFS,
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    checkpoint_id = take(project)
    endpoint = ("--endpoint-url", seaweedfs.endpoint)
    url = f"{s3_remote}/a.rra"
    wrong = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    line = one_error_line(run_cli("export", checkpoint_id, "-o", url, *endpoint, cwd=project, env=wrong), 14)
    assert line == f"rrstore: error: permission denied: cannot write {url}"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    anonymous = {k: v for k, v in s3_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    line = one_error_line(run_cli("export", checkpoint_id, "-o", url, *endpoint, cwd=project, env=anonymous), 1)
    assert line.startswith(f"rrstore: error: cannot write archive {url}: no usable AWS credentials"), line
    assert not list((project / ".checkpoints" / "tmp").iterdir())
