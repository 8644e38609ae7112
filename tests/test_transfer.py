"""push / pull / list --remote against a real SeaweedFS S3 server (the ``seaweedfs`` fixture in conftest).

Every test gets a fresh remote prefix (``s3_remote``) and its own local stores.
Subprocess tests run the installed CLI with the test server's credentials in
the environment (``s3_env``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from conftest import GIT_ENV, SeaweedFS, run_cli

from rrstore import RollbackRecoverySystem
from rrstore.backends.s3 import S3Backend, parse_remote
from rrstore.errors import CheckpointNotFound, CorruptObject, NoProjectCheckpoint, UsageError
from rrstore.store.pack import decode_index, encode_index
from rrstore.transfer import RemoteNotFound, list_remote, open_remote

Manifest = dict[str, tuple[object, ...]]


def fill(root: Path, variant: str = "", files: int = 40) -> None:
    """A small project: shared sources, an executable, a symlink, an empty dir, a chunked 4.5 MiB file."""
    (root / "src" / "pkg").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / "src" / "pkg" / f"mod{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * (i + 1))
    (root / "README.md").write_text(f"# demo {variant}\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir(exist_ok=True)
    link = root / "link"
    if not link.is_symlink():
        link.symlink_to("src/pkg/mod0.py")
    (root / "big.bin").write_bytes(random.Random(variant).randbytes(9 << 19))  # over 4 MiB: chunked


def checkpoint(root: Path, name: str = "build", step: int = 1) -> str:
    return RollbackRecoverySystem(root=root).checkpoint("standard", step, name).checkpoint_id


def store_files(root: Path) -> dict[str, bytes]:
    store = root / ".checkpoints"
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture
def endpoint(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.endpoint


def system(root: Path) -> RollbackRecoverySystem:
    return RollbackRecoverySystem(root=root)


# round trips -----------------------------------------------------------------------------------------


def test_push_then_pull_into_a_fresh_store_restores_byte_identically(
        tmp_path: Path, s3_remote: str, endpoint: str, manifest: Callable[..., Manifest]) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    cp = checkpoint(source)
    expected = manifest(source)

    pushed = system(source).push([cp], s3_remote, endpoint)
    assert pushed.transferred == [cp] and pushed.success
    assert pushed.packs >= 1 and pushed.objects == 1  # content in packs, the record loose

    pulled = system(target).pull([cp], s3_remote, endpoint)
    assert pulled.transferred == [cp] and pulled.success
    assert pulled.packs == pushed.packs and pulled.objects == 1
    result = system(target).restore(cp, force=True)  # another directory: another project
    assert manifest(target) == expected
    assert system(target).show(cp).state_hash == system(source).show(cp).state_hash
    assert result.undo_checkpoint_id


def test_second_push_uploads_nothing_and_a_new_checkpoint_uploads_only_what_changed(
        tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    fill(tmp_path)
    first = checkpoint(tmp_path, step=1)
    rrs = system(tmp_path)
    assert rrs.push([first], s3_remote, endpoint).transferred == [first]

    again = rrs.push([first], s3_remote, endpoint)
    assert (again.transferred, again.present) == ([], [first])
    assert (again.objects, again.packs, again.bytes) == (0, 0, 0)

    (tmp_path / "src" / "pkg" / "mod3.py").write_text("changed\n")
    second = checkpoint(tmp_path, step=2)
    everything = rrs.push([], s3_remote, endpoint)  # no ids: every checkpoint
    assert everything.transferred == [second]
    assert everything.present == [first]
    assert everything.packs == 1 and everything.objects == 1  # the new pack and the record
    assert everything.objects_skipped > 40

    nothing = rrs.push([], s3_remote, endpoint)
    assert (nothing.objects, nothing.packs, nothing.bytes, nothing.transferred) == (0, 0, 0, [])
    assert sorted(nothing.present) == sorted([first, second])


def test_objects_another_runner_pushed_in_its_own_packs_are_not_uploaded_again(
        tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    """Dedup is per object, not per pack file: two stores pack the same files differently."""
    runner_a, runner_b = tmp_path / "a", tmp_path / "b"
    for root in (runner_a, runner_b):
        root.mkdir()
        fill(root)
    first = checkpoint(runner_a, step=1)
    second = checkpoint(runner_b, step=2)  # the same tree, stored in runner b's own pack
    assert system(runner_a).show(first).state_hash == system(runner_b).show(second).state_hash
    system(runner_a).push([first], s3_remote, endpoint)

    result = system(runner_b).push([second], s3_remote, endpoint)
    assert result.transferred == [second]
    assert (result.packs, result.objects) == (0, 1)  # only the record
    assert result.objects_skipped > 40


def test_pull_fetches_only_what_is_missing(tmp_path: Path, s3_remote: str, endpoint: str,
                                          manifest: Callable[..., Manifest]) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    first = checkpoint(source, step=1)
    (source / "src" / "pkg" / "mod7.py").write_text("edited\n")
    second = checkpoint(source, step=2)
    expected_second = manifest(source)
    system(source).push([], s3_remote, endpoint)

    one = system(target).pull([first], s3_remote, endpoint)
    assert one.transferred == [first] and one.packs == 1
    two = system(target).pull([second], s3_remote, endpoint)
    assert two.transferred == [second]
    assert two.packs == 1 and two.objects == 1  # only the second checkpoint's pack, and its record
    assert two.bytes < one.bytes / 4
    assert two.objects_skipped > 40
    three = system(target).pull([first, second], s3_remote, endpoint)
    assert (three.present, three.bytes) == ([first, second], 0)

    system(target).restore(second, force=True)
    assert manifest(target) == expected_second


def test_pull_latest_and_progress(tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    checkpoint(source, step=1)
    (source / "README.md").write_text("newer\n")
    newest = checkpoint(source, step=2)
    calls: list[tuple[int, int]] = []
    system(source).push([], s3_remote, endpoint, progress=lambda done, total: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    with pytest.raises(NoProjectCheckpoint):  # another directory, another project: none of its own there
        system(target).pull(["latest"], s3_remote, endpoint)
    assert system(target).pull(["latest"], s3_remote, endpoint, all_projects=True).transferred == [newest]


def test_remote_records_are_readable_through_objectstore_over_s3(
        tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    """The remote is a store: ObjectStore and the pack reader work over S3Backend unchanged."""
    from rrstore.record import CheckpointRecord
    from rrstore.store.objects import ObjectStore
    from rrstore.store.refs import Refs
    from rrstore.tree import flatten

    fill(tmp_path)
    cp = checkpoint(tmp_path)
    system(tmp_path).push([cp], s3_remote, endpoint)
    remote = open_remote(s3_remote, endpoint)
    objects = ObjectStore(remote)
    oid = Refs(remote).get(cp)
    assert oid is not None and objects.has(oid)
    record = CheckpointRecord.decode(oid, objects.get(oid))
    files = flatten(objects, record.state_hash)  # trees read from remote packs by Range GETs
    assert files["src/pkg/mod5.py"].size == len("# module 5\n" + "x = 1\n" * 6)
    assert files == flatten(system(tmp_path).open_store().objects, record.state_hash)
    assert oid in set(objects)


# two runners at once -------------------------------------------------------------------------------


def _push_process(root: Path, ids: list[str], remote: str, endpoint: str,
                  env: dict[str, str]) -> subprocess.Popen[str]:
    full = {**os.environ, **GIT_ENV, **env}
    full.pop("RRSTORE_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "rrstore", "push", *ids, "--remote", remote,
                             "--endpoint-url", endpoint, "--json"],
                            cwd=root, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_pushes_of_checkpoints_sharing_objects_lose_nothing(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str],
        manifest: Callable[..., Manifest]) -> None:
    runners = [tmp_path / "runner-a", tmp_path / "runner-b"]
    ids, expected = [], []
    for n, root in enumerate(runners):
        root.mkdir()
        fill(root, variant=f"runner {n}", files=200)  # the sources are shared, README and big.bin differ
        ids.append(checkpoint(root, name=f"runner {n}", step=n + 1))
        expected.append(manifest(root))

    procs = [_push_process(root, [cp], s3_remote, endpoint, s3_env) for root, cp in zip(runners, ids, strict=True)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert [json.loads(out)["transferred"] for out, _ in outputs] == [[ids[0]], [ids[1]]]

    listed = {r.checkpoint_id for r in list_remote(open_remote(s3_remote, endpoint)).checkpoints}
    assert listed == set(ids)
    for cp, want in zip(ids, expected, strict=True):
        fresh = tmp_path / f"fresh-{cp}"
        fresh.mkdir()
        system(fresh).pull([cp], s3_remote, endpoint)
        system(fresh).restore(cp, force=True)
        assert manifest(fresh) == want


def test_two_concurrent_pushes_of_the_same_checkpoint_create_the_ref_once(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    fill(tmp_path, files=100)
    cp = checkpoint(tmp_path)
    procs = [_push_process(tmp_path, [cp], s3_remote, endpoint, s3_env) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(len(r["transferred"]) for r in results) == [0, 1]
    assert all(r["conflicts"] == [] for r in results)
    assert [r.checkpoint_id for r in list_remote(open_remote(s3_remote, endpoint)).checkpoints] == [cp]


# refusals ------------------------------------------------------------------------------------------


def _remote_client(seaweedfs: SeaweedFS, url: str) -> tuple[object, str, str]:
    bucket, prefix = parse_remote(url)
    return seaweedfs.client(), bucket, prefix


def _corrupt(seaweedfs: SeaweedFS, url: str, how: str) -> None:
    """Damage the remote the way ``how`` says, through plain S3 calls (as a faulty disk or a bad actor would)."""
    client, bucket, prefix = _remote_client(seaweedfs, url)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]]  # type: ignore[attr-defined]
    packs = sorted(k for k in keys if k.endswith(".pack"))
    newest = max(packs, key=lambda k: client.head_object(Bucket=bucket, Key=k)["LastModified"])  # type: ignore[attr-defined]
    if how == "pack-bytes":  # a flipped byte in the first block: a blob, not a tree
        data = bytearray(client.get_object(Bucket=bucket, Key=newest)["Body"].read())  # type: ignore[attr-defined]
        data[20] ^= 0xFF
        client.put_object(Bucket=bucket, Key=newest, Body=bytes(data))  # type: ignore[attr-defined]
    elif how == "index-entry":  # the pack still matches its name; one entry points at the wrong bytes
        key = newest[:-5] + ".idx"
        pack = newest.rsplit("/", 1)[-1][:-5]
        entries = decode_index(pack, client.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[attr-defined]
        victim = min(entries, key=lambda oid: (entries[oid][1], entries[oid][3]))
        _, boff, bsize, off, length = entries[victim]
        entries[victim] = (pack, boff, bsize, off + 1, length)
        client.put_object(Bucket=bucket, Key=key, Body=encode_index(entries))  # type: ignore[attr-defined]
    elif how == "record":
        key = next(k for k in keys if "/objects/" in k)
        frame = client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
        # One changed byte in the record itself, in a valid frame: a flip in the frame's last byte
        # may land on padding bits zstd ignores, which decodes to the very record (not damage).
        data = bytearray(zstandard.ZstdDecompressor().decompress(frame))
        data[len(data) // 2] ^= 0x01
        damaged = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(data))
        client.put_object(Bucket=bucket, Key=key, Body=damaged)  # type: ignore[attr-defined]
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["pack-bytes", "index-entry", "record"])
def test_a_corrupted_remote_object_is_refused_and_the_local_store_is_unchanged(
        tmp_path: Path, s3_remote: str, endpoint: str, seaweedfs: SeaweedFS, how: str) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    first = checkpoint(source, step=1)
    for i in range(3):  # the second checkpoint's pack: several blocks of new, incompressible blobs
        (source / f"new{i}.bin").write_bytes(os.urandom(200_000))
    second = checkpoint(source, step=2)
    system(source).push([first, second], s3_remote, endpoint)
    _corrupt(seaweedfs, s3_remote, how)

    (target / "own.txt").write_text("the target's own work\n")
    # step 9: a step-1 checkpoint taken in the same second as the source's would get the same id and make
    # the pull a conflict that never reads the damaged record (ids unique across stores: issue 12)
    own = checkpoint(target, step=9)
    before = store_files(target)
    with pytest.raises(CorruptObject) as caught:
        system(target).pull([first, second], s3_remote, endpoint)
    assert caught.value.checkpoints and set(caught.value.checkpoints) <= {first, second}
    assert store_files(target) == before
    assert [r.checkpoint_id for r in system(target).list().checkpoints] == [own]


def test_corrupt_pull_on_the_command_line_exits_13(tmp_path: Path, s3_remote: str, endpoint: str,
                                                   seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> None:
    fill(tmp_path)
    cp = checkpoint(tmp_path)
    system(tmp_path).push([cp], s3_remote, endpoint)
    _corrupt(seaweedfs, s3_remote, "record")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out = run_cli("-C", str(fresh), "pull", cp, "--remote", s3_remote, "--endpoint-url", endpoint, "--json",
                  cwd=fresh, env=s3_env)  # -C: below tmp_path's store, fresh would be part of that project
    assert out.returncode == 13, out.stderr
    error = json.loads(out.stderr.strip().splitlines()[-1])
    assert error["error"] == "CorruptObject" and cp in error["message"]
    assert not list((fresh / ".checkpoints" / "refs" / "checkpoints").iterdir())


def test_a_remote_ref_naming_another_record_is_a_conflict_left_alone(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    fill(tmp_path)
    cp = checkpoint(tmp_path)
    remote = open_remote(s3_remote, endpoint)
    remote.write("config.json", system(tmp_path).open_store().backend.read("config.json"))
    other = "ab" * 32
    remote.write(f"refs/checkpoints/{cp}", f"{other}\n".encode())

    out = run_cli("push", cp, "--remote", s3_remote, "--endpoint-url", endpoint, "--json", cwd=tmp_path, env=s3_env)
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["transferred"] == [] and doc["success"] is False
    assert doc["conflicts"] == [{"checkpoint_id": cp, "local_record": system(tmp_path).show(cp).record_oid,
                                 "remote_record": other}]
    assert remote.read(f"refs/checkpoints/{cp}") == f"{other}\n".encode()


def test_a_local_ref_naming_another_record_is_a_conflict_on_pull(
        tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    cp = checkpoint(source)
    system(source).push([cp], s3_remote, endpoint)
    (target / "x").write_text("x")
    mine = checkpoint(target)
    ref = target / ".checkpoints" / "refs" / "checkpoints"
    (ref / cp).write_bytes((ref / mine).read_bytes())

    result = system(target).pull([cp], s3_remote, endpoint)
    assert not result.success and [c.checkpoint_id for c in result.conflicts] == [cp]
    assert (ref / cp).read_bytes() == (ref / mine).read_bytes()


def test_unknown_ids_empty_remotes_and_bad_urls_are_clear_errors(
        tmp_path: Path, s3_remote: str, endpoint: str, seaweedfs: SeaweedFS) -> None:
    fill(tmp_path)
    cp = checkpoint(tmp_path)
    with pytest.raises(RemoteNotFound):
        system(tmp_path).pull([cp], s3_remote, endpoint)
    with pytest.raises(RemoteNotFound):
        system(tmp_path).list_remote(s3_remote, endpoint)
    system(tmp_path).push([cp], s3_remote, endpoint)
    with pytest.raises(CheckpointNotFound) as caught:
        system(tmp_path).pull([cp[:-3]], s3_remote, endpoint)
    assert caught.value.suggestions == [cp]
    with pytest.raises(CheckpointNotFound):
        system(tmp_path).push(["standard-step9-nope"], s3_remote, endpoint)
    for bad in ("http://bucket/prefix", "s3://", "s3://bucket/../up", "bucket/prefix"):
        with pytest.raises(UsageError):
            system(tmp_path).list_remote(bad, endpoint)


def test_cli_errors_map_to_exit_codes(tmp_path: Path, s3_remote: str, endpoint: str,
                                      s3_env: dict[str, str]) -> None:
    fill(tmp_path)
    cp = checkpoint(tmp_path)
    base = ["--remote", s3_remote, "--endpoint-url", endpoint]

    empty = run_cli("list", *base, cwd=tmp_path, env=s3_env)
    assert empty.returncode == 10 and "no rrstore store at s3://" in empty.stderr

    wrong_key = run_cli("push", cp, *base, cwd=tmp_path, env={**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert wrong_key.returncode == 14, wrong_key.stderr
    assert "permission denied" in wrong_key.stderr

    no_bucket = run_cli("list", "--remote", "s3://no-such-bucket-rrstore/x", "--endpoint-url", endpoint,
                        cwd=tmp_path, env=s3_env)
    assert no_bucket.returncode == 1 and "bucket 'no-such-bucket-rrstore' does not exist" in no_bucket.stderr

    from conftest import _free_ports

    dead = f"http://127.0.0.1:{_free_ports(1)[0]}"
    unreachable = run_cli("list", "--remote", s3_remote, "--endpoint-url", dead, "--json", cwd=tmp_path,
                          env={**s3_env, "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"})
    assert unreachable.returncode == 1
    error = json.loads(unreachable.stderr.strip().splitlines()[-1])
    assert error["error"] == "RRStoreError" and f"cannot reach the S3 endpoint {dead}" in error["message"]

    bad_url = run_cli("pull", cp, "--remote", "ftp://x/y", cwd=tmp_path, env=s3_env)
    assert bad_url.returncode == 2 and "s3://BUCKET/PREFIX" in bad_url.stderr
    missing = run_cli("push", cp, cwd=tmp_path, env=s3_env)
    assert missing.returncode == 2 and "--remote" in missing.stderr


# the command line ----------------------------------------------------------------------------------


def test_cli_push_pull_and_list_remote(tmp_path: Path, s3_remote: str, endpoint: str,
                                       s3_env: dict[str, str], manifest: Callable[..., Manifest]) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    first = checkpoint(source, step=1, name="compile")
    (source / "README.md").write_text("second\n")
    second = checkpoint(source, step=2, name="test")
    expected = manifest(source)
    env = {**s3_env, "RRSTORE_REMOTE": s3_remote}

    pushed = run_cli("push", "--endpoint-url", endpoint, cwd=source, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert sorted(pushed.stdout.split()) == sorted([first, second])
    assert f"2 checkpoint(s) pushed to {s3_remote}" in pushed.stderr
    again = run_cli("push", "--endpoint-url", endpoint, "--json", cwd=source, env=env)
    assert again.returncode == 0
    doc = json.loads(again.stdout)
    assert (doc["objects"], doc["packs"], doc["bytes"], doc["transferred"]) == (0, 0, 0, [])
    assert sorted(doc["already_present"]) == sorted([first, second])

    listed = run_cli("list", "--remote", s3_remote, "--endpoint-url", endpoint, "--all-projects", cwd=target,
                     env=s3_env)  # another directory, so another project: --all-projects
    assert listed.returncode == 0, listed.stderr
    owner = f"path:{source.resolve()}"
    assert listed.stdout.splitlines() == [f"{second}: test (standard) {owner}", f"{first}: compile (standard) {owner}"]
    as_json = run_cli("--json", "list", "--remote", s3_remote, "--endpoint-url", endpoint, "--all-projects",
                      cwd=target, env=s3_env)
    assert [r["checkpoint_id"] for r in json.loads(as_json.stdout)] == [second, first]
    mine = run_cli("list", "--remote", s3_remote, "--endpoint-url", endpoint, cwd=target, env=s3_env)
    assert mine.returncode == 0 and mine.stdout == ""
    other_lane = run_cli("list", "--lane", "docs", "--remote", s3_remote, "--endpoint-url", endpoint,
                         cwd=target, env=s3_env)
    assert other_lane.returncode == 0 and other_lane.stdout == ""
    assert not (target / ".checkpoints").exists()  # listing a remote needs no local store

    pulled = run_cli("pull", second, "--remote", s3_remote, "--endpoint-url", endpoint, "--json",
                     cwd=target, env=s3_env)
    assert pulled.returncode == 0, pulled.stderr
    doc = json.loads(pulled.stdout)
    assert doc["direction"] == "pull" and doc["transferred"] == [second] and doc["success"] is True
    assert set(doc) == {"direction", "remote", "transferred", "already_present", "objects", "packs", "bytes",
                        "objects_skipped", "success", "conflicts", "refused", "renamed"}
    restored = run_cli("restore", "--force", second, cwd=target, env=s3_env)
    assert restored.returncode == 0, restored.stderr
    assert manifest(target) == expected


def _imported_modules(args: list[str], cwd: Path) -> set[str]:
    code = ("import runpy, sys\n"
            f"sys.argv = ['rrstore', *{args!r}]\n"
            "try:\n"
            "    runpy.run_module('rrstore', run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n"
            "    pass\n"
            "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n")
    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    line = next(line for line in out.stderr.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_local_commands_do_not_import_boto3(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    checkpoint(tmp_path)
    for args in (["--help"], ["push", "--help"], ["pull", "--help"], ["list"], ["list", "--help"]):
        modules = _imported_modules(args, tmp_path)
        if args[0] in ("push", "pull"):  # the command's own module is loaded, and still no boto3
            assert "rrstore.cli.remote" in modules
        assert not {m for m in modules if m.split(".")[0] in ("boto3", "botocore")}, args


def test_s3_backend_from_url_parses_bucket_and_prefix() -> None:
    assert parse_remote("s3://bucket") == ("bucket", "")
    assert parse_remote("s3://bucket/") == ("bucket", "")
    assert parse_remote("s3://bucket/team/ci/") == ("bucket", "team/ci")
    backend = S3Backend.from_url("s3://bucket/team/ci", endpoint_url="http://127.0.0.1:1")
    assert (backend.bucket, backend.prefix, backend.location) == ("bucket", "team/ci", "s3://bucket/team/ci")


def test_export_to_s3_writes_a_complete_archive_that_imports_elsewhere(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str],
        manifest: Callable[..., Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fill(source)
    checkpoint_id = checkpoint(source, step=1, name="build")
    expected = manifest(source)
    url = f"{s3_remote}/archives/build.rrar"

    out = run_cli("export", checkpoint_id, "--output", url, "--endpoint-url", endpoint, "--json",
                  cwd=source, env=s3_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"] == url
    again = run_cli("export", checkpoint_id, "--output", url, "--endpoint-url", endpoint, cwd=source, env=s3_env)
    assert again.returncode == 2 and "exists" in again.stderr  # never replaced without --force

    bucket, prefix = parse_remote(s3_remote)
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    data = S3Backend(bucket, prefix, endpoint_url=endpoint).read("archives/build.rrar")
    archive = tmp_path / "downloaded.rrar"
    archive.write_bytes(data)
    assert run_cli("import", str(archive), cwd=target).returncode == 0
    assert run_cli("restore", "--force", "--checkpoint-id", checkpoint_id, cwd=target).returncode == 0
    assert manifest(target) == expected
    assert not list((source / ".checkpoints" / "tmp").iterdir())  # the staged archive is gone


# hostile remotes: names that are never written and links leading out (holes 2 and 3) -----------------------


def _hostile_remote(url: str, endpoint: str, config: bytes, files: dict[str, bytes | tuple[str]],
                    checkpoint_id: str) -> None:
    """A remote written by hand with plain S3 writes, every hash consistent: what a bad actor can publish.

    ``files`` maps a path to its content, or to ``(target,)`` for a symlink.
    """
    import zstandard

    from rrstore.record import CheckpointRecord
    from rrstore.store.objects import hash_bytes, object_key
    from rrstore.tree import DIR, FILE, SYMLINK, Entry, tree_oid

    remote = S3Backend.from_url(url, endpoint_url=endpoint)
    remote.write("config.json", config)

    def put(data: bytes) -> str:
        oid = hash_bytes(data)
        remote.write(object_key(oid), zstandard.ZstdCompressor().compress(data))
        return oid

    def build(items: dict[str, bytes | tuple[str]]) -> str:
        found: list[Entry] = []
        groups: dict[str, dict[str, bytes | tuple[str]]] = {}
        for path, data in items.items():
            head, _, rest = path.partition("/")
            if rest:
                groups.setdefault(head, {})[rest] = data
            elif isinstance(data, tuple):
                found.append(Entry(head, SYMLINK, target=data[0]))
            else:
                found.append(Entry(head, FILE, put(data), len(data), data.startswith(b"#!")))
        found += [Entry(name, DIR, build(sub)) for name, sub in groups.items()]
        return put(tree_oid(found)[1])

    record = CheckpointRecord(checkpoint_id=checkpoint_id, lane="standard", step_number=1, step_name="hostile",
                              timestamp="2026-01-02T03:04:05.000000+00:00", state_hash=build(files)).encode()
    remote.write(f"refs/checkpoints/{checkpoint_id}", f"{put(record)}\n".encode())


HOOK = b"#!/bin/sh\ntouch \"$HOME/hook-ran\"\n"
HOSTILE: dict[str, tuple[Callable[[str], dict[str, bytes | tuple[str]]], str]] = {
    "git hook": (lambda own: {".git/hooks/post-checkout": HOOK, "README.md": b"# demo\n"},
                 "path .git: '.git' is never written"),
    ".GIT hook": (lambda own: {".GIT/hooks/x": HOOK}, "path .GIT: '.GIT' is never written"),
    "nested .git": (lambda own: {"sub/.git/config": b"[core]\n\tfsmonitor = touch /tmp/pwned\n"},
                    "path sub/.git: '.git' is never written"),
    "the store's ref and config": (lambda own: {f".checkpoints/refs/checkpoints/{own}": b"0" * 64 + b"\n",
                                                ".checkpoints/config.json": b'{"format": null}'},
                                   "path .checkpoints: '.checkpoints' is never written"),
    "absolute symlink": (lambda own: {"README.md": b"# demo\n", "l": ("/etc/passwd",)},
                         "path l: symlink to '/etc/passwd' leads out of the tree"),
    "symlink climbing out": (lambda own: {"d/up": ("../../x",)}, "path d/up: symlink to '../../x' leads out"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hand_built_remote_cannot_plant_what_import_refuses(case: str, git_project: Path, tmp_path: Path,
                                                              s3_remote: str, endpoint: str,
                                                              s3_env: dict[str, str]) -> None:
    """Pull refuses, before anything is visible locally, what archive import refuses (one rule: tree.TreeCheck).

    Before the fix every case was pulled (exit 0) and a restore wrote it: a hook into .git/, the store's ref.
    """
    build, phrase = HOSTILE[case]
    own = checkpoint(git_project)
    store = git_project / ".checkpoints"
    _hostile_remote(s3_remote, endpoint, (store / "config.json").read_bytes(), build(own),
                    "evil-step1-20260102_030405")
    before, dot_git = store_files(git_project), {str(p): p.read_bytes() for p in (git_project / ".git").rglob("*")
                                                 if p.is_file()}
    env = {**s3_env, "HOME": str(tmp_path)}
    out = run_cli("pull", "evil-step1-20260102_030405", "--remote", s3_remote, "--endpoint-url", endpoint,
                  cwd=git_project, env=env)
    assert out.returncode == 17, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert f"pull from {s3_remote} refused, nothing was changed: checkpoint evil-step1-" in out.stderr
    assert phrase in out.stderr, out.stderr
    assert store_files(git_project) == before
    assert {str(p): p.read_bytes() for p in (git_project / ".git").rglob("*") if p.is_file()} == dot_git
    assert [r.checkpoint_id for r in system(git_project).list().checkpoints] == [own]


def test_push_refuses_a_checkpoint_no_pull_would_accept(tmp_path: Path, s3_remote: str, endpoint: str,
                                                       seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> None:
    """A local checkpoint may hold an absolute link; push says so before sending anything, as export does."""
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "host").symlink_to("/etc/hostname")
    cp = checkpoint(tmp_path)
    out = run_cli("push", cp, "--remote", s3_remote, "--endpoint-url", endpoint, cwd=tmp_path, env=s3_env)
    assert out.returncode == 17 and len(out.stderr.splitlines()) == 1, out.stderr
    assert f"push to {s3_remote} refused, nothing was sent" in out.stderr and "path host" in out.stderr
    client, bucket, prefix = _remote_client(seaweedfs, s3_remote)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])  # type: ignore[attr-defined]
    keys = [o["Key"][len(prefix) + 1:] for o in listed]
    assert "config.json" in keys and not [k for k in keys if k.startswith(("objects/", "packs/", "refs/"))], keys


def test_a_format_1_remote_says_format_2_before_the_first_format_2_push(tmp_path: Path, s3_remote: str,
                                                                         endpoint: str, seaweedfs: SeaweedFS) -> None:
    """Runners on an older rrstore must meet 'unsupported store format', not refs and packs they misread."""
    fill(tmp_path)
    first = checkpoint(tmp_path)
    system(tmp_path).push([first], s3_remote, endpoint)
    client, bucket, prefix = _remote_client(seaweedfs, s3_remote)
    key = f"{prefix}/config.json"
    doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[attr-defined]
    assert doc["format"] == "rrstore-store-2"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps({**doc, "format": "rrstore-store-1"}))  # type: ignore[attr-defined]

    assert [r.checkpoint_id for r in system(tmp_path).list_remote(s3_remote, endpoint).checkpoints] == [first]
    (tmp_path / "new.txt").write_text("more\n")
    second = checkpoint(tmp_path, step=2)
    system(tmp_path).push([second], s3_remote, endpoint)
    after = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[attr-defined]
    assert after == doc
