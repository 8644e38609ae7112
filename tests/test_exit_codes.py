"""Exit codes: the documented table is the one rrstore prints, and each code is reached through the real CLI.

Most codes are asserted where their feature is tested (grep ``one_error_line(..., N)`` and
``returncode == N``); this file holds the documented codes no other test reached through the CLI,
and the check that docs/cli.md, ``rrstore --help`` and ``errors.exit_code_table()`` agree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import GIT_ENV, run_cli, write

from rrstore import RollbackRecoverySystem
from rrstore.errors import exit_code_table
from rrstore.lock import locked
from rrstore.store.store import OBJECTS_LOCK

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

# The real CLI entry point with the lock's clock running fast: every look at it is 10 s after the last, so
# "waited 30 s for the lock" happens at once. Nothing else in the process is changed.
FAST_LOCK_CLOCK = """
import sys, types
import rrstore.lock
ticks = iter(range(0, 10**9, 10))
rrstore.lock.time = types.SimpleNamespace(monotonic=lambda: float(next(ticks)), sleep=lambda seconds: None)
from rrstore.cli.main import main
main(sys.argv[1:])
"""


def documented_codes() -> set[int]:
    """The codes of the exit code table in docs/cli.md (its rows start with ``| N |``)."""
    section = DOCS.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}


def test_the_documented_table_is_the_one_rrstore_prints() -> None:
    table = dict(exit_code_table())
    assert documented_codes() == set(table)
    shown = run_cli("--help", cwd=DOCS.parent)
    assert shown.returncode == 0, shown.stderr
    for code, meaning in table.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", shown.stdout, re.M), (code, meaning)


def test_11_store_locked_after_the_wait_one_line_naming_the_holder_and_nothing_changed(project: Path) -> None:
    write(project, "f.txt", b"kept\n")
    system = RollbackRecoverySystem(root=project)
    kept = system.checkpoint("standard", 1, "old").checkpoint_id
    store = system.store_path
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    args = ["gc", "--older-than", "0s", "--grace", "0s"]
    with locked(store, OBJECTS_LOCK, exclusive=True):  # what a running gc or check --repair holds
        for extra in ([], ["--json"]):
            done = subprocess.run([sys.executable, "-c", FAST_LOCK_CLOCK, *args, *extra], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 11, done.stderr
            assert done.stdout == "" and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
            if extra:
                doc = json.loads(done.stderr)
                assert (doc["error"], doc["exit_code"]) == ("StoreLocked", 11)
                continue
            assert done.stderr.splitlines() == [
                f"rrstore: error: store is locked by pid {os.getpid()}: {store}; wait for the other rrstore to finish"]
    assert [c.checkpoint_id for c in system.list().checkpoints] == [kept]  # gc removed nothing
    done = run_cli(*args, cwd=project)  # once the lock is free, the same command runs
    assert done.returncode == 0, done.stderr
    assert system.list().checkpoints == []
