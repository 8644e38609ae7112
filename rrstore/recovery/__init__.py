"""Recovery layer (above the verbs, below the facade): plan, classify, validate, clean up, run, resume.

Modules: ``vocabulary`` (FailureType, RecoveryStrategy, Lane), ``plans``
(the plan table, overridable in configuration), ``planner``, ``classify``,
``validate``, ``cleanup``, ``process`` and ``run`` (one step with retries),
``workflow`` (a lane's steps, resume). ``RollbackRecoverySystem`` offers each
as a method; nothing here prints. Only the vocabulary is imported eagerly:
the CLI's start-up should not pay for the classifier's rules.
"""

from importlib import import_module
from typing import Any

from .vocabulary import FailureType, Lane, RecoveryStrategy

# (The function classify stays in its module: the package attribute of that name is the module.)
_LAZY = {"Classification": "classify", "RecoveryAction": "planner",
         "RecoveryPlan": "planner", "RecoveryPlanner": "planner"}

__all__ = ["Classification", "FailureType", "Lane", "RecoveryAction", "RecoveryPlan", "RecoveryPlanner",
           "RecoveryStrategy"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
