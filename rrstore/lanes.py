"""The workflow lanes: the one list every layer checks a lane against.

Kept apart from ``record`` (which loads the object store) so the CLI can
offer the lanes as choices without loading the store: ``rrstore --help``
imports every command module, and each names its lane option.
"""

from __future__ import annotations

from .errors import UsageError

LANES = ("docs", "standard", "heavy")


def check_lane(lane: str, where: str = "") -> str:
    """``lane`` when it is one of ``LANES``; otherwise a UsageError naming the choices (after
    ``where``, the settings table it was read from, if any). The one lane check: the CLI's choices,
    the workflow settings and ``recovery.vocabulary.Lane.parse`` all come here or to ``LANES``."""
    if lane not in LANES:
        at = f"{where}: " if where else ""
        raise UsageError(f"{at}unknown lane {lane!r}: choose one of {', '.join(LANES)}")
    return lane
