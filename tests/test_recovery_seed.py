"""The seed's 'Multi-Step Recovery' and 'Automated Recovery Loop' run as written.

The code is read from the guide itself; only its import line is adapted
(``from rrstore import`` for ``from scripts.rollback_recovery import``).
What the seed leaves to the user (``run_workflow``, ``execute_action``,
``workflow_failed``) is defined here, on top of rrstore's own workflow.
``time.sleep`` is replaced so the loop's 30 s and 60 s waits are recorded,
not waited.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import recovery_seed as seed

from rrstore import RollbackRecoverySystem

EXAMPLE = "ROLLBACK_RECOVERY_GUIDE.md: Automated Recovery Loop"
STEP = """
n=$(cat "{state}/count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{state}/count"
if [ $n -le {failures} ]; then echo half-written > leftover.txt; echo "curl: (7) Failed to connect to \
127.0.0.1 port 9 after 0 ms: Couldn't connect to server" >&2; exit 7; fi
echo ok
"""


@pytest.fixture
def project_with_workflow(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose standard workflow's second step fails its first two runs."""
    monkeypatch.delenv("RRSTORE_DIR", raising=False)
    monkeypatch.chdir(project)
    state = tmp_path / "state"
    state.mkdir()
    (state / "step.sh").write_text(STEP.format(state=state, failures=2))
    (project / "workflow.py").write_text("print('step')\n")
    (project / "rrstore.toml").write_text(
        "[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n"
        '  { name = "Quality gates", command = "echo gates" },\n'
        f'  {{ name = "Running tests", command = "sh {state}/step.sh" }},\n]\n')
    return project


def test_the_guide_is_vendored_unchanged() -> None:
    if not seed.SHARED.is_file():
        pytest.skip("shared/seed is not beside the repository")
    assert seed.VENDORED.read_text() == seed.SHARED.read_text()


def test_automated_recovery_loop(project_with_workflow: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = seed.example("### Automated Recovery Loop")
    assert "from rrstore import RollbackRecoverySystem, FailureType" in code
    waits: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the example's waits are recorded; rrstore's own short ones happen
        if sys._getframe(1).f_code.co_filename == EXAMPLE:
            waits.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    executed: list[tuple[int, str]] = []
    results: list[Any] = []
    namespace: dict[str, Any] = {"__name__": "seed_example", "executed": executed, "results": results}
    exec(compile(_USER_CODE, "user_code", "exec"), namespace)  # the user's part, defined here

    exec(compile(code, EXAMPLE, "exec"), namespace)

    assert [r.success for r in results] == [False, False, True]
    assert waits == [30, 60]  # retry_delay * 2 ** (attempt - 1), for attempts 1 and 2
    # recovery_plan[:attempt] escalates: validate; then validate and clean up
    assert [(a, c) for a, c in executed] == [(1, "rrstore validate"), (2, "rrstore validate"),
                                             (2, "rrstore cleanup")]
    assert results[2].start_step == 2 and results[2].skipped[0].name == "Quality gates"  # resumed, not rerun
    assert namespace["attempt"] == 3


_USER_CODE = '''
def run_workflow():
    """What the seed leaves to the user: here, rrstore's own workflow, resumed after a failure."""
    from rrstore import RollbackRecoverySystem
    result = RollbackRecoverySystem().workflow("standard", resume=True, restore=True)
    results.append(result)
    return result


def execute_action(action):
    """Run an rrstore action of the plan through the Python API."""
    executed.append((attempt, action.command))
    verb = action.command.split()[1]
    outcome = system.run(verb)
    assert getattr(outcome, "error", None) is None, outcome.message
'''


def test_multi_step_recovery(project_with_workflow: Path, manifest: Any) -> None:
    root = project_with_workflow
    system = RollbackRecoverySystem()
    failed = system.workflow("standard")
    assert not failed.success and (root / "leftover.txt").exists()
    good = failed.steps[1].record  # the failed step's checkpoint: the state step 1 ended with
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "workflow.cpython-311.pyc").write_bytes(b"\0" * 64)

    code = seed.example("### Multi-Step Recovery")
    namespace: dict[str, Any] = {"workflow_failed": True, "workflow_failed_again": True, "__name__": "seed_example"}
    exec(compile(code, "ROLLBACK_RECOVERY_GUIDE.md: Multi-Step Recovery", "exec"), namespace)

    latest = namespace["latest"]
    assert latest.checkpoint_id == good.checkpoint_id  # checkpoints[0] is the newest
    assert not (root / "leftover.txt").exists() and not (root / "__pycache__").exists()
    assert system.status().state_hash == good.state_hash
    assert system.run("validate").success in (True, False)  # it reports, never raises
