"""The record index (trees-and-records layer): every checkpoint's ref and record in one file.

Listing and selection (``list``, ``show latest``, ``status``, resume, gc's
choice, a remote's listing) need each checkpoint's record. Reading every ref
and record costs a file (or a GET) each; the index ``index/records`` keeps
them in one, validated like git's index: beside each ref's content it holds
the ref's *change token* (``Backend.list_tokens``: inode, times and size of a
local file, the ETag of an S3 object). A reader lists the refs with their
tokens (one listing), loads the index, and reads refs and records only for
ids that are new or whose token differs; ids gone are dropped. Records are
kept by their oid (immutable objects), so a ref moved to another record
costs one read.

The index is only a cache (``docs/store-format.md``): a damaged one (BLAKE3
trailer) is ignored and rebuilt, a missing one is rebuilt, a failed write
(a read-only store) costs only time. It serves listing and selection; what
writes from a record re-reads what it needs by oid, verified.

Format: ``MAGIC``, a zstd frame of canonical JSON ``{"format": FORMAT,
"fields": [field names], "refs": {id: [token, record oid, added_ns or null]},
"records": {oid: [the record's fields, in "fields" order]}}``, then the
BLAKE3-256 digest of everything before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import blake3
import zstandard

from .backends import Backend
from .errors import CorruptObject, ObjectMissing, RRStoreError
from .fsutil import atomic_write
from .record import ROW_FIELDS, CheckpointRecord, added_ns_of, owned_by
from .store.objects import ObjectStore, canonical_json
from .store.refs import PREFIX, Ref, decode_ref, valid_id

INDEX_KEY = "index/records"
MAGIC = b"RRRECIDX1\n"
FORMAT = "rrstore-record-index-1"
DIGEST = 32
T = TypeVar("T")
_OID = re.compile(r"[0-9a-f]{64}")
# A decompressed index larger than this is refused (a record is ~1 KiB: a million checkpoints fit).
MAX_INDEX = 256 << 20  # ~500k checkpoints; a bigger one is refused as damaged (a bomb), never loaded


@dataclass(frozen=True)
class IndexedRef:
    """What the index knows of one ref: its token when read, the record it names, when it was added
    (None: a one-line ref whose add time is not resolved yet, see ``record.added_ns_of``)."""

    token: str
    oid: str
    added_ns: int | None


@dataclass
class RecordIndex:
    """The decoded index: refs by id, records (``CheckpointRecord.row``: unchecked until used) by oid."""

    refs: dict[str, IndexedRef] = field(default_factory=dict)
    records: dict[str, list[object]] = field(default_factory=dict)

    def encode(self) -> bytes:
        doc = {"format": FORMAT, "fields": list(ROW_FIELDS),
               "refs": {i: [e.token, e.oid, e.added_ns] for i, e in self.refs.items()},
               "records": {oid: self.records[oid] for oid in {e.oid for e in self.refs.values()}
                           if oid in self.records}}
        body = MAGIC + zstandard.ZstdCompressor(level=3).compress(canonical_json(doc))
        return body + blake3.blake3(body).digest()

    @classmethod
    def decode(cls, data: bytes) -> RecordIndex:
        """The index in ``data``; ValueError when it is damaged or not an index."""
        body, digest = data[:-DIGEST], data[-DIGEST:]
        if len(data) <= len(MAGIC) + DIGEST or not body.startswith(MAGIC) or blake3.blake3(body).digest() != digest:
            raise ValueError("damaged record index (checksum)")
        try:
            raw = zstandard.ZstdDecompressor().decompress(body[len(MAGIC):], max_output_size=MAX_INDEX)
            doc = json.loads(raw)
        except (zstandard.ZstdError, ValueError, RecursionError) as exc:  # nested past the limit: a crafted one
            raise ValueError(f"damaged record index ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a record index of this format")
        refs, records = doc.get("refs"), doc.get("records")
        if not isinstance(refs, dict) or not isinstance(records, dict):
            raise ValueError("damaged record index (layout)")
        is_oid = _OID.fullmatch
        # records of another field list (another rrstore version) are left out: read again when needed
        index = cls(records={oid: r for oid, r in records.items() if is_oid(oid) and isinstance(r, list)}
                    if doc.get("fields") == list(ROW_FIELDS) else {})
        for checkpoint_id, entry in refs.items():
            if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], str) and is_oid(entry[1])
                    and (entry[2] is None or (isinstance(entry[2], int) and not isinstance(entry[2], bool)))
                    and valid_id(checkpoint_id)):
                index.refs[checkpoint_id] = IndexedRef(entry[0], entry[1], entry[2])
        return index


class IndexSource(Protocol):
    """Where an index is kept: a store's own ``index/records``, or a local copy of a remote's."""

    def load(self) -> RecordIndex | None:
        """The index, or None when missing or damaged (then ``damaged`` says why)."""
        ...

    def save(self, data: bytes) -> None:
        """Keep ``data`` (best effort: a failed write only costs time)."""
        ...


class KeySource:
    """``index/records`` of a backend (a store's own, or a remote's)."""

    def __init__(self, backend: Backend, writable: bool = True) -> None:
        self.backend = backend
        self.writable = writable
        self.damaged: str | None = None

    def load(self) -> RecordIndex | None:
        try:
            data = self.backend.read(INDEX_KEY)
        except (KeyError, RRStoreError):
            return None
        return _decoded(self, data)

    def save(self, data: bytes) -> None:
        if self.writable:
            with contextlib.suppress(RRStoreError, OSError):
                self.backend.write(INDEX_KEY, data)


class FileSource:
    """A local file holding a copy of an index (a remote's, under the store's ``cache/``)."""

    def __init__(self, path: Path, tmp: Path) -> None:
        self.path = path
        self.tmp = tmp
        self.damaged: str | None = None

    def load(self) -> RecordIndex | None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        return _decoded(self, data)

    def save(self, data: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, data, self.tmp, fsync=False)
        except (RRStoreError, OSError):
            pass


def _decoded(source: KeySource | FileSource, data: bytes) -> RecordIndex | None:
    try:
        return RecordIndex.decode(data)
    except ValueError as exc:
        source.damaged = str(exc)
    except Exception as exc:  # any other damage (JSON nested past the recursion limit, odd types): only a cache
        source.damaged = f"damaged record index ({type(exc).__name__})"
    return None


@dataclass
class RecordListing:
    """One store's checkpoints as the index and one listing of its refs show them."""

    records: dict[str, CheckpointRecord] = field(default_factory=dict)   # id -> record (listing order)
    oids: dict[str, str] = field(default_factory=dict)                   # id -> record oid, every readable ref
    damaged: dict[str, RRStoreError] = field(default_factory=dict)
    index: RecordIndex = field(default_factory=RecordIndex)              # what was (or would be) written
    reads: int = 0              # refs and records read because the index did not have them
    changed: bool = False       # the index written differs from the one read


@dataclass
class RecordReader:
    """Reads one store's refs and records through its record index.

    ``mtime`` (local stores): a one-line ref's add time is clamped to its file's
    mtime, as ``CheckpointManager`` always did; a remote's is not (no stat per ref).
    ``workers``: reads in parallel (a remote).
    """

    backend: Backend
    objects: ObjectStore
    sources: Sequence[IndexSource]
    mtime: bool = True
    workers: int = 1
    save_to: Sequence[IndexSource] | None = None   # default: the first source
    # per listing: record docs found in the sources by oid, and records that could not be read
    _docs: dict[str, list[object]] = field(default_factory=dict, init=False, repr=False)
    _errors: dict[str, RRStoreError] = field(default_factory=dict, init=False, repr=False)
    _loaded: dict[int, RecordIndex | None] = field(default_factory=dict, init=False, repr=False)

    def listing(self, *, records: bool = True, only: Iterable[str] | None = None,
                known_records: Mapping[str, list[object]] | None = None) -> RecordListing:
        """Every ref (or those of ``only``) with its record oid, and with ``records`` its record.

        Without ``records`` only refs are read for stale entries (push's question: which ids
        does the remote have, naming which record). ``known_records`` (oid -> ``row``)
        are records the caller read and verified itself (push: those it just sent), not read again.
        """
        tokens = {key[len(PREFIX):]: token for key, token in self.backend.list_tokens(PREFIX)
                  if valid_id(key[len(PREFIX):])}
        if only is not None:
            wanted = set(only)
            tokens = {i: t for i, t in tokens.items() if i in wanted}
        out = RecordListing()
        self._docs, self._errors = dict(known_records or {}), {}
        known, first = self._known(tokens, records)
        stale = [i for i in tokens if i not in known]
        reads = self._read_refs(stale, tokens, out)
        known.update(reads)
        needed = [oid for oid in dict.fromkeys(e.oid for e in known.values()) if oid not in out.index.records]
        if records and needed:
            self._read_records(needed, out)
        for checkpoint_id in tokens:
            entry = known.get(checkpoint_id)
            if entry is None:
                continue
            out.oids[checkpoint_id] = entry.oid
            if not records:
                out.index.refs[checkpoint_id] = entry
                if entry.oid in self._docs:
                    out.index.records[entry.oid] = self._docs[entry.oid]
                continue
            record = self._record(checkpoint_id, entry, out)
            if record is None and checkpoint_id not in reads and checkpoint_id in out.damaged:
                record = self._reread(checkpoint_id, tokens[checkpoint_id], out)  # the index's entry may be wrong
            if record is not None:
                out.records[checkpoint_id] = record
        out.damaged = {i: out.damaged[i] for i in tokens if i in out.damaged}  # in listing order
        out.changed = out.changed or _differs(first, out.index)
        if only is None:
            data = b""
            for source in self.sources[:1] if self.save_to is None else self.save_to:
                # a source not read (an earlier one had everything) is left as it is: readers check tokens
                if id(source) in self._loaded and _differs(self._loaded[id(source)], out.index):
                    data = data or out.index.encode()
                    source.save(data)
        return out

    def _known(self, tokens: dict[str, str], records: bool) -> tuple[dict[str, IndexedRef], RecordIndex | None]:
        """Entries of the sources whose token is the listed one (sources asked in order, while any is stale)."""
        known: dict[str, IndexedRef] = {}
        first: RecordIndex | None = None
        self._loaded = {}
        for n, source in enumerate(self.sources):
            index = source.load()
            self._loaded[id(source)] = index
            if n == 0:
                first = index
            if index is None:
                continue
            for checkpoint_id, token in tokens.items():
                entry = index.refs.get(checkpoint_id)
                if checkpoint_id not in known and entry is not None and token and entry.token == token:
                    known[checkpoint_id] = entry
            for oid in {e.oid for e in known.values()}:
                if oid not in self._docs and oid in index.records:
                    self._docs[oid] = index.records[oid]
            if len(known) == len(tokens) and (not records or all(e.oid in self._docs for e in known.values())):
                break
        return known, first

    def _read_refs(self, ids: list[str], tokens: dict[str, str], out: RecordListing) -> dict[str, IndexedRef]:
        def read(checkpoint_id: str) -> IndexedRef | RRStoreError | None:
            try:
                ref = decode_ref(checkpoint_id, self.backend.read(PREFIX + checkpoint_id))
            except KeyError:
                return None  # deleted since the listing
            except CorruptObject as exc:
                return exc
            return IndexedRef(tokens[checkpoint_id], ref.oid, ref.added_ns)

        found: dict[str, IndexedRef] = {}
        for checkpoint_id, got in zip(ids, _each(read, ids, self.workers), strict=True):
            out.reads += 1
            out.changed = True
            if isinstance(got, RRStoreError):
                out.damaged[checkpoint_id] = got
            elif got is not None:
                found[checkpoint_id] = got
        return found

    def _read_records(self, oids: list[str], out: RecordListing) -> None:
        """Records not in any index, read and verified by oid; a damaged one is kept as its error."""
        def read(oid: str) -> list[object] | RRStoreError:
            row = self._docs.get(oid)
            if row is not None:
                return row
            try:
                return CheckpointRecord.decode(oid, self.objects.get(oid)).row()
            except (ObjectMissing, CorruptObject) as exc:
                return exc

        for oid, got in zip(oids, _each(read, oids, self.workers), strict=True):
            if isinstance(got, RRStoreError):
                self._errors[oid] = got
                continue
            if oid not in self._docs:
                out.reads += 1
                out.changed = True
            out.index.records[oid] = got

    def _record(self, checkpoint_id: str, entry: IndexedRef, out: RecordListing) -> CheckpointRecord | None:
        error = self._errors.get(entry.oid)
        row = out.index.records.get(entry.oid)
        try:
            if error is not None:
                raise error
            try:
                record = CheckpointRecord.from_row(entry.oid, row)
            except Exception:  # a malformed row of the cache (damage, a crafted index): the record itself
                record = CheckpointRecord.decode(entry.oid, self.objects.get(entry.oid))
                out.index.records[entry.oid] = record.row()
                out.changed = True
        except (ObjectMissing, CorruptObject) as exc:
            out.damaged[checkpoint_id] = exc.with_checkpoints([checkpoint_id])
            out.index.records.pop(entry.oid, None)
            return None
        try:
            owned_by(checkpoint_id, record)  # the record is sound (another ref's): its row stays
        except CorruptObject as exc:
            out.damaged[checkpoint_id] = exc
            return None
        added = entry.added_ns
        if added is None:
            mtime = self._mtime_ns(checkpoint_id) if self.mtime else None
            added = added_ns_of(Ref(entry.oid, None), record.created, mtime)
            entry = IndexedRef(entry.token, entry.oid, added)
            out.changed = True
        record.added_ns = added
        out.index.refs[checkpoint_id] = entry
        return record

    def _reread(self, checkpoint_id: str, token: str, out: RecordListing) -> CheckpointRecord | None:
        """An indexed ref whose record could not be used, read from the ref itself: a damaged or
        crafted index (an entry naming another checkpoint's record, with the ref's valid token) is a
        cache to ignore, never damage to report."""
        del out.damaged[checkpoint_id]
        found = self._read_refs([checkpoint_id], {checkpoint_id: token}, out)
        entry = found.get(checkpoint_id)
        if entry is None:
            return None
        if entry.oid not in out.index.records:
            self._docs.pop(entry.oid, None)
            self._read_records([entry.oid], out)
        return self._record(checkpoint_id, entry, out)

    def _mtime_ns(self, checkpoint_id: str) -> int | None:
        try:
            return int(self.backend.stat(PREFIX + checkpoint_id)[1] * 1_000_000_000)
        except KeyError:
            return None


def _differs(old: RecordIndex | None, new: RecordIndex) -> bool:
    """Whether ``old`` (None: missing or damaged) lacks what ``new`` holds or holds what it dropped."""
    return old is None or old.refs != new.refs or any(oid not in old.records for oid in new.records)


def _each(fn: Callable[[str], T], items: list[str], workers: int) -> list[T]:
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def local_reader(backend: Backend, objects: ObjectStore) -> RecordReader:
    """The reader of a store's own refs, through its ``index/records``."""
    return RecordReader(backend, objects, [KeySource(backend)])


def remote_cache_path(store_path: Path, location: str) -> Path:
    """Where a store keeps its copy of a remote's record index (``cache/remotes/<16 hex>/records``)."""
    return store_path / "cache" / "remotes" / blake3.blake3(location.encode()).hexdigest()[:16] / "records"


def remote_reader(remote: Backend, store_path: Path | None, *, workers: int,
                  update_remote: bool = False) -> RecordReader:
    """The reader of a remote's refs: the local copy of its index first (``store_path``'s cache),
    then its own ``index/records``; what was read is kept in the local copy (and, with
    ``update_remote``, pushed back to the remote's index)."""
    remote_key = KeySource(remote)
    sources: list[IndexSource] = [remote_key]
    save: list[IndexSource] = [remote_key] if update_remote else []
    if store_path is not None and os.path.isfile(store_path / "config.json"):
        copy = FileSource(remote_cache_path(store_path, remote.location), store_path / "tmp")
        sources.insert(0, copy)
        save.append(copy)
    return RecordReader(remote, ObjectStore(remote), sources, mtime=False, workers=workers, save_to=save)
