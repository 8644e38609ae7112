"""Where an archive lives (below the archive verbs): a local file, or a key in a bucket (``s3://BUCKET/KEY``).

An archive on S3 is read as one streamed GET, a piece at a time: the reader
never seeks (``stream.FrameWalk`` checks the frames as the bytes pass), so
nothing is copied to local disk and memory stays bounded. One is written
by uploading a finished local file (``export``). Every error names the
archive exactly as the caller wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ..backends.s3 import SCHEME, S3Backend, S3Options, parse_remote
from ..errors import PermissionDenied, RRStoreError, UsageError, from_oserror
from .stream import Readable


def is_s3(name: object) -> bool:
    """Whether ``name`` is an ``s3://`` URL (a path object never is: ``Path`` would mangle ``//``)."""
    return isinstance(name, str) and name.startswith(SCHEME)


def s3_archive(url: str, endpoint_url: str | None = None,
               options: S3Options | None = None) -> tuple[S3Backend, str]:
    """The bucket (as a backend over its root) and key that ``s3://BUCKET/KEY`` names.

    The key must be written plainly (no empty, ``.`` or ``..`` parts, no
    trailing ``/``), so the key used is the one the user wrote and every
    message can name it as written.
    """
    invalid = UsageError(f"invalid archive URL {url}: give s3://BUCKET/KEY")
    try:
        bucket, key = parse_remote(url)
    except UsageError:
        raise invalid from None
    if not key or f"{SCHEME}{bucket}/{key}" != url:
        raise invalid
    return S3Backend(bucket, "", endpoint_url=endpoint_url, options=options or S3Options()), key


@contextmanager
def opened(name: str | os.PathLike[str], endpoint_url: str | None = None,
           options: S3Options | None = None) -> Iterator[tuple[Readable, int]]:
    """The archive ``name`` (a path or an s3:// URL) open for reading front to back, and its size.

    A missing archive is a UsageError; so is ``-`` (an archive is read twice
    to import it, so it cannot come from stdin).
    """
    if is_s3(name):
        with _s3_opened(str(name), endpoint_url, options) as got:
            yield got
        return
    if os.fspath(name) == "-":
        raise UsageError("an archive is read from a file, not from stdin ('-'); save it to a file first")
    try:
        fh = open(name, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise UsageError(f"no such archive: {os.fspath(name)}") from None
    except IsADirectoryError:
        raise UsageError(f"{os.fspath(name)} is a directory, not an archive") from None
    except OSError as exc:
        raise from_oserror(exc, os.fspath(name), "read") from exc
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size


@contextmanager
def s3_errors(url: str, action: str) -> Iterator[None]:
    """The backend's errors on the archive at ``url`` as errors naming ``url`` as given (no key: UsageError)."""
    try:
        yield
    except KeyError:
        raise UsageError(f"no such archive: {url}") from None
    except PermissionDenied:
        raise PermissionDenied(url, action) from None
    except RRStoreError as exc:
        if url in str(exc):
            raise
        raise RRStoreError(f"cannot {action} archive {url}: {exc}") from None


@contextmanager
def _s3_opened(url: str, endpoint_url: str | None, options: S3Options | None) -> Iterator[tuple[Readable, int]]:
    """One GET of the archive at ``url``; its failures (no key, no bucket, no credentials) name ``url``."""
    backend, key = s3_archive(url, endpoint_url, options)
    with ExitStack() as stack:
        with s3_errors(url, "read"):
            got = stack.enter_context(backend.open_read(key))
        yield got
