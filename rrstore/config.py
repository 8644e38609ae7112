"""Settings (bottom layer): ``rrstore.toml`` or ``[tool.rrstore]`` in ``pyproject.toml``.

Looked up in the project root; ``rrstore.toml`` wins when both exist.
Unknown keys are an error, so a typo never silently does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

FSYNC_MODES = ("always", "batch", "never")


@dataclass
class Settings:
    """What a project can set. ``store`` is relative to the project root."""

    store: str = ".checkpoints"
    compression_level: int = 3
    fsync: str = "batch"
    workers: int = 0
    # Directories kept in the scope although they hold a pyvenv.cfg or a CACHEDIR.TAG (scan.py).
    scope_include: list[str] = field(default_factory=list)
    source: str = ""

    def validate(self) -> Settings:
        if self.fsync not in FSYNC_MODES:
            raise UsageError(f"{self.source}: fsync must be one of {', '.join(FSYNC_MODES)}, not {self.fsync!r}")
        if not -7 <= self.compression_level <= 22:
            raise UsageError(f"{self.source}: compression_level must be between -7 and 22")
        if self.workers < 0:
            raise UsageError(f"{self.source}: workers must be 0 (automatic) or more")
        return self


_LISTS = ("scope_include",)


def _table(root: Path) -> tuple[dict[str, Any], str]:
    own = root / "rrstore.toml"
    if own.is_file():
        return _load(own), str(own)
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        table = _load(pyproject).get("tool", {}).get("rrstore", {})
        return (table if isinstance(table, dict) else {}), f"{pyproject} [tool.rrstore]"
    return {}, ""


def _load(path: Path) -> dict[str, Any]:
    import tomllib  # only projects with a config file pay for the import

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid TOML in {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def load_settings(root: Path) -> Settings:
    """The project's settings; sections other tools own (e.g. ``workflow``) are skipped."""
    table, source = _table(root)
    known = {f.name for f in fields(Settings)} - {"source"}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            continue
        if key not in known:
            raise UsageError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if key in _LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"{source}: {key} must be a list of strings (paths relative to the project root)")
            values[key] = list(value)
            continue
        expected = type(getattr(Settings, key))
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise UsageError(f"{source}: {key} must be a {expected.__name__}")
        values[key] = value
    return Settings(**values, source=source or "defaults").validate()


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds an ``rrstore.toml`` or the project's store
    (its configured ``store``, default ``.checkpoints``, with a ``config.json``): the root outside git."""
    for folder in (start, *start.parents):
        if (folder / "rrstore.toml").is_file() or (folder / _store_name(folder) / "config.json").is_file():
            return folder
    return None


def _store_name(folder: Path) -> str:
    """The ``store`` a ``pyproject.toml`` in ``folder`` sets, else the default; a file that cannot be
    read only fails to mark the folder (the project's own settings report it when loaded)."""
    if not (folder / "pyproject.toml").is_file():
        return Settings.store
    try:
        name = _table(folder)[0].get("store")
    except UsageError:
        return Settings.store
    return name if isinstance(name, str) and name else Settings.store


def load_section(root: Path, name: str) -> tuple[dict[str, Any], str]:
    """A sub-table that ``load_settings`` skips (e.g. ``workflow``, ``recovery``) and where it came from.

    The part of rrstore that owns the section checks its contents; the
    returned source names the file and table for its error messages.
    """
    table, source = _table(root)
    section = table.get(name, {})
    where = f"{source} [{name}]" if source.endswith(".toml") else f"{source[:-1]}.{name}]" if source else name
    if not isinstance(section, dict):
        raise UsageError(f"{where} must be a table")
    return section, where
