"""Storage backends (above the foundations): bytes by key, nothing about objects or refs.

``LocalBackend`` is a directory; ``s3.S3Backend`` an S3-compatible bucket
under a prefix (imported only by what talks to a remote: boto3 is slow to
load); ``views`` gives read-only views of either for transfers;
``memory.MemoryBackend`` keeps keys in a dict, for fast contract tests.
"""

from .base import Backend, check_key
from .local import LocalBackend

__all__ = ["Backend", "LocalBackend", "check_key"]
