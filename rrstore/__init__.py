"""rrstore: content-addressed checkpoints of a working tree, restore, and recovery.

``from rrstore import RollbackRecoverySystem`` is the entry point the seed's
examples use; everything else is reachable from it.
"""

__version__ = "0.1.0"

from .checkpoint import LANES, CheckpointManager, CheckpointRecord
from .errors import RRStoreError
from .recovery import FailureType, Lane, RecoveryStrategy
from .system import RollbackRecoverySystem

__all__ = ["LANES", "CheckpointManager", "CheckpointRecord", "FailureType", "Lane", "RRStoreError",
           "RecoveryStrategy", "RollbackRecoverySystem", "__version__"]
