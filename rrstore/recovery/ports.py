"""What recovery needs of the facade, as a Protocol (so recovery never imports ``rrstore.system``).

``run``, ``workflow``, ``resume`` and ``validate`` take any object with these
members; ``RollbackRecoverySystem`` is the one rrstore passes (mypy checks
it matches where system.py calls them). The facade sits above recovery and
imports it; recovery sees only this port and the verbs below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..checkpoint import CheckpointManager, CheckpointResult, NewCheckpoint
    from ..config import Settings
    from ..diff import DiffResult
    from ..record import CheckpointRecord
    from ..remoteconfig import RemoteSettings, RemoteTarget
    from ..restore import RestoreResult
    from ..status import StatusResult
    from ..store.store import Store
    from ..transfer import TransferResult
    from ..worktree.workers import Progress
    from .planner import RecoveryPlanner


class Listing(Protocol):
    """What recovery reads of a listing (the facade's ``ListResult``): the records, newest first."""

    checkpoints: list[CheckpointRecord]


class System(Protocol):
    """The members of ``RollbackRecoverySystem`` that recovery uses."""

    root: Path
    store_path: Path
    settings: Settings
    command_check: Callable[[list[str]], str | None] | None  # parses an rrstore command as the CLI would

    @property
    def checkpoint_manager(self) -> CheckpointManager: ...

    @property
    def recovery_planner(self) -> RecoveryPlanner: ...

    def open_store(self, create: bool = False) -> Store: ...

    def checkpoint(self, lane: str, step_number: int, step_name: str, *, success: bool | None = None,
                   error_message: str | None = None, progress: Progress | None = None,
                   strict: bool = False) -> CheckpointResult: ...

    def take_checkpoint(self, spec: NewCheckpoint, progress: Progress | None = None) -> CheckpointResult: ...

    def restore(self, checkpoint_id: str, *, paths: Sequence[str] | None = None, dry_run: bool = False,
                undo: bool = True, progress: Progress | None = None, force: bool = False) -> RestoreResult: ...

    def diff(self, old_id: str, new_id: str | None = None) -> DiffResult: ...

    def show(self, checkpoint_id: str) -> CheckpointRecord: ...

    def status(self, *, all_projects: bool = False) -> StatusResult: ...

    def list_remote(self, remote: str, endpoint_url: str | None = None, lane: str | None = None, *,
                    all_projects: bool = False) -> Listing: ...

    @property
    def push_setting(self) -> str: ...

    @property
    def remote_settings(self) -> RemoteSettings: ...

    def remote_target(self, remote: str | None = None, endpoint_url: str | None = None) -> RemoteTarget: ...

    def push(self, ids: Sequence[str], remote: str | None = None, endpoint_url: str | None = None, *,
             progress: Progress | None = None, rename_conflicts: bool = False) -> TransferResult: ...

    def pull(self, ids: Sequence[str], remote: str, endpoint_url: str | None = None, *,
             progress: Progress | None = None, all_projects: bool = False) -> TransferResult: ...
