"""rrstore: content-addressed checkpoints of a working tree, restore, and recovery.

``from rrstore import RollbackRecoverySystem`` is the entry point the seed's
examples use; everything else is reachable from it.

The names below load on first use (PEP 562): ``import rrstore`` costs
nothing, so the command line can install its signal handlers before the
library (and click, zstd, blake3) import, and Ctrl-C during start-up ends
it in one line instead of a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {"LANES": "lanes", "CheckpointManager": "checkpoint", "CheckpointRecord": "record",
          "RRStoreError": "errors", "FailureType": "recovery", "Lane": "recovery",
          "RecoveryStrategy": "recovery", "RollbackRecoverySystem": "system"}

if TYPE_CHECKING:
    from .checkpoint import CheckpointManager
    from .errors import RRStoreError
    from .lanes import LANES
    from .record import CheckpointRecord
    from .recovery import FailureType, Lane, RecoveryStrategy
    from .system import RollbackRecoverySystem

__all__ = ["LANES", "CheckpointManager", "CheckpointRecord", "FailureType", "Lane", "RRStoreError",
           "RecoveryStrategy", "RollbackRecoverySystem", "__version__"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rrstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
