"""The interpreter a project runs, and what is installed in it (asked in a subprocess).

validate checks dependencies there, and the planner asks it whether a tool
such as sphinx is importable: rrstore's own interpreter (pipx, a tools venv)
says nothing about the project's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from packaging.requirements import InvalidRequirement, Requirement

from .settings import load_recovery_settings


class Interpreter(NamedTuple):
    """The Python the project runs, and why that one (validate says both)."""

    path: Path
    why: str

    @property
    def said(self) -> str:
        return f"{self.path} ({self.why})"


class Probe(NamedTuple):
    """What the project's interpreter answered: its marker environment and the installed versions."""

    environment: dict[str, str]
    versions: dict[str, str | None]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def project_interpreter(root: Path) -> Interpreter | str:
    """The interpreter the project at ``root`` runs, or why none was found.

    In this order: an active ``VIRTUAL_ENV``; the project's own venv
    (``.venv``, then ``venv``, recognised by its ``pyvenv.cfg``); ``[recovery]
    python`` (a path, relative to the root, or a command on PATH); ``python3``
    on PATH.
    """
    active = os.environ.get("VIRTUAL_ENV", "").strip()
    if active:
        return Interpreter(_venv_python(Path(active)), "the active VIRTUAL_ENV")
    for folder in (".venv", "venv"):
        if (root / folder / "pyvenv.cfg").is_file():
            return Interpreter(_venv_python(root / folder), f"the project's {folder}")
    settings = load_recovery_settings(root)
    if settings.python is not None:
        why = f"python in {settings.source}"
        if "/" in settings.python or settings.python.startswith("~"):
            return Interpreter(root / Path(settings.python).expanduser(), why)
        found = shutil.which(settings.python)
        if found is None:
            return f"{settings.python!r} ({why}) is not on PATH"
        return Interpreter(Path(found), why)
    found = shutil.which("python3")
    if found is None:
        return ("no Python to check: no active VIRTUAL_ENV, no .venv or venv with a pyvenv.cfg, "
                "no [recovery] python and no python3 on PATH")
    return Interpreter(Path(found), "python3 on PATH")


# Run by the project's interpreter (any Python 3.8+): the environment markers are evaluated
# against (as packaging's default_environment builds it) and the version of each named distribution.
# The script's own folder ('' for -c) leaves sys.path first, so no project file shadows json or os.
_PROBE = """import sys
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
import json, os, platform
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
info = sys.implementation.version
impl = '%d.%d.%d' % (info.major, info.minor, info.micro)
if info.releaselevel != 'final':
    impl += info.releaselevel[0] + str(info.serial)
env = {'implementation_name': sys.implementation.name, 'implementation_version': impl,
       'os_name': os.name, 'platform_machine': platform.machine(), 'platform_release': platform.release(),
       'platform_system': platform.system(), 'platform_version': platform.version(),
       'python_full_version': platform.python_version(),
       'platform_python_implementation': platform.python_implementation(),
       'python_version': '.'.join(platform.python_version_tuple()[:2]), 'sys_platform': sys.platform}
print(json.dumps({'environment': env, 'versions': {n: version(n) for n in sys.argv[1:]}}))
"""


def probe_interpreter(python: Interpreter, names: list[str]) -> Probe | str:
    """Ask ``python`` for its marker environment and the versions of ``names``; a string says why it
    could not answer (missing, not executable, not a Python 3.8+, broken)."""
    try:
        done = subprocess.run([str(python.path), "-c", _PROBE, *names], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60, errors="replace")
    except subprocess.TimeoutExpired:
        return f"cannot run {python.said}: no answer within 60 s"
    except OSError as exc:
        return f"cannot run {python.said}: {exc.strerror or exc}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"cannot run {python.said}: {last}"
    try:
        doc = json.loads(lines[-1])
        environment, versions = doc["environment"], doc["versions"]
        if not (isinstance(environment, dict) and all(isinstance(v, str) for v in environment.values())
                and isinstance(versions, dict) and all(isinstance(v, str | None) for v in versions.values())):
            raise TypeError(doc)
    except (ValueError, KeyError, TypeError):
        return f"cannot run {python.said}: it did not answer as a Python 3.8+ does"
    return Probe(environment, versions)


def parse_requirement(text: str) -> Requirement | str:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return f"{text!r} is not a valid requirement"


def marker_applies(req: Requirement, probe: Probe) -> bool:
    """Whether ``req``'s environment marker (if any) holds in the probed interpreter."""
    return req.marker is None or req.marker.evaluate({**probe.environment, "extra": ""})


def unmet_reason(req: Requirement, probe: Probe) -> str | None:
    """Why ``req`` is not met in the probed interpreter, or None when it is (or its marker excludes it there)."""
    if not marker_applies(req, probe):
        return None
    version = probe.versions.get(req.name)
    if version is None:
        return f"{req.name} is not installed"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {version} does not satisfy {req.specifier}"
    return None
