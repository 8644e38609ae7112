"""``rrstore help`` (``cli/reference.py``): the reference ships with the package and is found by command."""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import click
import pytest
from conftest import run_cli

REPO = Path(__file__).resolve().parent.parent


def test_help_json_show_prints_the_record_shape_from_the_installed_copy(tmp_path: Path) -> None:
    done = run_cli("help", "json", "show", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("`--json` prints **one checkpoint record**")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", done.stdout, re.S)]
    assert any({"checkpoint_id", "state_hash", "lane", "metrics"} <= set(doc) for doc in examples)
    assert "rrstore show ID" not in done.stdout  # the JSON part, not the whole section


def test_every_command_has_a_reference_section_and_none_points_to_a_missing_file() -> None:
    from rrstore.cli.main import cli
    from rrstore.cli.reference import command_section

    ctx = click.Context(cli, info_name="rrstore")
    for name in cli.list_commands(ctx):
        assert command_section(name) is not None, f"{name}: add a '## {name}' section to docs/cli.md"
        command = cli.get_command(ctx, name)
        assert command is not None
        text = command.get_help(click.Context(command, info_name=name, parent=ctx))
        assert "docs/" not in text, name
    assert "docs/" not in cli.get_help(ctx) and "rrstore help json" in cli.get_help(ctx)


def test_help_names_commands_topics_and_documents(tmp_path: Path) -> None:
    index = run_cli("help", cwd=tmp_path)
    assert index.returncode == 0 and "show" in index.stdout and "remote-gc" in index.stdout
    exit_codes = run_cli("help", "exit-codes", cwd=tmp_path)
    assert exit_codes.stdout.startswith("## Exit codes\n") and "| 12 | checkpoint not found" in exit_codes.stdout
    assert run_cli("help", "push", cwd=tmp_path).stdout.startswith("## Shared remote (S3)\n")
    assert run_cli("help", "pin", cwd=tmp_path).stdout.startswith("# Retention and garbage collection\n")
    assert run_cli("help", "remote-gc", cwd=tmp_path).stdout == (REPO / "docs" / "remote-gc.md").read_text()
    conventions = run_cli("help", "json", cwd=tmp_path).stdout
    assert conventions.startswith("## JSON conventions\n") and "show" in conventions.splitlines()[-1]
    for bad in (["nope"], ["json", "nope"], ["show", "extra"]):
        done = run_cli("help", *bad, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, bad


def test_a_built_wheel_holds_the_reference_and_help_reads_it_there(tmp_path: Path) -> None:
    from test_packaging import _build_wheel

    src = tmp_path / "src"  # cli/docs stays the symlink it is in the repository
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".checkpoints", ".*_cache", ".venv"))
    assert (src / "cli" / "docs").is_symlink()
    out = tmp_path / "wheels"
    built = _build_wheel(src, out)
    wheels = list(out.glob("rrstore-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"cannot build a wheel offline here: {(built.stderr or built.stdout).strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for doc in (REPO / "docs").glob("*.md"):
            assert wheel.read(f"rrstore/cli/docs/{doc.name}") == doc.read_bytes(), doc.name
        wheel.extractall(tmp_path / "site")  # a pure-Python wheel installs by unpacking
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import rrstore.cli.reference as r; "
            "print(r.__file__, file=sys.stderr); sys.argv[0] = 'rrstore'; from rrstore.cli.main import main; main()")
    done = run_cli_python(code, str(tmp_path / "site"), "help", "json", "show", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(str(tmp_path / "site" / "rrstore" / "cli"))
    assert done.stdout == run_cli("help", "json", "show", cwd=tmp_path).stdout


def run_cli_python(code: str, *args: str, cwd: Path):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120)
