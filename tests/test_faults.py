"""Fault injection: kill -9 at random instants, single-byte flips in every store file, hostile archives.

Seeded and bounded: ``--fault-trials N`` (or ``RRSTORE_FAULT_TRIALS``) kills
each operation N times and flips 2N bytes; the default is small enough for
the default suite. ``RRSTORE_FAULT_SEED`` replays a run; a failure names the
seed. Every failure is classified (lost checkpoint, wrong byte, traceback,
escape, other) and the session prints a table per operation (written as
JSON to ``RRSTORE_FAULT_REPORT`` when set). docs/reliability.md says more.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SeaweedFS, git, tree_manifest
from craft import EVIL_ID, Craft, good_craft, hostile_cases
from faults import (
    Bench,
    Box,
    Manifest,
    Outcomes,
    Trial,
    copy_tree,
    difference,
    flip_byte,
    killed_output,
    loose_damaged,
    mutate_tree,
    oids_hit,
    pack_damaged,
    pack_index,
    rm_rf,
    store_files,
    timed,
    write_tree,
)

from rrstore import RollbackRecoverySystem
from rrstore.tree import reachable

LANE = ("--lane", "standard")


# --- kills ------------------------------------------------------------------------------------------


def _tree(bench: Bench, large: int = 3, small: int = 250) -> None:
    write_tree(bench.project, bench.rng, large=large, small=small)


def test_kill_checkpoint(tmp_path: Path, fault_outcomes: Outcomes) -> None:
    bench = Bench(tmp_path, fault_outcomes, "kill checkpoint")
    _tree(bench)
    bench.checkpoint()
    mutate_tree(bench.project, bench.rng)
    duration = timed(bench.box, "checkpoint", *LANE, "--step-number", "2", "--step-name", "timed")
    bench.known[_newest(bench)] = tree_manifest(bench.project)
    outside = bench.box.outside()
    for index, delay in enumerate(bench.delays(duration)):
        with fault_outcomes.trial(bench.operation, index) as trial:
            mutate_tree(bench.project, bench.rng, large=3, small=120)
            want = tree_manifest(bench.project)
            before = bench.ids(trial) or set()
            killed = bench.box.killed(("checkpoint", *LANE, "--step-number", "9", "--step-name", "killed"), delay)
            killed_output(trial, killed, "checkpoint")
            after = bench.ids(trial)
            if after is None:
                continue
            trial.expect(before <= after, "lost checkpoint", f"refs gone: {sorted(before - after)}")
            finished = {i: want for i in after - before}
            bench.verify(trial, {**bench.sample(), **finished})
            bench.known.update(finished)
            done = bench.box.run("checkpoint", *LANE, "--step-number", "10", "--step-name", "next")
            if trial.succeeded(done, "checkpoint after the kill"):
                bench.known[done.stdout.strip()] = want
                bench.verify(trial, {done.stdout.strip(): want})
            bench.no_escape(trial, outside)
    with fault_outcomes.trial(bench.operation, "final", count=False) as trial:
        bench.verify(trial, bench.known)
    fault_outcomes.check(bench.operation)


def _newest(bench: Bench) -> str:
    return str(json.loads(bench.box.run("list", "--json").stdout)[0]["checkpoint_id"])


def test_kill_restore(tmp_path: Path, fault_outcomes: Outcomes) -> None:
    """A killed restore leaves the old tree, the new one, or an undo checkpoint that gives the old one back."""
    bench = Bench(tmp_path, fault_outcomes, "kill restore")
    _tree(bench)
    first = bench.checkpoint()
    mutate_tree(bench.project, bench.rng, large=3, small=200)
    second = bench.checkpoint()
    duration = timed(bench.box, "restore", first)
    outside = bench.box.outside()
    for index, delay in enumerate(bench.delays(duration)):
        with fault_outcomes.trial(bench.operation, index) as trial:
            old = tree_manifest(bench.project)
            target = second if old == bench.known[first] else first
            before = bench.ids(trial) or set()
            killed = bench.box.killed(("restore", target), delay)
            killed_output(trial, killed, "restore")
            after = bench.ids(trial)
            if after is None:
                continue
            now = tree_manifest(bench.project)
            undo = sorted(after - before)
            for undo_id in undo:  # a finished undo checkpoint holds exactly the old tree
                bench.known[undo_id] = old
            if now not in (old, bench.known[target]):
                if not undo:
                    trial.fail("lost checkpoint", f"tree is neither old nor new and no undo: {difference(old, now)}")
                else:
                    done = bench.box.run("restore", undo[-1])
                    if trial.succeeded(done, "restore of the undo checkpoint"):
                        got = tree_manifest(bench.project)
                        trial.expect(got == old, "lost checkpoint", f"undo gave {difference(old, got)}")
            bench.verify(trial, {i: bench.known[i] for i in (first, second, *undo)})
            done = bench.box.run("restore", target)
            if trial.succeeded(done, "restore after the kill"):
                got = tree_manifest(bench.project)
                trial.expect(got == bench.known[target], "wrong byte", difference(bench.known[target], got))
            bench.no_escape(trial, outside)
    fault_outcomes.check(bench.operation)


def test_kill_gc(tmp_path: Path, fault_outcomes: Outcomes) -> None:
    """gc removes the docs lane's checkpoints and their objects; every kept one must survive a kill."""
    bench = Bench(tmp_path, fault_outcomes, "kill gc")
    _tree(bench)
    bench.checkpoint()
    mutate_tree(bench.project, bench.rng)
    bench.checkpoint()
    kept = dict(bench.known)
    gc = ("gc", "--older-than", "0s", "--keep-lane", "standard", "--grace", "0s")

    def garbage() -> None:
        for _ in range(2):
            mutate_tree(bench.project, bench.rng, large=2, small=60)
            bench.checkpoint("docs")

    garbage()
    duration = timed(bench.box, *gc)
    outside = bench.box.outside()
    for index, delay in enumerate(bench.delays(duration)):
        with fault_outcomes.trial(bench.operation, index) as trial:
            garbage()
            killed = bench.box.killed(gc, delay)
            killed_output(trial, killed, "gc")
            after = bench.ids(trial)
            if after is None:
                continue
            trial.expect(set(kept) <= after, "lost checkpoint", f"kept refs gone: {sorted(set(kept) - after)}")
            bench.verify(trial, kept)
            trial.succeeded(bench.box.run(*gc), "gc after the kill")
            bench.no_escape(trial, outside)
    with fault_outcomes.trial(bench.operation, "final", count=False) as trial:
        bench.verify(trial, kept)
    fault_outcomes.check(bench.operation)


def _source(tmp_path: Path, rng: random.Random) -> tuple[RollbackRecoverySystem, dict[str, Manifest]]:
    """A second project (outside the box) with two checkpoints of a large tree: what import and pull bring in."""
    root = tmp_path / "source"
    root.mkdir()
    write_tree(root, rng)
    system = RollbackRecoverySystem(root=root)
    known = {}
    for step in (1, 2):
        known[system.checkpoint("heavy", step, "source").checkpoint_id] = tree_manifest(root)
        mutate_tree(root, rng, large=3, small=150)
    return system, known


def _reset(bench: Bench, template: Path) -> None:
    rm_rf(bench.store)
    copy_tree(template, bench.store)


def _transfer_trials(bench: Bench, args: tuple[str, ...], source: dict[str, Manifest], template: Path) -> None:
    """Kill ``args`` (import or pull into the project's store), then check, finish and check again."""
    outcomes = bench.outcomes
    own = dict(bench.known)
    _reset(bench, template)
    duration = timed(bench.box, *args)
    outside = bench.box.outside()
    for index, delay in enumerate(bench.delays(duration)):
        with outcomes.trial(bench.operation, index) as trial:
            _reset(bench, template)
            killed = bench.box.killed(args, delay)
            killed_output(trial, killed, args[0])
            after = bench.ids(trial)
            if after is None:
                continue
            trial.expect(set(own) <= after, "lost checkpoint", f"refs gone: {sorted(set(own) - after)}")
            trial.expect(after <= set(own) | set(source), "other", f"unexpected refs {sorted(after)}")
            bench.verify(trial, {**own, **{i: m for i, m in source.items() if i in after}})
            if trial.succeeded(bench.box.run(*args), f"{args[0]} after the kill"):
                bench.verify(trial, source)
            bench.no_escape(trial, outside)
    outcomes.check(bench.operation)


def test_kill_import(tmp_path: Path, fault_outcomes: Outcomes) -> None:
    bench = Bench(tmp_path, fault_outcomes, "kill import")
    source, known = _source(tmp_path, bench.rng)
    archive = tmp_path / "source.rra"
    source.export(list(known), archive)
    _tree(bench, large=0, small=30)
    bench.checkpoint()
    template = tmp_path / "template-store"
    copy_tree(bench.store, template)
    _transfer_trials(bench, ("import", str(archive)), known, template)


def test_kill_pull(tmp_path: Path, fault_outcomes: Outcomes, seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> None:
    bench = Bench(tmp_path, fault_outcomes, "kill pull")
    bench.box.extra_env = dict(s3_env)
    source, known = _source(tmp_path, bench.rng)
    bucket, prefix = seaweedfs.new_prefix()
    remote = f"s3://{bucket}/{prefix}"
    source.push(list(known), remote, seaweedfs.endpoint)
    _tree(bench, large=0, small=30)
    bench.checkpoint()
    template = tmp_path / "template-store"
    copy_tree(bench.store, template)
    _transfer_trials(bench, ("pull", *known, "--remote", remote, "--endpoint-url", seaweedfs.endpoint),
                     known, template)


def test_kill_push(tmp_path: Path, fault_outcomes: Outcomes, seaweedfs: SeaweedFS, s3_env: dict[str, str]) -> None:
    """A killed push leaves a remote that the next push completes and from which every checkpoint restores."""
    bench = Bench(tmp_path, fault_outcomes, "kill push")
    bench.box.extra_env = dict(s3_env)
    _tree(bench)
    bench.checkpoint()
    mutate_tree(bench.project, bench.rng, large=3, small=150)
    bench.checkpoint()
    endpoint = ("--endpoint-url", seaweedfs.endpoint)

    def place() -> str:
        bucket, prefix = seaweedfs.new_prefix()
        return f"s3://{bucket}/{prefix}"

    duration = timed(bench.box, "push", "--remote", place(), *endpoint)
    outside = bench.box.outside()
    for index, delay in enumerate(bench.delays(duration)):
        with fault_outcomes.trial(bench.operation, index) as trial:
            remote = place()
            killed = bench.box.killed(("push", "--remote", remote, *endpoint), delay)
            killed_output(trial, killed, "push")
            if bench.ids(trial) is None:
                continue
            listed = bench.box.run("list", "--remote", remote, *endpoint)
            trial.clean_output(listed, "list --remote after the kill")
            trial.expect(listed.returncode in (0, 10), "other", f"list --remote: exit {listed.returncode}")
            bench.verify(trial, bench.sample(1))
            if not trial.succeeded(bench.box.run("push", "--remote", remote, *endpoint), "push after the kill"):
                continue
            pulled = tmp_path / f"pulled{index}"
            (pulled / "root").mkdir(parents=True)
            done = bench.box.run("--store", str(pulled / "store"), "-C", str(pulled / "root"), "pull",
                                 *bench.known, "--remote", remote, *endpoint, cwd=pulled / "root")
            if trial.succeeded(done, "pull of what was pushed"):
                bench.verify(trial, bench.known, store=pulled / "store")
            rm_rf(pulled)
            bench.no_escape(trial, outside)
    fault_outcomes.check(bench.operation)


# --- byte flips -------------------------------------------------------------------------------------

FLIP_KINDS = {"record": "objects/*/*", "pack data": "packs/*.pack", "pack index": "packs/*.idx",
              "ref": "refs/checkpoints/*", "config": "config.json", "stat cache": "cache/stat-*",
              "lock": "locks/*.lock"}


@pytest.fixture(scope="module")
def flip_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Manifest], dict[str, set[str]]]:
    """A project with three checkpoints (a chunked file, small files) and every kind of store file.

    Returns the project, the three checkpoints' manifests, and every
    checkpoint's objects (its record, trees and contents) for the flips' oracle.
    """
    box = Box.make(tmp_path_factory.mktemp("flips"))
    rng = random.Random(7)
    write_tree(box.project, rng, large=1, small=40, large_size=5 << 20)
    ids: list[str] = []
    manifests: dict[str, Manifest] = {}
    for step in (1, 2, 3):
        done = box.run("checkpoint", *LANE, "--step-number", str(step), "--step-name", "flip")
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
        manifests[ids[-1]] = tree_manifest(box.project)
        mutate_tree(box.project, rng, large=1, small=15)
    for checkpoint_id in (ids[1], ids[2]):  # restores leave a pid in the worktree lock and pre-restore records
        assert box.run("restore", checkpoint_id).returncode == 0
    store = box.project / ".checkpoints"
    objects = RollbackRecoverySystem(root=box.project).open_store().objects
    reach = {}
    for ref in sorted((store / "refs" / "checkpoints").iterdir()):  # pre-restore checkpoints reach objects too
        checkpoint_id = ref.name
        record_oid = _ref_oid(ref.read_bytes())
        state_hash = RollbackRecoverySystem(root=box.project).show(checkpoint_id).state_hash
        reach[checkpoint_id] = {record_oid, *reachable(objects, state_hash)}
    for kind, pattern in FLIP_KINDS.items():
        assert [p for p in store.glob(pattern) if p.stat().st_size], f"no {kind} file to flip"
    return box.path, manifests, reach


def _ref_oid(data: bytes) -> str:
    """The record oid a ref names: its first line, without surrounding white space."""
    return data.split(b"\n", 1)[0].strip().decode("ascii", "replace")


def _flip_oracle(kind: str, path: Path, store: Path, original: bytes, rng: random.Random,
                 reach: dict[str, set[str]]) -> tuple[set[str], bool | None]:
    """Flip one byte of ``path``; return (checkpoints that must still restore, whether content was damaged).

    ``None`` for damage means no claim (the stat cache: check may or may not mention it).
    """
    every = set(reach)
    entries = pack_index(path.with_suffix(".idx")) if kind in ("pack data", "pack index") else []
    at = flip_byte(path, rng)
    if kind == "record":  # no claim on damage to a loose object no checkpoint reaches
        oid = path.parent.name + path.name
        reached = any(oid in objects for objects in reach.values())
        return {i for i in every if oid not in reach[i]}, (loose_damaged(path, oid) if reached else None)
    if kind in ("pack data", "pack index"):
        hit = oids_hit(entries, at) if kind == "pack data" else {e[0] for e in entries}
        damaged = pack_damaged(path, entries, at) if kind == "pack data" else True
        return {i for i in every if not hit & reach[i]}, damaged
    if kind == "ref":  # the first line names the record; a damaged later line (the add time) costs no checkpoint
        same = _ref_oid(path.read_bytes()) == _ref_oid(original)
        return (every if same else every - {path.name}), (None if same else True)
    if kind == "config":
        try:
            intact = json.loads(path.read_bytes()).get("format") in ("rrstore-store-1", "rrstore-store-2")
        except (ValueError, UnicodeDecodeError, AttributeError):
            intact = False
        return (every if intact else set()), not intact
    return every, (None if kind == "stat cache" else False)


def test_byte_flips(tmp_path: Path, fault_outcomes: Outcomes,
                    flip_template: tuple[Path, dict[str, Manifest], dict[str, set[str]]]) -> None:
    """One flipped byte in any store file: never a wrong byte, never a traceback, refusals change nothing.

    Derived files (stat cache, pack indexes) and unrelated damage never block
    a checkpoint that does not need the damaged bytes; the undo checkpoint of
    a successful restore gives the tree back; ``check`` reports real damage.
    """
    template, manifests, reach = flip_template
    rng = fault_outcomes.settings.rng("flips")
    kinds = list(FLIP_KINDS)
    for index in range(max(fault_outcomes.settings.flips, len(kinds))):
        kind = kinds[index % len(kinds)]
        with fault_outcomes.trial(f"flip {kind}", index) as trial:
            box = Box(tmp_path / f"flip{index}")
            shutil.copytree(template, box.path, symlinks=True)
            store = box.project / ".checkpoints"
            path = rng.choice(sorted(p for p in store.glob(FLIP_KINDS[kind]) if p.stat().st_size))
            original = path.read_bytes()
            must, damaged = _flip_oracle(kind, path, store, original, rng, reach)
            where = f"{path.relative_to(store)}"
            outside = box.outside()
            _check_reports(trial, box, kind, damaged, where)
            refused = _restore_all(trial, box, manifests, must, where)
            if kind in ("stat cache", "lock"):
                _checkpoint_after(trial, box, where)
            if refused:  # what a restore refused for, check sees too (restores may heal the rest)
                done = box.run("check", "--read-data")
                trial.expect(done.returncode == 13, "other", f"{where}: check --read-data missed what restore saw")
            trial.expect(box.outside() == outside, "escape", f"{where}: outside changed")
            rm_rf(box.path)
    fault_outcomes.check(*(f"flip {kind}" for kind in kinds))


def _restore_all(trial: Trial, box: Box, manifests: dict[str, Manifest], must: set[str], where: str) -> bool:
    """Restore every checkpoint in turn, then the first undo; True if any restore was refused."""
    refused, undo = False, None
    for checkpoint_id, want in manifests.items():
        before = tree_manifest(box.project)
        done = box.run("--json", "restore", "--force", checkpoint_id)  # the template's: another path, project
        got = tree_manifest(box.project)
        if not trial.clean_output(done, f"{where}: restore {checkpoint_id}"):
            continue
        if done.returncode == 0:
            trial.expect(got == want, "wrong byte", f"{where}: restore {checkpoint_id}: {difference(want, got)}")
            if undo is None and json.loads(done.stdout).get("undo_checkpoint_id"):
                undo = (json.loads(done.stdout)["undo_checkpoint_id"], before)
        elif done.returncode == 13:
            refused = True
            trial.expect(got == before, "wrong byte", f"{where}: refused restore changed {difference(before, got)}")
            trial.expect(checkpoint_id not in must, "lost checkpoint",
                         f"{where}: restore {checkpoint_id} refused, it does not need the damaged bytes: "
                         f"{done.stderr.strip()}")
            trial.expect(len(done.stderr.splitlines()) == 1, "other", f"{where}: not one line: {done.stderr}")
        else:
            trial.fail("other", f"{where}: restore {checkpoint_id}: exit {done.returncode}: {done.stderr.strip()}")
    if undo is not None:  # the undo of a restore that exited 0 must give back what it replaced
        done = box.run("restore", undo[0])
        got = tree_manifest(box.project)
        if trial.clean_output(done, f"{where}: restore of the undo {undo[0]}"):
            trial.expect(done.returncode == 0 and got == undo[1], "lost checkpoint",
                         f"{where}: undo {undo[0]}: exit {done.returncode} {done.stderr.strip()} "
                         f"{difference(undo[1], got)}")
    return refused


def _checkpoint_after(trial: Trial, box: Box, where: str) -> None:
    """After damage to a file that only costs speed, a checkpoint still records exactly the tree."""
    (box.project / "after-the-flip.txt").write_bytes(b"new\n")
    want = tree_manifest(box.project)
    done = box.run("checkpoint", *LANE, "--step-number", "4", "--step-name", "after")
    if not trial.succeeded(done, f"{where}: checkpoint"):
        return
    scratch = box.path.parent / f"{box.path.name}-scratch"
    scratch.mkdir()
    done = box.run("--store", str(box.project / ".checkpoints"), "-C", str(scratch), "restore", "--force",
                   done.stdout.strip(), cwd=scratch)
    if trial.succeeded(done, f"{where}: restore of the checkpoint taken after the flip"):
        got = tree_manifest(scratch)
        trial.expect(got == want, "wrong byte", f"{where}: the checkpoint after the flip: {difference(want, got)}")
    rm_rf(scratch)


def _check_reports(trial: Trial, box: Box, kind: str, damaged: bool | None, where: str) -> None:
    """Right after the flip, ``rrstore check`` (metadata) and ``check --read-data`` report real damage, only that.

    (After the restores the damaged objects may have been stored again from
    the working tree, so the oracle holds only before them.)
    """
    plain = box.run("check")
    full = box.run("check", "--read-data")
    for done, what in ((plain, "check"), (full, "check --read-data")):
        if trial.clean_output(done, f"{where}: {what}"):
            trial.expect(done.returncode in (0, 13), "other", f"{where}: {what} exit {done.returncode}")
    if damaged and kind != "stat cache":
        trial.expect(full.returncode == 13, "other", f"{where}: check --read-data missed the damage")
    if damaged and kind in ("record", "pack index", "ref", "config"):
        trial.expect(plain.returncode == 13, "other", f"{where}: check missed the damage")
    if damaged is False:
        trial.expect(full.returncode == 0, "other", f"{where}: check --read-data reports damage where there is none: "
                     f"{full.stdout[-300:]} {full.stderr[-300:]}")


# --- hostile archives, remotes and stores -------------------------------------------------------------

HOSTILE = hostile_cases()
TREE_CASES = [name for name, case in HOSTILE.items() if case.tree]
# A checkpoint may hold a symlink leading out (export refuses it, tar keeps it): only archives and pulls refuse one.
STORE_TREE_CASES = [name for name in TREE_CASES if "symlink" not in name]
# The default suite pulls these; the larger form (--fault-trials >= 10) pulls every tree class.
PULL_DEFAULT = (".git/hooks/post-checkout", ".checkpoints/refs/checkpoints/<existing id>", "absolute symlink",
                "name ..", "unencodable name (lone surrogate)")
# restore and pull refuse a tree holding a name never written (UnsafeTree, 17) or a malformed one (13); archives: 16.
REFUSED_TREE = (13, 17)


@pytest.fixture(scope="module")
def hostile_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A box whose project is a git work tree with one checkpoint in the default store: (box, checkpoint id)."""
    box = Box.make(tmp_path_factory.mktemp("hostile"))
    git(box.project, "init", "-q", "-b", "main")
    (box.project / "README.md").write_text("# demo\n")
    git(box.project, "add", "-A")
    git(box.project, "commit", "-q", "-m", "initial")
    done = box.run("checkpoint", *LANE, "--step-number", "1", "--step-name", "mine")
    assert done.returncode == 0, done.stderr
    return box.path, done.stdout.strip()


def _hostile_box(tmp_path: Path, template: Path) -> Box:
    box = Box(tmp_path / "box")
    shutil.copytree(template, box.path, symlinks=True)
    return box


def _state(box: Box) -> tuple[dict[str, str], Manifest, Manifest]:
    """The store (every file but locks), the project with .git, and everything beside it.

    ``.git/index`` is left out: git refreshes the stat data it caches there
    whenever rrstore asks it for the status; a planted hook or config is elsewhere.
    """
    project = tree_manifest(box.project, skip=(".checkpoints",))
    project.pop(".git/index", None)
    return store_files(box.project / ".checkpoints"), project, box.outside()


def _refused(trial: Trial, box: Box, done: subprocess.CompletedProcess[str], codes: tuple[int, ...],
             before: tuple[dict[str, str], Manifest, Manifest], what: str) -> None:
    """Refused in one line with a documented code, and nothing changed anywhere."""
    if trial.clean_output(done, what):
        trial.expect(done.returncode in codes, "other", f"{what}: exit {done.returncode}, want {codes}: "
                     f"{done.stderr.strip()[:300]}")
        trial.expect(len(done.stderr.splitlines()) == 1, "other", f"{what}: not one line: {done.stderr[:500]}")
    store, project, outside = _state(box)
    trial.expect(store == before[0], "other", f"{what}: the store changed: "
                 f"{sorted(set(store) ^ set(before[0]) | {k for k in store if before[0].get(k) != store[k]})[:5]}")
    trial.expect(project == before[1], "escape", f"{what}: the project changed: {difference(before[1], project)}")
    trial.expect(outside == before[2], "escape", f"{what}: outside changed: {difference(before[2], outside)}")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive(case: str, tmp_path: Path, hostile_template: tuple[Path, str],
                         fault_outcomes: Outcomes) -> None:
    """verify and import refuse it (exit 16, one line) and leave the store, the project and .git as they were."""
    with fault_outcomes.trial("hostile archive", case) as trial:
        box = _hostile_box(tmp_path, hostile_template[0])
        built = HOSTILE[case].build(hostile_template[1], box.path)
        archive = tmp_path / "evil.rra"
        archive.write_bytes(built.archive() if isinstance(built, Craft) else built)
        before = _state(box)
        commands = ("verify", "import")
        for command, done in zip(commands, box.run_all(*((c, str(archive)) for c in commands)), strict=True):
            _refused(trial, box, done, (16,), before, f"{case}: {command}")
    fault_outcomes.check("hostile archive", trial=case)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name != "test_hostile_tree":
        return
    trials = metafunc.config.getoption("--fault-trials") or int(os.environ.get("RRSTORE_FAULT_TRIALS") or 0)
    pulled = TREE_CASES if trials >= 10 else [c for c in TREE_CASES if c in PULL_DEFAULT]
    metafunc.parametrize(("case", "route"), [(c, "restore") for c in STORE_TREE_CASES]
                         + [(c, "pull") for c in pulled], ids=lambda v: str(v))


def test_hostile_tree(case: str, route: str, tmp_path: Path, hostile_template: tuple[Path, str],
                      fault_outcomes: Outcomes, request: pytest.FixtureRequest) -> None:
    """The same trees with consistent hashes: pulled from a hand-built remote, restored from a hand-built store."""
    operation = f"hostile {route}"
    with fault_outcomes.trial(operation, case) as trial:
        box = _hostile_box(tmp_path, hostile_template[0])
        built = HOSTILE[case].build(hostile_template[1], box.path)
        assert isinstance(built, Craft)
        if route == "restore":
            built.into_store(box.project / ".checkpoints")
            args: tuple[str, ...] = ("restore", EVIL_ID)
        else:
            remote = _crafted_remote(built, box, request)
            args = ("pull", EVIL_ID, *remote)
        before = _state(box)
        _refused(trial, box, box.run(*args), REFUSED_TREE, before, f"{case}: {route}")
    fault_outcomes.check(operation, trial=case)


def _crafted_remote(craft: Craft, box: Box, request: pytest.FixtureRequest) -> tuple[str, ...]:
    seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
    box.extra_env = dict(request.getfixturevalue("s3_env"))
    bucket, prefix = seaweedfs.new_prefix()
    craft.into_remote(seaweedfs.client(), bucket, prefix)
    return ("--remote", f"s3://{bucket}/{prefix}", "--endpoint-url", seaweedfs.endpoint)


def _restored(root: Path) -> dict[bytes, bytes | str]:
    out: dict[bytes, bytes | str] = {}
    for dirpath, _, names in os.walk(os.fsencode(root)):
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, os.fsencode(root))
            out[rel] = os.fsdecode(os.readlink(full)) if os.path.islink(full) else Path(os.fsdecode(full)).read_bytes()
    return out


@pytest.mark.parametrize("route", ["import", "pull", "restore"])
def test_crafted_control_is_accepted(route: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The crafting helper is right: a well-formed crafted checkpoint goes through every route and restores."""
    craft, want = good_craft()
    box = Box.make(tmp_path)
    store = box.project / ".checkpoints"
    if route == "import":
        (tmp_path / "good.rra").write_bytes(craft.archive())
        done = box.run("import", str(tmp_path / "good.rra"))
    elif route == "pull":
        done = box.run("pull", EVIL_ID, *_crafted_remote(craft, box, request))
    else:
        craft.into_store(store, config=True)
        done = subprocess.CompletedProcess([], 0, "", "")
    assert done.returncode == 0, done.stderr
    assert box.run("restore", EVIL_ID).returncode == 0
    got = {k: v for k, v in _restored(box.project).items() if not k.startswith(b".checkpoints/")}
    assert got == want
    assert os.stat(box.project / "run.sh").st_mode & 0o100


def test_a_record_from_the_future_is_never_latest(tmp_path: Path) -> None:
    """A record dated 9999-12-31 is accepted, but 'latest' is the checkpoint this store added last."""
    craft, _ = good_craft("9999-12-31T23:59:59.000000+00:00", "standard-step9-99991231_235959")
    box = Box.make(tmp_path)
    (box.project / "mine.txt").write_bytes(b"mine\n")
    (tmp_path / "future.rra").write_bytes(craft.archive())
    assert box.run("import", str(tmp_path / "future.rra")).returncode == 0
    made = box.run("checkpoint", *LANE, "--step-number", "2", "--step-name", "after")
    assert made.returncode == 0, made.stderr
    shown = box.run("show", "latest", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["checkpoint_id"] == made.stdout.strip()


def test_a_10000_level_archive_breaks_nothing(tmp_path: Path) -> None:
    """verify/import accept or refuse it cleanly; if imported, list, gc and restore still work (no RecursionError)."""
    craft = Craft()
    entry = craft.file("leaf.txt", b"deep\n")
    for _ in range(10_000):
        entry = {"name": "d", "type": "dir", "tree": craft.tree(entry)}
    craft.checkpoint(EVIL_ID, craft.tree(entry))
    box = Box.make(tmp_path)
    archive = tmp_path / "deep.rra"
    archive.write_bytes(craft.archive())
    assert box.run("checkpoint", *LANE, "--step-number", "1", "--step-name", "mine").returncode == 0
    try:
        runs = [box.run("verify", str(archive)), box.run("import", str(archive))]
        if runs[-1].returncode == 0:
            runs += [box.run("list"), box.run("gc", "--dry-run"), box.run("restore", EVIL_ID)]
            assert runs[2].returncode == 0 and runs[3].returncode == 0, (runs[2].stderr, runs[3].stderr)
        for done in runs:
            assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr, done.stderr[-2000:]
            assert done.returncode in (0, 3, 13, 16), (done.args, done.returncode, done.stderr[-500:])
            assert len(done.stderr.splitlines()) <= 1 or done.returncode == 0, done.stderr[-1000:]
    finally:
        rm_rf(box.project / "d")
