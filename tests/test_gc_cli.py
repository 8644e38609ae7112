"""gc, pin and unpin through the real CLI, as cron runs them: output, --json shape, bad values.

The CLI has no clock option, so these tests use ``--older-than 0s --grace 0s``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gc_helpers import (
    BIG,
    JSON_KEYS,
    Cli,
    State,
    rand,
    ref_ids,
    small_state,
    store_files,
    store_of,
    write_state,
)

from rrstore import RollbackRecoverySystem


def test_pin_latest_and_unpin_through_the_cli(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    write_state(project, small_state(1))
    old = system.checkpoint("standard", 1, "old").checkpoint_id
    write_state(project, small_state(2))
    newest = system.checkpoint("standard", 2, "newest").checkpoint_id
    store = store_of(system)

    out = cli("pin", "latest", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"pinned {newest}" and out.stdout == ""
    assert set(os.listdir(store / "refs" / "pins")) == {newest}
    out = cli("pin", "latest", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"checkpoint_id": newest, "pinned": True, "changed": False}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", cwd=project)
    assert out.returncode == 0, out.stderr
    assert ref_ids(store) == {newest}
    assert old in out.stdout and newest not in out.stdout

    out = cli("unpin", newest, cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"unpinned {newest}"
    out = cli("unpin", newest, "--json", cwd=project)
    assert json.loads(out.stdout) == {"checkpoint_id": newest, "pinned": False, "changed": False}
    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed"] == [newest]
    assert ref_ids(store) == set()

    out = cli("pin", "standard-step9-19990101_000000", cwd=project)
    assert out.returncode == 12
    assert len(out.stderr.splitlines()) == 1 and out.stdout == ""


@pytest.mark.parametrize("args", [("--older-than", "7x"), ("--grace", "soon"), ("--keep-last", "-1"),
                                  ("--keep-lane", "nightly"), ("--older-than", "99999999999w")])
def test_cli_bad_values_are_usage_errors(project: Path, cli: Cli, args: tuple[str, str]) -> None:
    write_state(project, small_state(1))
    RollbackRecoverySystem(root=project).checkpoint("standard", 1, "one")
    store = project / ".checkpoints"
    before = store_files(store)
    out = cli("gc", *args, cwd=project)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert store_files(store) == before


# --- the CLI from cron ------------------------------------------------------------------------------------


def test_cron_gc_is_silent_when_nothing_to_remove_and_reports_removals(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(3):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG)}))
        ids.append(system.checkpoint("standard", step, f"s{step}").checkpoint_id)
    store = store_of(system)

    for args in ((), ("--keep-last", "3"), ("--older-than", "0s", "--keep-lane", "standard")):
        out = cli("gc", *args, cwd=project, stdin="")
        assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), args
    assert ref_ids(store) == set(ids)

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", cwd=project, stdin="")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(["removed", ids[0], "removed", ids[1]])
    [summary] = out.stderr.splitlines()
    assert "removed 2 checkpoint(s)" in summary and "kept 1 checkpoint(s); freed " in summary
    assert "\x1b" not in out.stdout + out.stderr  # no colour, no progress when not on a terminal
    assert ref_ids(store) == {ids[2]}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", cwd=project)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    out = cli("gc", "-q", "--older-than", "0s", "--grace", "0s", cwd=project)
    assert out.returncode == 0 and out.stdout.split() == ["removed", ids[2]] and out.stderr == ""
    assert ref_ids(store) == set()


def test_cli_json_shape_and_dry_run(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(3):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG)}))
        ids.append(system.checkpoint("docs", step, f"s{step}").checkpoint_id)
    store = store_of(system)
    before = store_files(store)

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--dry-run", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    dry = json.loads(out.stdout)
    assert set(dry) >= JSON_KEYS
    assert dry["dry_run"] is True
    assert sorted(dry["removed"]) == sorted(ids[:2]) and dry["kept"] == [ids[2]]
    assert dry["records_removed"] == 2 and dry["objects_removed"] > 0 and dry["bytes_freed"] > 0
    assert store_files(store) == before

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    real = json.loads(out.stdout)
    assert set(real) == set(dry)
    assert real["dry_run"] is False
    for key in ("removed", "kept", "records_removed", "objects_removed"):
        assert real[key] == dry[key], key
    for key in ("records_removed", "objects_removed", "bytes_freed"):
        assert type(real[key]) is int and real[key] >= 0
    assert all(isinstance(i, str) for i in real["removed"] + real["kept"])
    assert ref_ids(store) == {ids[2]}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--json", cwd=project)
    assert out.returncode == 0 and out.stderr == ""
    again = json.loads(out.stdout)
    assert (again["records_removed"], again["objects_removed"], again["bytes_freed"]) == (0, 0, 0)
    assert again["removed"] == [] and again["kept"] == [ids[2]]


def test_delete_of_a_damaged_checkpoint_unblocks_gc_and_push(
        project: Path, cli: Cli, s3_remote: str, seaweedfs: object, s3_env: dict[str, str]) -> None:
    """Issue 13: a checkpoint that cannot be read blocks gc (what it reaches is unknown) and a push of
    every checkpoint; ``delete`` forgets it, and both work again. Pinned ones need --force; an unknown
    or pinned id changes nothing."""
    system = RollbackRecoverySystem(root=project)
    write_state(project, small_state(1))
    good = system.checkpoint("standard", 1, "good").checkpoint_id
    write_state(project, small_state(2))
    broken = system.checkpoint("standard", 2, "broken").checkpoint_id
    store = store_of(system)
    (store / "refs" / "checkpoints" / broken).write_bytes(b"")  # an emptied ref: its record unknown
    endpoint = ("--endpoint-url", seaweedfs.endpoint)  # type: ignore[attr-defined]
    env = {**os.environ, **s3_env}
    assert cli("gc", "--older-than", "0s", "--grace", "0s", cwd=project).returncode == 13
    assert cli("push", "--remote", s3_remote, *endpoint, cwd=project, env=env).returncode == 13

    cli("pin", good, cwd=project)
    refused = cli("delete", broken, good, cwd=project)
    assert refused.returncode == 2 and f"checkpoint {good} is pinned: nothing was deleted" in refused.stderr
    assert cli("delete", broken, "nope-step1-20260101_000000", cwd=project).returncode == 12
    assert ref_ids(store) == {good, broken}  # nothing was deleted by either

    done = cli("delete", broken, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": [broken]} and ref_ids(store) == {good}
    pushed = cli("push", "--remote", s3_remote, *endpoint, cwd=project, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert cli("gc", "--older-than", "0s", "--grace", "0s", cwd=project).returncode == 0
    assert ref_ids(store) == {good}  # pinned: kept
    assert cli("delete", good, "--force", cwd=project).returncode == 0
    assert ref_ids(store) == set() and not os.listdir(store / "refs" / "pins")
