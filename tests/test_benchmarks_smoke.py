"""Smoke test of the benchmark suite: benchmarks/run.py end to end on a tiny generated tree.

Runs rrstore and whichever peers are installed (the others are skipped by
run.py itself), installs nothing, and checks that the table and the JSON are
written with rrstore's figures. The real benchmark is not part of the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def test_benchmark_smoke_run_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--trees", "generated", "--runs", "1", "--no-install",
         "--output", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    table = (out / "results.md").read_text()
    assert "| rrstore |" in table
    assert "cold checkpoint" in table

    results = json.loads((out / "results.json").read_text())
    case = results["trees"]["generated"]
    rr = case["runs"]["rrstore"]
    for scenario in ("cold", "unchanged", "status", "churn", "restore_full", "restore_churn"):
        (rec,) = rr[scenario]
        assert rec["ok"], rec
        assert rec["wall_s"] > 0
    assert rr["cold"][0]["store_disk"] > 0
    # restored trees were compared file by file with what was checkpointed
    assert rr["restore_full"][0]["verified"] is True
    assert rr["restore_churn"][0]["verified"] is True
    assert case["median"]["rrstore"]["cold"]["ok_runs"] == 1
    # every peer that ran has its row, and git (always there with rrstore) gives the ratios
    for tool in case["tool_order"]:
        assert f"| {tool} |" in table
    assert "git" in case["tool_order"]
    assert "rrstore ÷ git" in table
