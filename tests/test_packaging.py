"""Packaging: every package is listed, the wheel holds rrstore/ only, and the CLI starts without GitPython."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def packages_on_disk() -> set[str]:
    """Import names of every folder with an ``__init__.py``; ``cli/`` installs as ``rrstore.cli``."""
    names = set()
    for top, name in (("rrstore", "rrstore"), ("cli", "rrstore.cli")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            if "__pycache__" in rel.parts:
                continue
            names.add(".".join([name, *rel.parts]))
    return names


def test_every_package_folder_is_listed() -> None:
    setuptools = pyproject()["tool"]["setuptools"]
    assert set(setuptools["packages"]) == packages_on_disk()
    assert setuptools["package-dir"]["rrstore.cli"] == "cli"
    assert "cli" not in setuptools["packages"]


def test_console_script_points_into_the_namespaced_cli() -> None:
    assert pyproject()["project"]["scripts"]["rrstore"] == "rrstore.cli.entry:main"


def _can_build_without_isolation() -> bool:
    """setuptools builds wheels itself from 70.1 on; before that it needs the 'wheel' package."""
    import importlib.metadata
    import importlib.util

    version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2] if p.isdigit())
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _build_wheel(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)]
    if _can_build_without_isolation():
        command.insert(-1, "--no-build-isolation")
    # else pip sets up the build backend from the configured (local or remote) index, or fails and we skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_wheel_holds_the_namespaced_packages_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                             ".checkpoints", ".pytest_cache", ".mypy_cache",
                                                             ".ruff_cache", ".venv"))
    out = tmp_path / "wheels"
    built = _build_wheel(src, out)
    wheels = list(out.glob("rrstore-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"cannot build a wheel offline here: {(built.stderr or built.stdout).strip()[-300:]}")

    names = zipfile.ZipFile(wheels[0]).namelist()

    assert "rrstore/cli/main.py" in names
    assert "rrstore/__main__.py" in names
    assert not [n for n in names if n.startswith("cli/")]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rrstore"}
    for package in packages_on_disk():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    modules = {str(p.relative_to(REPO)) for p in (REPO / "rrstore").rglob("*.py") if "__pycache__" not in p.parts}
    modules |= {"rrstore/cli/" + str(p.relative_to(REPO / "cli")) for p in (REPO / "cli").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert modules <= set(names)
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheels[0]).read(dist_info).decode()
    assert "rrstore = rrstore.cli.entry:main" in entry_points


def _modules_after(args: list[str], cwd: Path) -> set[str]:
    """The modules imported by running the CLI with ``args`` in a fresh interpreter."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['rrstore', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('rrstore', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    line = next(line for line in out.stderr.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_list_do_not_import_gitpython(tmp_path: Path) -> None:
    modules = _modules_after(["--help"], tmp_path)
    assert "rrstore.cli.main" in modules
    assert "git" not in modules and not any(m.startswith("git.") for m in modules)
    assert "boto3" not in modules

    (tmp_path / "f.txt").write_text("x")
    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    made = subprocess.run([sys.executable, "-m", "rrstore", "checkpoint", "--lane", "docs", "--step-number", "1",
                           "--step-name", "x"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    modules = _modules_after(["list"], tmp_path)
    assert "git" not in modules and not any(m.startswith("git.") for m in modules)


def test_importtime_of_help_shows_no_gitpython(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "rrstore", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported
    assert "git" not in imported


def test_a_run_step_without_a_remote_table_loads_no_s3_layer(tmp_path: Path) -> None:
    """Every ``run`` step asks for the push policy: with no ``[remote]`` that is a table lookup, not the
    S3 backend and remote settings (~8 ms per step); with one, the settings are read and applied."""
    (tmp_path / "f.txt").write_text("x")
    args = ["run", "--lane", "standard", "--step-number", "1", "--step-name", "t", "--", "true"]
    modules = _modules_after(args, tmp_path)
    assert "rrstore.recovery.run" in modules
    assert "rrstore.backends.s3" not in modules and "rrstore.remoteconfig" not in modules

    (tmp_path / "rrstore.toml").write_text('[remote]\npush = "never"\n')
    assert "rrstore.remoteconfig" in _modules_after(args, tmp_path)
