"""``gc --remote`` and ``check --remote`` against a real SeaweedFS server (``seaweedfs`` fixture in conftest).

Retention on a remote, gc racing real pusher processes, gc killed with SIGKILL at random points, a
pusher paused past its lease, and ``check --remote`` finding damage. Trees are small so the whole
file runs in well under a minute beside the server's start.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GIT_ENV, SeaweedFS

from rrstore import RollbackRecoverySystem
from rrstore.backends.s3 import S3Backend, parse_remote
from rrstore.check import CheckOptions
from rrstore.gc import Retention
from rrstore.remote_lease import LOCKS
from rrstore.store.packindex import decode_midx, midx_name

Manifest = dict[str, tuple[object, ...]]
AGGRESSIVE = ["--older-than", "0s", "--grace", "0s"]


@pytest.fixture
def endpoint(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.endpoint


def backend(url: str, endpoint: str) -> S3Backend:
    bucket, prefix = parse_remote(url)
    return S3Backend(bucket, prefix, endpoint_url=endpoint)


def write(root: Path, files: dict[str, str]) -> None:
    """Make ``root`` hold exactly ``files`` (besides the store)."""
    root.mkdir(parents=True, exist_ok=True)
    for path in root.rglob("*"):
        if path.is_file() and ".checkpoints" not in path.parts and str(path.relative_to(root)) not in files:
            path.unlink()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def base(tag: str = "") -> dict[str, str]:
    return {f"src/mod{i}.py": f"# shared module {i}\n" + "x = 1\n" * i for i in range(8)} | \
        {"README.md": f"demo {tag}\n"}


def take(root: Path, step: int, lane: str = "standard") -> str:
    return RollbackRecoverySystem(root=root).checkpoint(lane, step, f"s{step}").checkpoint_id


def env(s3_env: dict[str, str], **more: str) -> dict[str, str]:
    out = {**os.environ, **GIT_ENV, **s3_env, **more}
    out.pop("RRSTORE_DIR", None)
    return out


def spawn(cwd: Path, environ: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def run(cwd: Path, environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=environ, text=True,
                          capture_output=True, timeout=120)


def restores(tmp: Path, url: str, endpoint: str, checkpoint_id: str, expected: Manifest,
             manifest: Callable[..., Manifest]) -> None:
    """Pull ``checkpoint_id`` into an empty store and restore it: byte-identical to ``expected``."""
    target = tmp / f"restore-{checkpoint_id}"
    target.mkdir()
    rrs = RollbackRecoverySystem(root=target)
    assert rrs.pull([checkpoint_id], url, endpoint).transferred == [checkpoint_id]
    rrs.restore(checkpoint_id, force=True)
    assert manifest(target) == expected, checkpoint_id


def wait_for_gc_lease(remote: S3Backend, proc: subprocess.Popen[str], timeout: float = 20.0) -> bool:
    """Wait until a gc lease shows on ``remote`` (gc took it) or ``proc`` ended; whether one showed."""
    deadline = time.monotonic() + timeout
    before = set(remote.list(LOCKS))
    while proc.poll() is None and time.monotonic() < deadline:
        if any(k.startswith(f"{LOCKS}gc-") for k in set(remote.list(LOCKS)) - before):
            return True
        time.sleep(0.02)
    return False


def assert_indexes_sound(remote: S3Backend) -> None:
    """Every pack a merged index names is there, index and pack: what a push trusts without listing."""
    keys = set(remote.list("packs/"))
    for key in remote.list("index/packs/"):
        name = midx_name(key)
        assert name is not None
        for pack in decode_midx(name, remote.read(key)):
            assert {f"packs/{pack}.idx", f"packs/{pack}.pack"} <= keys, (key, pack)


def remote_ids(url: str, endpoint: str) -> set[str]:
    return {k.rsplit("/", 1)[1] for k in backend(url, endpoint).list("refs/checkpoints/")}


# retention ------------------------------------------------------------------------------------------


def test_retention_on_the_remote_removes_old_checkpoints_and_keeps_the_rest_restorable(
        tmp_path: Path, s3_remote: str, endpoint: str, manifest: Callable[..., Manifest]) -> None:
    project = tmp_path / "project"
    ids, seen = [], {}
    for step in (1, 2, 3, 4):
        write(project, base() | {f"only{step}.txt": f"only in checkpoint {step}\n" * 50})
        ids.append(take(project, step))
        seen[ids[-1]] = manifest(project)
    rrs = RollbackRecoverySystem(root=project)
    assert rrs.push([], s3_remote, endpoint).success
    rrs.pin(ids[0])  # this store's pin
    assert rrs.pin_remote(ids[1], s3_remote, endpoint)  # the remote's pin
    remote = backend(s3_remote, endpoint)
    before = sorted(remote.list(""))

    policy = Retention(older_than=Retention().older_than * 0, keep_last=1, grace=Retention().grace * 0)
    dry = rrs.gc_remote(s3_remote, endpoint, policy, dry_run=True)
    assert dry.dry_run and dry.removed == [ids[2]] and dry.packs_removed == 1
    assert sorted(remote.list("")) == before  # a dry run removes nothing

    done = rrs.gc_remote(s3_remote, endpoint, policy)
    assert done.removed == [ids[2]] and set(done.kept) == {ids[0], ids[1], ids[3]}
    assert done.packs_removed == 1 and done.objects_removed >= 2 and done.bytes_freed > 0
    assert remote_ids(s3_remote, endpoint) == {ids[0], ids[1], ids[3]}  # pinned here, pinned there, newest
    assert not list(remote.list(LOCKS))  # the lease is gone
    assert_indexes_sound(remote)
    assert rrs.check_remote(s3_remote, endpoint).success
    assert rrs.pin_remote(ids[1], s3_remote, endpoint, pinned=False)
    assert rrs.gc_remote(s3_remote, endpoint, policy).removed == [ids[1]]  # unpinned: retention applies
    for checkpoint_id in (ids[0], ids[3]):
        restores(tmp_path, s3_remote, endpoint, checkpoint_id, seen[checkpoint_id], manifest)
    again = rrs.gc_remote(s3_remote, endpoint, policy)
    assert (again.removed, again.packs_removed, again.objects_removed) == ([], 0, 0)


def test_gc_remote_cli_json_and_young_objects_are_spared(tmp_path: Path, s3_remote: str, endpoint: str,
                                                         s3_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    for step in (1, 2):
        write(project, base() | {"v.txt": f"version {step}\n"})
        take(project, step)
    RollbackRecoverySystem(root=project).push([], s3_remote, endpoint)
    environ = env(s3_env)
    spared = run(project, environ, "gc", "--remote", s3_remote, "--endpoint-url", endpoint, "--older-than", "0s",
                 "--json")
    assert spared.returncode == 0, spared.stderr
    doc = json.loads(spared.stdout)
    assert len(doc["removed"]) == 2 and doc["packs_removed"] == 0  # the default 15m grace spares the packs
    assert doc["remote"] == s3_remote and doc["dry_run"] is False
    assert {"packs_with_garbage", "waited_seconds", "objects_removed", "bytes_freed"} <= set(doc)
    elsewhere = tmp_path / "elsewhere"  # no local store: cron on a machine that only collects
    elsewhere.mkdir()
    swept = run(elsewhere, environ, "gc", "--remote", s3_remote, "--endpoint-url", endpoint, *AGGRESSIVE, "--json")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout)["packs_removed"] >= 1
    assert_indexes_sound(backend(s3_remote, endpoint))
    assert not (elsewhere / ".checkpoints").exists()
    unknown = run(project, environ, "pin", "nope", "--remote", s3_remote, "--endpoint-url", endpoint)
    assert unknown.returncode == 12 and s3_remote in unknown.stderr and "list --remote" in unknown.stderr
    bad = run(project, environ, "gc", "--endpoint-url", endpoint)
    assert bad.returncode == 2 and "--endpoint-url needs --remote" in bad.stderr


# check --remote -------------------------------------------------------------------------------------


def test_check_remote_finds_a_deleted_object_and_names_the_checkpoint(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    write(project, base())
    first = take(project, 1)
    write(project, base() | {"extra.txt": "only in the second\n" * 99})
    second = take(project, 2)
    rrs = RollbackRecoverySystem(root=project)
    rrs.push([first], s3_remote, endpoint)
    rrs.push([second], s3_remote, endpoint)
    environ = env(s3_env)
    healthy = run(project, environ, "check", "--remote", s3_remote, "--endpoint-url", endpoint, "--read-data")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    remote = backend(s3_remote, endpoint)
    packs = sorted(k for k in remote.list("packs/") if k.endswith(".pack"))
    newest = max(packs, key=lambda k: remote.stat(k)[1])  # the second push's pack: only the second needs it
    remote.delete(newest)
    damaged = run(project, environ, "check", "--remote", s3_remote, "--endpoint-url", endpoint, "--json")
    assert damaged.returncode == 13, damaged.stderr
    doc = json.loads(damaged.stdout)
    assert doc["damaged_checkpoints"] == [second] and doc["store"] == s3_remote
    assert {p["kind"] for p in doc["problems"]} & {"pack-missing", "object-missing"}, doc["problems"]
    text = run(project, environ, "check", "--remote", s3_remote, "--endpoint-url", endpoint)
    assert text.returncode == 13 and second in text.stdout and first not in text.stdout
    refused = run(project, environ, "check", "--remote", s3_remote, "--repair")
    assert refused.returncode == 2 and "--repair" in refused.stderr


def test_what_a_killed_gc_leaves_is_garbage_for_check_and_the_next_gc_removes_it(
        tmp_path: Path, s3_remote: str, endpoint: str) -> None:
    project = tmp_path / "project"
    write(project, base())
    first = take(project, 1)
    write(project, base() | {"extra.txt": "only in the second\n" * 99})
    second = take(project, 2)
    rrs = RollbackRecoverySystem(root=project)
    rrs.push([first], s3_remote, endpoint)
    before = set(backend(s3_remote, endpoint).list("packs/"))
    rrs.push([second], s3_remote, endpoint)
    remote = backend(s3_remote, endpoint)
    (pack,) = {k for k in remote.list("packs/") if k.endswith(".pack")} - before
    # as a gc killed in its sweep leaves it: the ref gone, the merged indexes rewritten, the .idx deleted
    remote.delete(f"refs/checkpoints/{second}")
    for key in remote.list("index/packs/"):
        remote.delete(key)
    remote.delete(pack[:-len(".pack")] + ".idx")
    result = rrs.check_remote(s3_remote, endpoint, CheckOptions(read_data=True))
    assert result.success, [p.line for p in result.problems]
    assert any(n.startswith("garbage: ") and pack in n for n in result.notes), result.notes
    done = rrs.gc_remote(s3_remote, endpoint, Retention(keep_last=5, grace=Retention().grace * 0))
    assert done.removed == [] and done.packs_removed == 1 and pack not in set(remote.list("packs/"))
    again = rrs.check_remote(s3_remote, endpoint)
    assert again.success and not any(n.startswith("garbage: ") for n in again.notes)


# gc racing pushers ----------------------------------------------------------------------------------


def test_pushes_from_two_processes_while_gc_remote_runs_lose_no_kept_checkpoint(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str],
        manifest: Callable[..., Manifest]) -> None:
    runners = [tmp_path / "runner1", tmp_path / "runner2"]
    environ = env(s3_env)
    seen: dict[str, Manifest] = {}
    pushed: list[str] = []
    rng = random.Random(12)
    last: dict[int, str] = {}
    write(runners[0], base())
    RollbackRecoverySystem(root=runners[0]).push([take(runners[0], 99)], s3_remote, endpoint)  # a remote to gc
    for round_ in range(10):
        ids = []
        for n, root in enumerate(runners):
            # shared content moves between runners and rounds, so a push often deduplicates against a
            # pack that only a checkpoint gc is about to remove still reaches
            write(root, base() | {f"r{n}.txt": f"runner {n} round {round_}\n" * 40,
                                  "moving.txt": f"moving {round_ - n}\n" * 60})
            ids.append(take(root, round_ + 1, ("standard", "heavy")[n]))  # two runners: ids never meet
            seen[ids[-1]] = manifest(root)
        procs = [spawn(root, environ, "push", checkpoint_id, "--remote", s3_remote, "--endpoint-url", endpoint)
                 for root, checkpoint_id in zip(runners, ids, strict=True)]
        time.sleep(rng.random() * 0.3)
        gc = spawn(runners[round_ % 2], environ, "gc", "--remote", s3_remote, "--endpoint-url", endpoint,
                   "--keep-last", "1", *AGGRESSIVE)
        for n, (proc, checkpoint_id) in enumerate(zip(procs, ids, strict=True)):
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            pushed.append(checkpoint_id)
            last[n] = checkpoint_id
        _, err = gc.communicate(timeout=120)
        assert gc.returncode in (0, 11), err
        check = RollbackRecoverySystem(root=runners[0]).check_remote(s3_remote, endpoint,
                                                                     CheckOptions(read_data=round_ == 9))
        assert check.success, [p.line for p in check.problems]
    kept = remote_ids(s3_remote, endpoint)
    assert set(last.values()) <= kept  # the newest of each runner is kept by --keep-last 1
    for checkpoint_id in sorted(kept):
        assert checkpoint_id in pushed
        restores(tmp_path, s3_remote, endpoint, checkpoint_id, seen[checkpoint_id], manifest)


def test_gc_killed_at_random_points_leaves_the_remote_checkable_and_kept_checkpoints_restorable(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str],
        manifest: Callable[..., Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRSTORE_LEASE_TTL", "3")  # a killed gc's lease goes stale in seconds
    environ = env(s3_env, RRSTORE_LEASE_TTL="3")
    project = tmp_path / "project"
    seen: dict[str, Manifest] = {}
    project.mkdir()
    rrs = RollbackRecoverySystem(root=project)
    rng = random.Random(7)
    step, interrupted, dead = 0, 0, set()
    remote = backend(s3_remote, endpoint)
    for round_ in range(4):
        for _ in range(3):
            step += 1
            write(project, base() | {f"f{step % 4}.txt": f"step {step}\n" * 80})
            seen[take(project, step)] = manifest(project)
        assert rrs.push([], s3_remote, endpoint).success
        gc = spawn(project, environ, "gc", "--remote", s3_remote, "--endpoint-url", endpoint, "--keep-last", "2",
                   *AGGRESSIVE)
        if wait_for_gc_lease(remote, gc):  # then somewhere in its work: marking, deleting refs, indexes, packs
            time.sleep(rng.uniform(0.0, 0.4))
        gc.send_signal(signal.SIGKILL)
        gc.communicate()
        interrupted += any(k.startswith(f"{LOCKS}gc-") and k not in dead for k in remote.list(LOCKS))
        dead = set(remote.list(LOCKS))
        assert_indexes_sound(remote)
        result = rrs.check_remote(s3_remote, endpoint, CheckOptions(read_data=round_ == 3))
        assert result.success, (round_, [p.line for p in result.problems])
    assert interrupted >= 1  # some kills did land while gc held its lease, i.e. mid-work
    kept = remote_ids(s3_remote, endpoint)
    assert kept
    for checkpoint_id in sorted(kept):
        restores(tmp_path, s3_remote, endpoint, checkpoint_id, seen[checkpoint_id], manifest)
    finish = run(project, environ, "gc", "--remote", s3_remote, "--endpoint-url", endpoint, "--keep-last", "2",
                 *AGGRESSIVE, "--json")
    assert finish.returncode == 0, finish.stderr
    assert rrs.check_remote(s3_remote, endpoint).success


def test_a_push_paused_past_its_lease_sends_again_what_a_gc_removed_meanwhile(
        tmp_path: Path, s3_remote: str, endpoint: str, s3_env: dict[str, str],
        manifest: Callable[..., Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    """A pusher that stops renewing (a paused process) after it deduplicated against the remote: a gc
    then removes what it relied on, and the push must notice and send it again before it succeeds."""
    from rrstore import remote_lease, transfer

    monkeypatch.setenv("RRSTORE_LEASE_TTL", "2")
    project = tmp_path / "project"
    shared = {"shared.bin": "shared content\n" * 500}
    write(project, base() | shared)
    first = take(project, 1)
    rrs = RollbackRecoverySystem(root=project)
    rrs.push([first], s3_remote, endpoint)
    remote = backend(s3_remote, endpoint)
    first_packs = set(remote.list("packs/"))
    write(project, base() | shared | {"new.txt": "only in the second\n"})
    second = take(project, 2)
    expected = manifest(project)

    renewing = remote_lease.Lease._renewing
    stalled: list[str] = []

    def paused(self: remote_lease.Lease) -> None:  # the first lease of the push is never renewed
        if not stalled:
            stalled.append(self.key)
            return
        renewing(self)

    create_refs = transfer._create_refs

    def gc_meanwhile(*args: object) -> None:
        gc = run(project, env(s3_env, RRSTORE_LEASE_TTL="6"), "gc", "--remote", s3_remote, "--endpoint-url",
                 endpoint, *AGGRESSIVE)
        assert gc.returncode == 0, gc.stderr  # it waited for the push's lease to go stale, then swept
        assert not first_packs & set(remote.list("packs/"))  # what the push deduplicated against is gone
        create_refs(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(remote_lease.Lease, "_renewing", paused)
    monkeypatch.setattr(transfer, "_create_refs", gc_meanwhile)
    result = rrs.push([second], s3_remote, endpoint)
    assert result.transferred == [second] and stalled
    assert first_packs <= set(remote.list("packs/"))  # sent again before the push returned
    monkeypatch.setattr(remote_lease.Lease, "_renewing", renewing)
    monkeypatch.setattr(transfer, "_create_refs", create_refs)
    assert RollbackRecoverySystem(root=project).check_remote(s3_remote, endpoint, CheckOptions(read_data=True)).success
    restores(tmp_path, s3_remote, endpoint, second, expected, manifest)
