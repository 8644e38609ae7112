"""Storage backends: bytes by key. ``LocalBackend`` now; S3 joins it later."""

from .base import Backend, check_key
from .local import LocalBackend

__all__ = ["Backend", "LocalBackend", "check_key"]
