"""Object store (layer above the backend): immutable bytes keyed by BLAKE3.

An object's id (``oid``) is the lowercase hex BLAKE3-256 of its uncompressed
bytes; it is stored as one zstd frame under ``objects/<oid[:2]>/<oid[2:]>``.
Compression settings never change an oid, so deduplication holds across
settings and machines. Every read is verified against its oid.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import zstandard

from .backends import Backend
from .errors import CorruptObject, ObjectMissing

OID_LEN = 64
# No object is larger: whole files are stored only up to the chunking
# threshold, chunks are at most 16 MiB; trees and records stay far below.
# A frame declaring more is refused before any memory is allocated for it.
MAX_OBJECT_SIZE = 256 << 20
_HEX = frozenset("0123456789abcdef")


def hash_bytes(data: bytes) -> str:
    """The oid of ``data``; equal to what ``b3sum`` prints for the same bytes."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO) if len(data) > 1 << 22 else blake3.blake3()
    hasher.update(data)
    return hasher.hexdigest()


def is_oid(text: object) -> bool:
    return isinstance(text, str) and len(text) == OID_LEN and set(text) <= _HEX


def object_key(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


@dataclass(frozen=True)
class PutResult:
    oid: str
    new: bool
    stored_size: int


class ObjectStore:
    """put/get/has/iter/delete of bytes; compression and verification live here."""

    def __init__(self, backend: Backend, level: int = 3, durable: bool = False) -> None:
        self.backend = backend
        self.level = level
        self.durable = durable
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "comp", None)
        if comp is None:
            comp = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.comp = comp
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "dec", None)
        if dec is None:
            dec = zstandard.ZstdDecompressor()
            self._local.dec = dec
        return dec

    def put(self, data: bytes, oid: str | None = None) -> PutResult:
        """Store ``data`` unless already present; ``oid`` skips re-hashing."""
        oid = oid or hash_bytes(data)
        key = object_key(oid)
        if self.backend.exists(key):
            return PutResult(oid, False, 0)
        frame = self._compressor().compress(data)
        self.backend.write(key, frame, durable=self.durable)
        return PutResult(oid, True, len(frame))

    def get(self, oid: str) -> bytes:
        """The verified bytes of ``oid``; raises ObjectMissing or CorruptObject."""
        try:
            frame = self.backend.read(object_key(oid))
        except KeyError:
            raise ObjectMissing(oid) from None
        try:
            size = zstandard.frame_content_size(frame)
            if not 0 <= size <= MAX_OBJECT_SIZE:
                raise CorruptObject(oid, reason=f"frame declares {size} bytes (limit {MAX_OBJECT_SIZE})")
            data = self._decompressor().decompress(frame, max_output_size=max(size, 1))
        except zstandard.ZstdError as exc:
            raise CorruptObject(oid, reason=f"not a valid zstd frame ({exc})") from None
        actual = hash_bytes(data)
        if actual != oid:
            raise CorruptObject(oid, actual=actual)
        return data

    def has(self, oid: str) -> bool:
        return self.backend.exists(object_key(oid))

    def __iter__(self) -> Iterator[str]:
        for key in self.backend.list("objects/"):
            parts = key.split("/")
            if len(parts) == 3 and is_oid(parts[1] + parts[2]):
                yield parts[1] + parts[2]

    def delete(self, oid: str) -> None:
        self.backend.delete(object_key(oid))

    def sync(self) -> None:
        """Write barrier: make every object written so far durable."""
        self.backend.sync()
