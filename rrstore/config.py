"""Settings (bottom layer): ``rrstore.toml`` or ``[tool.rrstore]`` in ``pyproject.toml``.

Looked up in the project root; ``rrstore.toml`` wins when both exist.
Unknown keys are an error, so a typo never silently does nothing.

A ``pyproject.toml`` that does not parse (most often a merge conflict in its
dependencies, a state rrstore exists to get out of) does not stop rrstore
unless its own settings are in doubt: see ``_pyproject_table``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    """The settings table and where it came from ("" when none: the defaults apply)."""
    own = root / "rrstore.toml"
    if own.is_file():
        return _load(own), str(own)
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        return _pyproject_table(pyproject)
    return {}, ""


def _load(path: Path) -> dict[str, Any]:
    import tomllib  # only projects with a config file pay for the import

    try:
        return tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid TOML in {path}: {exc}") from None


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"invalid TOML in {path}: not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


# --- a pyproject.toml that does not parse --------------------------------------------------------

MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ")  # git's conflict markers; diff3 adds "||||||| "
_BASE = "||||||| "
# Text that may hold rrstore's settings: a [tool.rrstore...] header, a dotted tool.rrstore key, or
# an rrstore table under [tool] (a console script "rrstore = '...'" is a string, not matched).
_NAME = r"""(?:rrstore|"rrstore"|'rrstore')(?![\w-])"""
_MENTIONS = re.compile(rf"^\s*(?:\[+\s*tool\s*\.\s*{_NAME}|tool\s*\.\s*{_NAME}|{_NAME}\s*(?:=\s*\{{|\.))", re.MULTILINE)
_RESCUE: ContextVar[bool | None] = ContextVar("rrstore_config_rescue", default=None)
_warned: set[str] = set()


class ConfigWarning(UserWarning):
    """A settings file rrstore read around or ignored (the CLI prints it as ``rrstore: warning: ...``)."""


@dataclass(frozen=True)
class Unparsed:
    """Why a ``pyproject.toml`` does not parse: the first line in question and what is wrong there."""

    path: Path
    line: int | None
    reason: str  # "merge conflict markers", or TOML's own reason
    conflicted: bool

    @property
    def detail(self) -> str:
        return f"(line {self.line}: {self.reason})" if self.line is not None else f"({self.reason})"

    @property
    def summary(self) -> str:
        return f"{self.path.name} does not parse {self.detail}"


def pyproject_problem(root: Path) -> Unparsed | None:
    """Why the project's ``pyproject.toml`` does not parse, or None (it parses, or there is none)."""
    import tomllib

    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        return _unparsed(path, _read(path), exc)
    except UsageError as exc:
        return Unparsed(path, None, str(exc).rsplit(": ", 1)[-1], False)
    return None


def _unparsed(path: Path, text: str, exc: Exception) -> Unparsed:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(MARKERS[0]):
            return Unparsed(path, number, "merge conflict markers", True)
    found = re.search(r"^(.*) \(at line (\d+), column \d+\)$", str(exc))
    if found:
        return Unparsed(path, int(found.group(2)), found.group(1), False)
    return Unparsed(path, None, str(exc), False)


def _sides(text: str) -> tuple[str, str]:
    """The file as each side of the conflict left it ("ours", "theirs"); diff3's base is dropped."""
    ours: list[str] = []
    theirs: list[str] = []
    side = "both"
    for line in text.splitlines(keepends=True):
        if line.startswith(MARKERS[0]):
            side = "ours"
        elif line.startswith(_BASE) and side == "ours":
            side = "base"
        elif line.rstrip("\r\n") == MARKERS[1] and side in ("ours", "base"):
            side = "theirs"
        elif line.startswith(MARKERS[2]) and side == "theirs":
            side = "both"
        else:
            if side in ("both", "ours"):
                ours.append(line)
            if side in ("both", "theirs"):
                theirs.append(line)
    return "".join(ours), "".join(theirs)


def _rrstore_table(text: str) -> dict[str, Any] | None:
    """``[tool.rrstore]`` of one side ({} when it has none), or None when that side does not parse."""
    import tomllib

    try:
        tool = tomllib.loads(text).get("tool", {})
    except tomllib.TOMLDecodeError:
        return None
    table = tool.get("rrstore", {}) if isinstance(tool, dict) else {}
    return table if isinstance(table, dict) else {}


def _pyproject_table(path: Path) -> tuple[dict[str, Any], str]:
    """``[tool.rrstore]`` of ``path``, or {} with its source "" when it has none.

    When the file does not parse: with conflict markers whose two sides both
    parse and hold the same ``[tool.rrstore]``, that table (however the
    conflict is resolved, rrstore's settings are these); else, when the text
    holds no rrstore settings at all, the defaults; else the settings are in
    doubt: a UsageError saying how out, except inside ``rescue_settings``.
    Each of the first two says so once, as a ``ConfigWarning``.
    """
    import tomllib

    text = _read(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _around(path, text, _unparsed(path, text, exc), exc)
    tool = doc.get("tool", {})
    if not isinstance(tool, dict) or "rrstore" not in tool:
        return {}, ""
    table = tool["rrstore"]
    return (table if isinstance(table, dict) else {}), f"{path} [tool.rrstore]"


def _around(path: Path, text: str, problem: Unparsed, exc: Exception) -> tuple[dict[str, Any], str]:
    unparsed = f"{path} does not parse {problem.detail}"
    ours, theirs = (_rrstore_table(side) for side in _sides(text)) if problem.conflicted else (None, None)
    if ours is not None and ours == theirs:
        if not ours:
            _warn(f"{unparsed}; ignored: neither side of the conflict holds [tool.rrstore] settings, "
                  "so the defaults apply")
            return {}, ""
        _warn(f"{unparsed}; using the [tool.rrstore] settings both sides of the conflict agree on")
        return ours, f"{path} [tool.rrstore]"
    if None in (ours, theirs) and not _MENTIONS.search(text):
        _warn(f"{unparsed}; ignored: it holds no [tool.rrstore] settings, so the defaults apply")
        return {}, ""
    if _rescuing(path.parent):
        _warn(f"{unparsed}; its [tool.rrstore] settings are in doubt: going on with the default settings")
        return {}, ""
    doubt = (f"{path} has merge conflict markers (line {problem.line}) and its two sides do not agree on "
             "the [tool.rrstore] settings" if problem.conflicted
             else f"invalid TOML in {path}: {exc}; it holds [tool.rrstore] settings")
    fix = "resolve the conflict" if problem.conflicted else "fix the file"
    raise UsageError(f"{doubt}: {fix}, or put the settings in rrstore.toml (which wins over "
                     "pyproject.toml); meanwhile 'rrstore restore' and 'rrstore validate' still work, with the "
                     f"default settings, when the store is at {Settings.store} or given with --store")


def _warn(message: str) -> None:
    if message not in _warned:  # once per process, however often the settings are read
        _warned.add(message)
        warnings.warn(message, ConfigWarning, stacklevel=2)


def _rescuing(root: Path) -> bool:
    given = _RESCUE.get()
    if given is None:
        return False
    return given or bool(os.environ.get("RRSTORE_DIR")) or (root / Settings.store / "config.json").is_file()


@contextmanager
def rescue_settings(store_given: bool = False) -> Iterator[None]:
    """Inside: settings a broken ``pyproject.toml`` leaves in doubt are the defaults (with a warning)
    instead of an error, provided the store is found without them (``store_given``: ``--store``; or
    ``RRSTORE_DIR``; or a store at the default path). For restore, whose job is to get out of such
    states: the defaults' scope is the narrowest, and a restore can be undone."""
    token = _RESCUE.set(store_given)
    try:
        yield
    finally:
        _RESCUE.reset(token)


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
