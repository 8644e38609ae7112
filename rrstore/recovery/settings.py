"""The ``[recovery]`` section of ``rrstore.toml`` (or ``[tool.rrstore.recovery]``).

Separate from ``rrstore.config.Settings`` because only the recovery layer
reads it, and a project without it pays nothing. Every key is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_section
from ..errors import UsageError
from .plans import CommandCheck, PlanTable, build_table

# The seed's resource-exhaustion cleanup: caches a failed run leaves behind.
DEFAULT_CACHE_PATTERNS = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache")
# Files whose loss breaks any build; required only when the project has them (tracked or checkpointed).
DEFAULT_CRITICAL_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "package.json",
                          "Cargo.toml", "go.mod", "Makefile", "rrstore.toml")
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 30.0  # seconds; the seed's retry_delay


@dataclass
class RecoverySettings:
    critical_files: tuple[str, ...] | None = None  # None: the defaults the project actually has
    cache_patterns: tuple[str, ...] = DEFAULT_CACHE_PATTERNS
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    plans: PlanTable = field(default_factory=build_table)
    # The interpreter validate checks dependencies in when no venv is active or in the project
    # (a path, relative to the root, or a command on PATH); None: python3 on PATH.
    python: str | None = None
    docs_check: str | None = None  # the command that checks the docs; None: chosen from the docs present
    source: str = "defaults"


def _strings(value: object, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: {key} must be an array of non-empty strings")
    return tuple(value)


def _command(section: dict[str, object], key: str, where: str, what: str) -> str | None:
    """A setting naming a program (None when unset); a UsageError unless a non-empty string."""
    if key not in section:
        return None
    value = section[key]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key} must be a non-empty string ({what})")
    return value.strip()


def load_recovery_settings(root: Path, check: CommandCheck | None = None) -> RecoverySettings:
    """The project's recovery settings (defaults where it sets nothing); ``check`` parses the
    ``rrstore`` commands of plan overrides (``plans.build_table``)."""
    section, where = load_section(root, "recovery")
    known = {"critical_files", "cache_patterns", "retries", "backoff", "plans", "python", "docs_check"}
    unknown = set(section) - known
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(known))})")
    settings = RecoverySettings(source=where if section else "defaults")
    if "critical_files" in section:
        settings.critical_files = _strings(section["critical_files"], "critical_files", where)
    if "cache_patterns" in section:
        settings.cache_patterns = _strings(section["cache_patterns"], "cache_patterns", where)
    settings.retries = check_retries(section.get("retries", DEFAULT_RETRIES), where)
    settings.backoff = check_seconds(section.get("backoff", DEFAULT_BACKOFF), "backoff", where)
    settings.plans = build_table(section.get("plans"), where, check)
    settings.python = _command(section, "python", where, "a path or a command on PATH")
    settings.docs_check = _command(section, "docs_check", where, "the command that checks the docs")
    return settings


def check_retries(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{where}: retries must be an integer, 0 or more")
    return value


def check_seconds(value: Any, key: str, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        raise UsageError(f"{where}: {key} must be a number of seconds, {'more than 0' if positive else '0 or more'}")
    return float(value)
