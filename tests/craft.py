"""Crafting rrstore input from the documented formats (docs/store-format.md sections 1, 2 and 8).

One builder, ``Craft``, makes objects bottom-up and writes them as an
archive, into a store directory or into an S3 remote; ``hostile_cases``
lists every hostile class the fault suite (tests/test_faults.py) feeds
rrstore. Nothing here uses rrstore's own writers, except the checkpoint
record's encoding.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import zstandard

# --- crafting objects: one builder for archives, hand-built stores and remotes ---------------------------


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _name_key(name: str) -> bytes:
    """rrstore's entry order (the name's file-system bytes); names no file system can hold sort by UTF-8."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


class Craft:
    """Objects built bottom-up from the documented formats, then written as an archive, a store or a remote.

    ``tree`` takes raw entry dicts so any name, type or field can be forged;
    ``raw_tree`` takes the bytes themselves (for encodings JSON cannot give).
    Objects are kept in creation order; an archive lists them in reverse, so
    whatever reaches an object comes before it, as the format requires.
    """

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.refs: dict[str, str] = {}

    def add(self, data: bytes) -> str:
        oid = b3(data)
        self.objects.setdefault(oid, data)
        return oid

    def file(self, name: str, content: bytes, executable: bool = False) -> dict[str, object]:
        return {"name": name, "type": "file", "hash": self.add(content), "size": len(content),
                "exec": executable}

    def raw_tree(self, data: bytes) -> str:
        return self.add(data)

    def tree(self, *entries: dict[str, object], sort: bool = True) -> str:
        items = sorted(entries, key=lambda e: _name_key(str(e["name"]))) if sort else list(entries)
        return self.add(canonical({"format": "rrstore-tree-1", "entries": items}))

    def dir(self, name: str, *entries: dict[str, object]) -> dict[str, object]:
        return {"name": name, "type": "dir", "tree": self.tree(*entries)}

    def path(self, path: str, content: bytes = b"#!/bin/sh\necho planted\n") -> dict[str, object]:
        """The root entry of ``a/b/c`` holding ``content``: a chain of directories down to one file."""
        first, *rest = path.split("/")
        if not rest:
            return self.file(first, content, executable=True)
        return {"name": first, "type": "dir", "tree": self.tree(self.path("/".join(rest), content))}

    def checkpoint(self, checkpoint_id: str, root: str,
                   timestamp: str = "2026-01-02T03:04:05.000000+00:00") -> str:
        from rrstore.record import CheckpointRecord

        data = CheckpointRecord(checkpoint_id=checkpoint_id, lane="standard", step_number=1, step_name="crafted",
                                timestamp=timestamp, state_hash=root).encode()
        oid = self.add(data)
        self.refs[checkpoint_id] = oid
        return oid

    def stream(self, *, trailer: bool = True) -> bytes:
        """The uncompressed ``rrstore-archive-1`` stream: header line, objects, trailer and its BLAKE3."""
        header = canonical({"format": "rrstore-archive-1", "created": "2026-01-02T03:04:05+00:00",
                            "rrstore_version": "crafted",
                            "checkpoints": [{"id": i, "record": r} for i, r in self.refs.items()]})
        body = bytearray(header + b"\n")
        ordered = list(reversed(self.objects.items()))
        for oid, data in ordered:
            body += b"O" + bytes.fromhex(oid) + struct.pack("<Q", len(data)) + data
        if trailer:
            body += b"T" + struct.pack("<QQ", len(ordered), sum(len(d) for _, d in ordered))
            body += blake3.blake3(bytes(body)).digest()
        return bytes(body)

    def archive(self) -> bytes:
        return zstandard.ZstdCompressor(level=3).compress(self.stream())

    def store_files(self) -> dict[str, bytes]:
        """key -> bytes of a store (or remote) holding these objects loose and these refs."""
        config = {"compression": "zstd", "format": "rrstore-store-1", "hash": "blake3-256",
                  "object_path": "objects/<oid[0:2]>/<oid[2:]>"}
        out = {"config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()}
        comp = zstandard.ZstdCompressor(level=3, write_content_size=True)
        for oid, data in self.objects.items():
            out[f"objects/{oid[:2]}/{oid[2:]}"] = comp.compress(data)
        for checkpoint_id, oid in self.refs.items():
            out[f"refs/checkpoints/{checkpoint_id}"] = (oid + "\n").encode()
        return out

    def into_store(self, store: Path, config: bool = False) -> None:
        """Add the objects and refs to a store directory (its config.json only if ``config``)."""
        for key, data in self.store_files().items():
            if key == "config.json" and not config:
                continue
            path = store / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def into_remote(self, client: object, bucket: str, prefix: str) -> None:
        for key, data in self.store_files().items():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)  # type: ignore[attr-defined]


def rle_zeros(prefix: bytes, zeros: int) -> bytes:
    """One zstd frame: ``prefix`` as a raw block, then ``zeros`` zero bytes as 4-byte RLE blocks."""
    out = bytearray(struct.pack("<I", 0xFD2FB528) + bytes([0x00, 7 << 3]))
    blocks = [(0, len(prefix), prefix)] if prefix else []
    while zeros:
        n = min(zeros, 128 << 10)
        zeros -= n
        blocks.append((1, n, b"\0"))
    for i, (kind, n, body) in enumerate(blocks):
        out += ((i == len(blocks) - 1) | kind << 1 | n << 3).to_bytes(3, "little") + body
    return bytes(out)


# --- hostile input: every class of issue 8, as (crafted tree or raw archive bytes) -----------------------

EVIL_ID = "evil-step1-20260102_030405"
GiB = 1 << 30


@dataclass(frozen=True)
class Hostile:
    """``build(existing checkpoint id, box path)`` gives a Craft (a tree class) or raw archive bytes.

    Tree classes also go through ``pull`` from a hand-built remote and
    ``restore`` from a hand-built store: their hashes are all consistent.
    """

    build: Callable[[str, Path], Craft | bytes]
    tree: bool


def _tree_case(make: Callable[[Craft, str, Path], list[dict[str, object]]]) -> Hostile:
    def build(existing: str, box: Path) -> Craft:
        craft = Craft()
        craft.checkpoint(EVIL_ID, craft.tree(*make(craft, existing, box)))
        return craft
    return Hostile(build, True)


def _raw_name_case(existing: str, box: Path) -> Craft:
    """A tree whose JSON holds a raw 0xff byte in a name (a tree is ASCII JSON: no encoder writes this)."""
    craft = Craft()
    entry = craft.file("bad-name", b"x\n")
    data = canonical({"format": "rrstore-tree-1", "entries": [entry]}).replace(b"bad-name", b"bad\xffname")
    craft.checkpoint(EVIL_ID, craft.raw_tree(data))
    return craft


def _good() -> tuple[Craft, bytes]:
    craft = Craft()
    entries = [craft.file("a.txt", b"hello\n"), craft.dir("d", craft.file("inner.txt", b"inner\n"))]
    craft.checkpoint(EVIL_ID, craft.tree(*entries))
    return craft, craft.stream()


def _zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


def _spans(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each object's data in an uncompressed stream; the trailer starts at the last end."""
    at, out = raw.index(b"\n") + 1, []
    while raw[at:at + 1] == b"O":
        size = struct.unpack_from("<Q", raw, at + 33)[0]
        out.append((at + 41, at + 41 + size))
        at += 41 + size
    return out


def _stream_cases() -> dict[str, Hostile]:
    def case(make: Callable[[], bytes]) -> Hostile:
        return Hostile(lambda existing, box: make(), False)

    craft, raw = _good()
    spans = _spans(raw)
    trailer = spans[-1][1]
    cuts = {"header": raw.index(b"\n") // 2, "object header": raw.index(b"\n") + 20,
            "record": sum(spans[0]) // 2, "tree": sum(spans[1]) // 2, "content": sum(spans[-1]) // 2,
            "before the trailer": trailer, "trailer counts": trailer + 6, "checksum": len(raw) - 16,
            "last byte": len(raw) - 1}
    out = {f"truncated: {name}": case(functools.partial(lambda at: _zstd(raw[:at]), at)) for name, at in cuts.items()}
    whole = _zstd(raw)
    altered = raw.replace(b"hello\n", b"hellO\n")
    first = raw.index(b"\n") + 1
    dup_at = spans[-1][0] - 41
    duplicated = raw[:trailer] + raw[dup_at:trailer]
    head = raw[:first]
    record_oid = next(iter(craft.refs.values()))

    out |= {
        "compressed file cut in half": case(lambda: whole[:len(whole) // 2]),
        "compressed file missing its last byte": case(lambda: whole[:-1]),
        "wrong hash": case(lambda: _zstd(altered)),
        "wrong hash, trailer recomputed": case(lambda: _zstd(altered[:-32] + blake3.blake3(altered[:-32]).digest())),
        "duplicate object": case(lambda: _zstd(duplicated + b"T" + struct.pack("<QQ", len(spans) + 1, 0)
                                               + blake3.blake3(duplicated).digest())),
        "decompression bomb (zeros for a header)": case(lambda: rle_zeros(b"", 4 * GiB)),
        "decompression bomb (an 8 GiB object)": case(
            lambda: rle_zeros(head + b"O" + bytes.fromhex(record_oid) + struct.pack("<Q", 8 * GiB), 8 * GiB)),
        "huge claimed object size": case(
            lambda: _zstd(head + b"O" + bytes.fromhex(record_oid) + struct.pack("<Q", (1 << 64) - 1))),
        "huge size in a tree entry": Hostile(_tree_case(
            lambda c, e, b: [{**c.file("a.txt", b"hello\n"), "size": 1 << 62}]).build, False),
    }
    return out


def hostile_cases() -> dict[str, Hostile]:
    """Every hostile class: trees that would write where nothing may be written, and broken streams."""
    planted = b"#!/bin/sh\necho planted\n"
    trees = {
        ".git/hooks/post-checkout": lambda c, e, b: [c.path(".git/hooks/post-checkout"), c.file("a.txt", b"a\n")],
        ".GIT/hooks/post-checkout": lambda c, e, b: [c.path(".GIT/hooks/post-checkout")],
        "sub/.git/config": lambda c, e, b: [c.path("sub/.git/config", b"[core]\n\tfsmonitor = echo pwned\n")],
        ".checkpoints/refs/checkpoints/<existing id>": lambda c, e, b: [
            c.path(f".checkpoints/refs/checkpoints/{e}", b"0" * 64 + b"\n")],
        ".checkpoints/config.json": lambda c, e, b: [c.path(".checkpoints/config.json", b'{"format": null}\n')],
        "name ..": lambda c, e, b: [c.file("..", planted)],
        "name .": lambda c, e, b: [c.file(".", planted)],
        "name ../../escape.txt": lambda c, e, b: [c.file("../../sibling/escape.txt", planted)],
        "name with a slash": lambda c, e, b: [c.file("sub/file.txt", planted)],
        "absolute name": lambda c, e, b: [c.file(f"{b}/sibling/planted.txt", planted)],
        "empty name": lambda c, e, b: [c.file("", planted)],
        "NUL in a name": lambda c, e, b: [c.file("a\0b", planted)],
        "absolute symlink": lambda c, e, b: [{"name": "l", "type": "symlink", "target": f"{b}/sibling/keep.txt"}],
        "symlink ../..": lambda c, e, b: [{"name": "l", "type": "symlink", "target": "../../sibling/keep.txt"}],
        "symlink out of a subdirectory": lambda c, e, b: [
            c.dir("d", {"name": "up", "type": "symlink", "target": "../../x"})],
        "duplicate entries": lambda c, e, b: [c.file("a.txt", b"one\n"), c.file("a.txt", b"two\n")],
        "unencodable name (lone surrogate)": lambda c, e, b: [c.file("bad\ud800name", planted)],
    }
    out = {name: _tree_case(make) for name, make in trees.items()}
    out["non-UTF-8 byte in a tree"] = Hostile(_raw_name_case, True)
    return out | _stream_cases()


def good_craft(timestamp: str = "2026-01-02T03:04:05.000000+00:00",
               checkpoint_id: str = EVIL_ID) -> tuple[Craft, dict[bytes, bytes | str]]:
    """A well-formed crafted checkpoint (the control) and what restoring it must give: path bytes -> content."""
    craft = Craft()
    entries = [craft.file("a.txt", b"hello\n"), craft.file("run.sh", b"#!/bin/sh\n", executable=True),
               craft.file("bad\udcffname", b"not utf-8 named\n"),
               craft.dir("d", craft.file("inner.txt", b"inner\n"),
                         {"name": "up", "type": "symlink", "target": "../a.txt"})]
    craft.checkpoint(checkpoint_id, craft.tree(*entries), timestamp)
    want: dict[bytes, bytes | str] = {b"a.txt": b"hello\n", b"run.sh": b"#!/bin/sh\n",
                                      b"bad\xffname": b"not utf-8 named\n", b"d/inner.txt": b"inner\n",
                                      b"d/up": "../a.txt"}
    return craft, want
