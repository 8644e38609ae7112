"""Declared inputs (recovery layer, from tree entries only): the state of the paths a step reads, as one hash.

A workflow step may declare ``inputs``: gitignore-style patterns relative to
the project root (``src/**``, ``setup.py``, ``!src/generated.py``). Their
state is the BLAKE3 of the matching entries' (path, kind, executable bit,
content oid or link target), sorted by path. It is computed from tree
entries alone (a checkpoint's flattened tree, or a hash-only snapshot of the
working tree), so no file is read for it, and two trees whose matching files
agree give the same state whatever else differs. Directories are not hashed
themselves (a directory's oid covers paths the patterns may leave out);
their files are.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..store.objects import hash_bytes
from ..tree import DIR, Entry

if TYPE_CHECKING:
    import pathspec


def check_inputs(value: object, where: str) -> tuple[str, ...]:
    """``value`` as a tuple of patterns, or a UsageError naming ``where`` and the bad pattern."""
    shape = f"{where}: 'inputs' must be a non-empty array of paths or globs, e.g. [\"src/**\", \"setup.py\"]"
    if not isinstance(value, list) or not value:
        raise UsageError(shape)
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip():
            raise UsageError(f"{shape}; got {pattern!r}")
        if pattern.lstrip().startswith("#"):
            raise UsageError(f"{where}: inputs pattern {pattern!r} is a comment in gitignore syntax, not a path")
        try:
            spec = _spec((pattern,))
            for compiled in spec.patterns:  # a bracket like [z-a] fails only in the regex it becomes
                if compiled.regex is not None:
                    re.compile(getattr(compiled.regex, "pattern", compiled.regex))
        except (ValueError, re.error) as exc:  # pathspec's GitIgnorePatternError, a bad regex
            reason = exc.msg if isinstance(exc, re.error) else exc  # its position is in the regex, not here
            raise UsageError(f"{where}: inputs pattern {pattern!r} is not a valid gitignore-style pattern: "
                             f"{reason}") from None
        if all(p.include is None for p in spec.patterns):
            raise UsageError(f"{where}: inputs pattern {pattern!r} matches nothing")
    return tuple(value)


@functools.lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    import pathspec  # only a workflow with inputs needs it (start-up time)

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A test of a tree path (``a/b.py``) against the patterns, gitignore-style."""
    return _spec(tuple(patterns)).match_file


def input_state(entries: Mapping[str, Entry], patterns: Sequence[str]) -> str:
    """The state of the entries that ``patterns`` match: equal exactly when those entries agree."""
    match = matcher(patterns)
    chosen = [[path, e.kind, e.executable, e.oid, e.target] for path, e in sorted(entries.items())
              if e.kind != DIR and match(path)]
    return hash_bytes(json.dumps(chosen, ensure_ascii=True, separators=(",", ":")).encode())


def matches_any(entries: Mapping[str, Entry], patterns: Sequence[str]) -> bool:
    """Whether ``patterns`` match any file or link of ``entries``: an input set that matches
    nothing has the same state in every tree, so it can prove nothing."""
    match = matcher(patterns)
    return any(e.kind != DIR and match(path) for path, e in entries.items())


def unmatched(paths: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The patterns of ``patterns`` (negations aside) that match none of ``paths``: most often a typo."""
    listed = list(paths)
    return [p for p in patterns if not p.lstrip().startswith("!")
            and not any(map(_spec((p,)).match_file, listed))]
