"""Merged pack indexes (store layer, beside ``pack``): the entries of many packs in one file.

Every checkpoint that changes anything adds a pack, and a reader that loads
one ``.idx`` per pack reads thousands of files after months of use. A merged
index (git's multi-pack-index and restic's index files are the models) holds
the entries of many packs: ``index/packs/<name>.midx``, named by the BLAKE3 of
its bytes, written once (temporary name + rename) and never changed::

    RRMX1\\n  <I> pack count  pack ids (32 raw bytes each, sorted)
              <I> entry count  entries <32sIQIII> sorted by oid:
                  oid, pack number (into the list), block offset, block size,
                  offset and length inside the uncompressed block
    BLAKE3 of everything before it (32 bytes)

It is derived data only. Locally every pack keeps its own ``.idx``, so a
merged index is never the only copy of anything: a damaged one (its trailer
does not match) is ignored and its packs' ``.idx`` are read instead; deleting
``index/`` costs speed, never a result. A reader loads the merged indexes
present (a small number: each new one covering all packs supersedes the
older ones, which its writer deletes) and then only the ``.idx`` of packs no
merged index covers; entries of covered packs whose ``.idx`` is gone (gc
removed the pack) are dropped.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import blake3

from ..errors import CorruptObject

if TYPE_CHECKING:
    from .pack import Location

MIDX_MAGIC = b"RRMX1\n"
MIDX_PREFIX = "index/packs/"
MIDX_SUFFIX = ".midx"
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<32sIQIII")
# A writer merges once more than this many packs are covered by no merged index:
# a reader then reads at most this many ``.idx`` files beside the merged ones.
UNCOVERED_MAX = 16


def midx_key(name: str) -> str:
    return f"{MIDX_PREFIX}{name}{MIDX_SUFFIX}"


def midx_name(key: str) -> str | None:
    """The name in ``index/packs/<name>.midx`` (64 hex digits), else None."""
    if not (key.startswith(MIDX_PREFIX) and key.endswith(MIDX_SUFFIX)):
        return None
    name = key[len(MIDX_PREFIX):-len(MIDX_SUFFIX)]
    return name if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else None


def encode_midx(members: dict[str, dict[str, Location]]) -> tuple[str, bytes]:
    """(name, bytes) of the merged index of ``members`` (pack id -> its entries)."""
    packs = sorted(members)
    number = {pack: i for i, pack in enumerate(packs)}
    rows = sorted((oid, number[pack], loc) for pack, entries in members.items() for oid, loc in entries.items())
    out = [MIDX_MAGIC, _COUNT.pack(len(packs)), *(bytes.fromhex(p) for p in packs), _COUNT.pack(len(rows))]
    out.extend(_ENTRY.pack(bytes.fromhex(oid), n, loc[1], loc[2], loc[3], loc[4]) for oid, n, loc in rows)
    body = b"".join(out)
    data = body + blake3.blake3(body).digest()
    return blake3.blake3(data).hexdigest(), data


def decode_midx(name: str, data: bytes) -> dict[str, dict[str, Location]]:
    """Pack id -> entries of a merged index; CorruptObject if its name, trailer or layout is wrong."""
    what = f"merged pack index {name}"
    body, digest = data[:-32], data[-32:]
    if (len(body) < len(MIDX_MAGIC) + 2 * _COUNT.size or not body.startswith(MIDX_MAGIC)
            or blake3.blake3(body).digest() != digest):
        raise CorruptObject(what, reason="merged index checksum mismatch")
    if blake3.blake3(data).hexdigest() != name:
        raise CorruptObject(what, reason="merged index bytes do not hash to its name")
    pos = len(MIDX_MAGIC)
    (npacks,) = _COUNT.unpack_from(body, pos)
    pos += _COUNT.size
    if len(body) < pos + 32 * npacks + _COUNT.size:
        raise CorruptObject(what, reason="merged index too short for its pack list")
    packs = [body[pos + 32 * i:pos + 32 * (i + 1)].hex() for i in range(npacks)]
    pos += 32 * npacks
    (count,) = _COUNT.unpack_from(body, pos)
    pos += _COUNT.size
    if len(body) != pos + count * _ENTRY.size:
        raise CorruptObject(what, reason="merged index length does not match its count")
    members: dict[str, dict[str, Location]] = {pack: {} for pack in packs}
    for raw, n, boff, bsize, off, length in _ENTRY.iter_unpack(body[pos:]):
        if n >= npacks:
            raise CorruptObject(what, reason=f"an entry names pack number {n} of {npacks}")
        pack = packs[n]
        members[pack][raw.hex()] = (pack, boff, bsize, off, length)
    return members
