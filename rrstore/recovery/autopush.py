"""Pushing step checkpoints as ``run`` and ``workflow`` record them (recovery layer): ``[remote] push``.

``push = "always"`` pushes each step's checkpoint once it is recorded;
``"on-failure"`` only a failed step's, together with the checkpoints of the
steps that passed before it in the same workflow run (a resume on another
runner reads the failed step's, which holds the state the last good step
left, and the earlier ones' for their recorded times and declared inputs);
``"never"`` (the default) nothing. A push that fails is reported, as a
warning and in the result, and never changes the step's exit status or
result: the step's outcome is what it is whether or not the remote answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..remoteconfig import RemoteTarget
    from .ports import System
    from .run import RunHooks


@dataclass(frozen=True)
class PushPolicy:
    """When steps push (``never``, ``on-failure``, ``always``) and where (None with ``never``)."""

    when: str = "never"
    target: RemoteTarget | None = None

    def wanted(self, success: bool) -> bool:
        return self.target is not None and (self.when == "always" or (self.when == "on-failure" and not success))


@dataclass
class PushOutcome:
    """One automatic push: what was asked, what went, and why it failed (``error``) if it did."""

    url: str
    checkpoints: list[str]
    transferred: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "checkpoints": self.checkpoints, "ok": self.ok,
                "transferred": self.transferred, "error": self.error}


def push_policy(system: System, remote: str | None = None, endpoint_url: str | None = None) -> PushPolicy:
    """The project's policy, its remote resolved now (``remote_target``): a policy that pushes but
    names no remote is a UsageError before any step runs, not a warning after each."""
    push = system.push_setting
    if push == "never":
        return PushPolicy()
    return PushPolicy(push, system.remote_target(remote, endpoint_url))


def push_checkpoints(system: System, policy: PushPolicy, ids: Sequence[str], hooks: RunHooks) -> PushOutcome:
    """Push ``ids`` to the policy's remote; never raises for the remote's failures (the outcome says)."""
    assert policy.target is not None
    target = policy.target
    outcome = PushOutcome(target.url, list(dict.fromkeys(ids)))
    try:
        result = system.push(outcome.checkpoints, target.url, target.endpoint_url)
    except Exception as exc:
        outcome.error = str(exc) or type(exc).__name__
    else:
        outcome.transferred = list(result.transferred)
        refusal = result.refusal()
        if result.conflicts:
            ids_ = ", ".join(c.checkpoint_id for c in result.conflicts)
            outcome.error = f"the remote has {ids_} with different records (push --rename-conflicts)"
        elif refusal is not None:
            outcome.error = str(refusal)
    if outcome.ok:
        hooks.say(f"rrstore: pushed {', '.join(outcome.checkpoints)} to {target.url} "
                  f"({len(outcome.transferred)} new)")
    else:
        hooks.warn(f"rrstore: warning: push to {target.url} failed: {outcome.error}")
    return outcome
