"""gc retention through the API, with an injected clock: what goes, what stays, keep-last, keep-lane, pins,
durations, and records dated in the future.

Time is never waited for: ``system.gc(policy, now=...)`` takes the clock, and a ``now`` days ahead makes
checkpoints "old" and every object older than the grace period.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from gc_helpers import (
    DAY,
    Manifest,
    Scenario,
    assert_consistent,
    aware_now,
    between,
    build,
    fresh,
    loose_oids,
    manifest_of_state,
    pack_ids,
    packed_oids,
    reach,
    ref_ids,
    restore_matches,
    small_state,
    state_a,
    state_c,
    store_files,
    store_of,
    stored_bytes,
    write_state,
)

from rrstore import RollbackRecoverySystem
from rrstore.errors import CheckpointNotFound, ObjectMissing, UsageError
from rrstore.gc import Retention, parse_duration
from rrstore.record import CheckpointRecord
from rrstore.worktree.gitrepo import project_identity


@pytest.fixture
def scenario(project: Path, manifest: Manifest) -> Scenario:
    """Checkpoints a (old), c (old, nothing shared) and b (young, shares with a): see ``gc_helpers.build``."""
    return build(project, manifest)


# --- retention and sweep through the API ------------------------------------------------------------------


def test_old_checkpoints_and_only_their_objects_go_kept_ones_restore_identically(
        scenario: Scenario, project: Path, manifest: Manifest) -> None:
    s = scenario
    reach_a, reach_b, reach_c = reach(s.store, s.a), reach(s.store, s.b), reach(s.store, s.c)
    packs_b = pack_ids(s.store) - s.packs_a - s.packs_c
    dead = (reach_a | reach_c) - reach_b
    shared = reach_a & reach_b
    # orphans, as a killed checkpoint leaves them: a loose object and a pack nothing reaches
    orphans = fresh(s.store)
    orphan_loose = orphans.put(b"orphan loose object", loose=True).oid
    orphan_packed = orphans.put(b"orphan packed object").oid
    orphans.flush()
    [orphan_pack] = pack_ids(s.store) - s.packs_a - s.packs_c - packs_b
    dead |= {orphan_loose, orphan_packed}
    loose, packed = loose_oids(s.store), packed_oids(s.store)
    # the scenario covers what it claims: dead objects loose (records, the orphan) and packed, shared ones packed
    assert {s.a.record_oid, s.c.record_oid, orphan_loose} <= dead & loose
    assert len(dead & set(packed)) > 3 and len(shared & set(packed)) > 3
    assert len(s.packs_a) == 1 and len(s.packs_c) == 1
    [pack_a], [pack_c] = s.packs_a, s.packs_c
    assert {p for oid in shared & set(packed) for p in packed[oid]} == {pack_a}  # shared small files live in a's pack
    assert all(packed[oid] == {pack_c} for oid in reach_c if oid in packed)  # c's pack holds only c's objects
    assert reach_c & reach_b == set()

    disk_before = stored_bytes(s.store)
    result = s.system.gc(Retention(), now=s.now)

    assert result.removed == [s.c.checkpoint_id, s.a.checkpoint_id]
    assert result.kept == [s.b.checkpoint_id]
    assert result.bytes_freed == disk_before - stored_bytes(s.store) > 0
    assert result.success and not result.dry_run
    assert ref_ids(s.store) == {s.b.checkpoint_id}
    assert [r.checkpoint_id for r in s.system.list().checkpoints] == [s.b.checkpoint_id]
    # exactly what b reaches is left, whether it was loose or packed
    assert set(fresh(s.store)) == reach_b
    assert result.objects_removed == len(dead)
    objects = fresh(s.store)
    for oid in dead:
        assert not objects.has(oid)
        with pytest.raises(ObjectMissing):
            objects.get(oid)
    for oid in reach_b:
        objects.get(oid)
    assert loose_oids(s.store) == (loose & reach_b)
    # a's pack had dead and live objects: rewritten (the old file gone, its live objects elsewhere);
    # c's pack had only dead ones: deleted
    assert pack_a not in pack_ids(s.store) and pack_c not in pack_ids(s.store)
    assert result.packs_rewritten >= 1
    for gone in (pack_c, orphan_pack):
        assert not list((s.store / "packs").glob(f"{gone}.*"))
    assert packs_b <= pack_ids(s.store)  # b's own pack had nothing dead: left alone
    assert_consistent(s.store)

    restore_matches(s.system, project, s.b.checkpoint_id, s.want_b, manifest, state_a())


def test_dry_run_removes_nothing_and_reports_what_gc_then_removes(scenario: Scenario) -> None:
    s = scenario
    before = store_files(s.store)
    dry = s.system.gc(Retention(), now=s.now, dry_run=True)
    assert store_files(s.store) == before
    assert dry.dry_run
    assert dry.removed == [s.c.checkpoint_id, s.a.checkpoint_id] and dry.kept == [s.b.checkpoint_id]
    assert dry.objects_removed > 0 and dry.bytes_freed > 0
    assert "would remove" in dry.message

    real = RollbackRecoverySystem(root=s.system.root).gc(Retention(), now=s.now)
    assert (real.removed, real.kept, real.objects_removed) == (dry.removed, dry.kept, dry.objects_removed)
    assert real.to_json()["records_removed"] == dry.to_json()["records_removed"] == 2
    assert real.bytes_freed > 0


def test_a_second_gc_right_after_removes_nothing(scenario: Scenario) -> None:
    s = scenario
    first = s.system.gc(Retention(), now=s.now)
    assert first.changed
    after_first = store_files(s.store)
    second = s.system.gc(Retention(), now=s.now)
    assert not second.changed
    assert (second.removed, second.objects_removed, second.packs_rewritten, second.tmp_removed) == ([], 0, 0, 0)
    assert second.kept == [s.b.checkpoint_id]
    assert store_files(s.store) == after_first
    # also from another process's point of view (a fresh system, a later clock)
    third = RollbackRecoverySystem(root=s.system.root).gc(Retention(), now=s.now)
    assert not third.changed and third.objects_removed == 0
    assert store_files(s.store) == after_first


def test_everything_old_with_nothing_kept_empties_the_store(scenario: Scenario) -> None:
    s = scenario
    result = s.system.gc(Retention(), now=s.b.created + 30 * DAY)
    assert sorted(result.removed) == sorted([s.a.checkpoint_id, s.b.checkpoint_id, s.c.checkpoint_id])
    assert result.kept == []
    assert ref_ids(s.store) == set()
    assert set(fresh(s.store)) == set()
    assert pack_ids(s.store) == set() and loose_oids(s.store) == set()


def test_grace_period_spares_young_unreachable_objects(scenario: Scenario) -> None:
    s = scenario
    dead = (reach(s.store, s.a) | reach(s.store, s.c)) - reach(s.store, s.b)
    tmp = s.store / "tmp"
    old_tmp, young_tmp = tmp / "leftover-old", tmp / "leftover-young"
    old_tmp.write_bytes(b"interrupted write")
    young_tmp.write_bytes(b"in-flight write")
    hour_ago = time.time() - 3600
    os.utime(old_tmp, (hour_ago, hour_ago))

    # the real clock: a and c are old by the rule (0s), but everything was written seconds ago
    young = s.system.gc(Retention(older_than=timedelta(0), keep_last=1), now=aware_now())
    assert young.removed == [s.c.checkpoint_id, s.a.checkpoint_id]
    assert young.objects_removed == 0 and young.bytes_freed == 0 and young.packs_rewritten == 0
    assert young.tmp_removed == 1
    assert not old_tmp.exists() and young_tmp.exists()
    objects = fresh(s.store)
    for oid in dead:
        objects.get(oid)  # not swept yet

    # a day later every one of them is past the grace period
    later = s.system.gc(Retention(older_than=timedelta(0), keep_last=1), now=aware_now() + DAY)
    assert later.removed == [] and later.kept == [s.b.checkpoint_id]
    assert later.objects_removed == len(dead)
    assert later.tmp_removed == 1 and not young_tmp.exists()
    assert set(fresh(s.store)) == reach(s.store, s.b)


def test_naive_now_is_taken_as_local_time(scenario: Scenario) -> None:
    s = scenario
    naive = s.now.astimezone().replace(tzinfo=None)
    result = s.system.gc(Retention(), now=naive, dry_run=True)
    assert result.removed == [s.c.checkpoint_id, s.a.checkpoint_id]


# --- keep-last, keep-lane, pins ---------------------------------------------------------------------------


def test_keep_last_counts_step_checkpoints_per_lane_and_keep_lane_keeps_a_lane(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    made: dict[str, CheckpointRecord] = {}
    for n, (lane, step) in enumerate([("standard", 1), ("standard", 2), ("docs", 1), ("heavy", 1),
                                      ("standard", 3), ("heavy", 2)]):
        write_state(project, small_state(n))
        made[f"{lane}{step}"] = system.checkpoint(lane, step, f"{lane} {step}").record
    write_state(project, small_state(99))
    undo_id = system.restore(made["standard1"].checkpoint_id).undo_checkpoint_id  # a pre-restore in 'standard'
    assert undo_id is not None
    undo = system.show(undo_id)
    assert undo.kind == "pre-restore" and undo.lane == "standard"
    ids = {k: r.checkpoint_id for k, r in made.items()}
    now = undo.created + 30 * DAY

    def split(policy: Retention) -> tuple[set[str], set[str]]:
        result = system.gc(policy, now=now, dry_run=True)
        return set(result.kept), set(result.removed)

    everything = {*ids.values(), undo_id}
    assert split(Retention()) == (set(), everything)
    kept, removed = split(Retention(keep_last=2))
    # the undo point is newer than standard3 but neither counts towards nor is kept by keep-last
    assert kept == {ids["standard3"], ids["standard2"], ids["docs1"], ids["heavy2"], ids["heavy1"]}
    assert removed == {ids["standard1"], undo_id}
    kept, _ = split(Retention(keep_last=1))
    assert kept == {ids["standard3"], ids["docs1"], ids["heavy2"]}
    kept, _ = split(Retention(keep_lanes=("heavy",)))
    assert kept == {ids["heavy1"], ids["heavy2"]}
    kept, _ = split(Retention(keep_lanes=("standard",)))
    assert kept == {ids["standard1"], ids["standard2"], ids["standard3"], undo_id}
    kept, _ = split(Retention(keep_last=1, keep_lanes=("docs", "heavy")))
    assert kept == {ids["standard3"], ids["docs1"], ids["heavy1"], ids["heavy2"]}
    # young ones are kept whatever keep-last says
    kept, _ = split(Retention(older_than=now - between(made["docs1"], made["heavy1"])))
    assert kept == {ids["heavy1"], ids["standard3"], ids["heavy2"], undo_id}

    result = system.gc(Retention(keep_last=1, keep_lanes=("docs",)), now=now)
    assert ref_ids(store_of(system)) == {ids["standard3"], ids["docs1"], ids["heavy2"]}
    assert set(result.removed) == everything - {ids["standard3"], ids["docs1"], ids["heavy2"]}
    assert_consistent(store_of(system))


@pytest.mark.parametrize("bad", [{"keep_last": -1}, {"keep_lanes": ("nightly",)}])
def test_retention_refuses_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Retention(**bad)  # type: ignore[arg-type]


def test_pin_and_unpin_through_the_api(scenario: Scenario, project: Path, manifest: Manifest) -> None:
    s = scenario
    system = s.system
    a_id = s.a.checkpoint_id
    assert system.pin(a_id) == (a_id, True)
    assert system.pin(a_id) == (a_id, False)
    assert system.pinned() == {a_id}
    assert system.pin("latest") == (s.b.checkpoint_id, True)  # 'latest' pins the real id
    assert system.pinned() == {a_id, s.b.checkpoint_id}
    assert system.unpin("latest") == (s.b.checkpoint_id, True)
    assert (s.store / "refs" / "pins" / a_id).is_file() and not (s.store / "refs" / "pins" / "latest").exists()
    with pytest.raises(CheckpointNotFound):
        system.pin("standard-step9-19990101_000000")

    far = s.b.created + 30 * DAY
    result = system.gc(Retention(), now=far)
    assert result.kept == [a_id]
    assert set(result.removed) == {s.b.checkpoint_id, s.c.checkpoint_id}
    assert set(fresh(s.store)) == reach(s.store, s.a)
    want_a = manifest_of_state(project, state_a(), manifest)
    restore_matches(system, project, a_id, want_a, manifest, state_c())

    assert system.unpin(a_id) == (a_id, True)
    assert system.unpin(a_id) == (a_id, False)
    assert system.pinned() == set()
    later = system.gc(Retention(), now=far + DAY)
    assert a_id in later.removed
    assert a_id not in ref_ids(s.store)


# --- durations ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text_in", "expected"), [
    ("7d", timedelta(days=7)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
    ("0s", timedelta(0)), ("2w", timedelta(weeks=2)), ("15m", timedelta(minutes=15)),
    ("45s", timedelta(seconds=45)), ("1.5h", timedelta(minutes=90)),
])
def test_parse_duration_accepts(text_in: str, expected: timedelta) -> None:
    assert parse_duration(text_in) == expected


@pytest.mark.parametrize("junk", ["", "7", "d", "7x", "-1d", "7dd", "1e3s", "seven days", "7d3h", "1.2.3d",
                                  "99999999999w"])
def test_parse_duration_refuses_junk(junk: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(junk)
    assert "duration" in str(info.value)


def test_a_future_dated_record_ages_from_when_the_store_got_it(project: Path, tmp_path: Path) -> None:
    """A record dated 9999-12-31 (from an archive) must not be 'young' forever: retention counts from its
    add time, so it goes once that is older than --older-than like any other checkpoint."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "f.txt").write_text("from the future\n")
    other = RollbackRecoverySystem(root=source)
    record = other.checkpoint("standard", 5, "time traveller").record
    record.timestamp = "9999-12-31T23:59:59.000000+00:00"
    record.project = project_identity(project)  # one project's, so keep-last counts the two together
    with other.open_store().writing():
        other.checkpoint_manager.update(record)
    other.export([record.checkpoint_id], tmp_path / "future.rra")
    (project / "f.txt").write_text("local\n")
    system = RollbackRecoverySystem(root=project)
    system.import_archive(tmp_path / "future.rra")
    local = system.checkpoint("standard", 1, "local").checkpoint_id

    result = system.gc(Retention(older_than=7 * DAY, keep_last=1), now=datetime.now() + 8 * DAY)

    assert result.removed == [record.checkpoint_id] and result.kept == [local]


def test_a_run_in_progress_keeps_every_checkpoint_a_resume_may_need() -> None:
    """Fails before the fix: ``--keep-last 1`` and the age rule removed step 1 of a run whose step 2
    failed yesterday, so a resume of that run (here or on another runner) found nothing to start from.
    A run that finished, or whose newest step is past the age limit, is not kept for being a run."""
    from rrstore.gc import select

    now = datetime.now().astimezone()

    def rec(checkpoint_id: str, days: float, success: bool, run: str) -> CheckpointRecord:
        when = now - timedelta(days=days)
        return CheckpointRecord(checkpoint_id, "standard", int(checkpoint_id[-1]), "s", when.isoformat(), "0" * 64,
                                success=success, run={"id": run} if run else {}, project="p",
                                added_ns=int(when.timestamp() * 1e9))

    records = [rec("live-2", 1, False, "r-live"),    # failed yesterday: the run is in progress
               rec("done-2", 2, True, "r-done"),     # a run that ended well
               rec("live-1", 9, True, "r-live"),
               rec("done-1", 9, True, "r-done"),
               rec("stale-2", 20, False, "r-stale"),  # failed 20 days ago: abandoned
               rec("stale-1", 21, True, "r-stale"),
               rec("solo-1", 30, True, "")]
    kept, removed = select(records, set(), Retention(older_than=timedelta(days=7), keep_last=1), now)
    assert [r.checkpoint_id for r in kept] == ["live-2", "done-2", "live-1"]
    assert [r.checkpoint_id for r in removed] == ["done-1", "stale-2", "stale-1", "solo-1"]
