"""``rrstore stats`` against an independent count of the store's own files (issue 13, Done when).

The census below reads nothing through rrstore: sizes come from ``os.lstat``
of every file, objects from decompressing loose files and pack blocks with
``zstandard`` and checking each with ``blake3``, records and trees from their
JSON, refs from their two lines. Every figure ``stats --json`` prints is
compared with it, for a real git repository's checkpoints: identical trees in
two lanes, a changed file, a duplicated file, a chunked large file, an undo
point, a pin, a failed step, a gc that rewrote packs, a forgotten
checkpoint whose objects still wait for gc, and checkpoints of three days.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard
from conftest import git, make_repo, write

from rrstore import RollbackRecoverySystem
from rrstore.gc import Retention

Cli = Callable[..., subprocess.CompletedProcess[str]]
TOP = 4
PARTS = ("objects", "packs", "index", "cache", "refs", "tmp", "locks", "quarantine")


def _checked(oid: str, data: bytes) -> bytes:
    assert blake3.blake3(data).hexdigest() == oid, f"object {oid} does not hash to its name"
    return data


@dataclass
class Census:
    """The store counted from its files alone."""

    store: Path
    objects: dict[str, bytes] = field(default_factory=dict)   # oid -> verified bytes
    stored: dict[str, int] = field(default_factory=dict)      # oid -> stored bytes (file, or share of its block)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def read(self) -> Census:
        for part in (*PARTS, "other"):
            self.usage[part] = {"files": 0, "bytes": 0, "disk": 0}
        for top, _dirs, files in os.walk(self.store):
            first = Path(top).relative_to(self.store).parts[:1]
            part = first[0] if first and first[0] in PARTS else "other"
            for name in files:
                st = os.lstat(os.path.join(top, name))
                self.usage[part]["files"] += 1
                self.usage[part]["bytes"] += st.st_size
                self.usage[part]["disk"] += st.st_blocks * 512
        for path in sorted((self.store / "objects").glob("*/*")):
            oid = path.parent.name + path.name
            self.objects[oid] = _checked(oid, zstandard.ZstdDecompressor().decompress(path.read_bytes()))
            self.stored[oid] = path.stat().st_size
        for path in sorted((self.store / "packs").glob("*.pack")):
            self._pack(path.read_bytes())
        return self

    def _pack(self, raw: bytes) -> None:
        """A pack: ``RRPK2\\n``, then zstd frames; each frame's bytes start with a table (count, then oid
        and length per object), followed by the objects."""
        assert raw[:6] == b"RRPK2\n"
        pos = 6
        while pos < len(raw):
            reader = zstandard.ZstdDecompressor().decompressobj()
            block = reader.decompress(raw[pos:])
            frame = len(raw) - pos - len(reader.unused_data)
            (count,) = struct.unpack_from("<I", block, 0)
            table = [struct.unpack_from("<32sI", block, 4 + 36 * i) for i in range(count)]
            at, total = 4 + 36 * count, sum(n for _, n in table)
            for raw_oid, n in table:
                oid = raw_oid.hex()
                data = _checked(oid, block[at:at + n])
                at += n
                if oid not in self.stored:  # a loose copy is the one read
                    self.objects[oid], self.stored[oid] = data, frame * n // total
            pos += frame

    def doc(self, oid: str) -> dict[str, Any]:
        return json.loads(self.objects[oid])

    def refs(self) -> dict[str, tuple[str, int]]:
        """Checkpoint id -> (record oid, added_ns), from the two lines of each ref."""
        out = {}
        for path in (self.store / "refs" / "checkpoints").iterdir():
            oid, added = path.read_text().split("\n")[:2]
            out[path.name] = (oid, int(added))
        return out

    def files(self, tree: str, prefix: str = "") -> list[tuple[str, dict[str, Any], list[str]]]:
        """(path, file entry, the trees on the way) for every file below ``tree``, recursively."""
        out = []
        for entry in self.doc(tree)["entries"]:
            path = prefix + entry["name"]
            if entry["type"] == "dir":
                out += [(p, e, [entry["tree"], *t]) for p, e, t in self.files(entry["tree"], path + "/")]
            elif entry["type"] == "file":
                out.append((path, entry, []))
        return out

    def trees(self, tree: str, prefix: str = "") -> list[tuple[str, str]]:
        """(path, oid) of every directory below ``tree``."""
        out = []
        for entry in self.doc(tree)["entries"]:
            if entry["type"] == "dir":
                path = prefix + entry["name"]
                out += [(path, entry["tree"]), *self.trees(entry["tree"], path + "/")]
        return out


def expected(census: Census, top: int) -> dict[str, Any]:
    """Every figure of ``stats --json``, from the census."""
    refs = census.refs()
    records = {i: census.doc(oid) for i, (oid, _) in refs.items()}
    order = sorted(refs, key=lambda i: (refs[i][1], datetime.fromisoformat(records[i]["timestamp"]).timestamp(), i))
    newest_first = order[::-1]
    files = {i: census.files(records[i]["state_hash"]) for i in refs}
    sizes = {e["hash"]: e["size"] for i in refs for _, e, _ in files[i]}
    logical = {i: sum(e["size"] for _, e, _ in files[i]) for i in refs}
    lanes: dict[str, dict[str, int]] = {}
    for i in refs:
        lane = lanes.setdefault(records[i]["lane"], {"checkpoints": 0, "logical_bytes": 0})
        lane["checkpoints"] += 1
        lane["logical_bytes"] += logical[i]
    days: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for i in order:
        name = datetime.fromtimestamp(refs[i][1] / 1e9, UTC).date().isoformat()
        day = days.setdefault(name, {"day": name, "checkpoints": 0, "objects": 0, "stored_bytes": 0})
        day["checkpoints"] += 1
        reached = [refs[i][0], records[i]["state_hash"], *(t for _, o in census.trees(records[i]["state_hash"])
                                                            for t in [o])]
        for _, entry, _ in files[i]:
            reached += entry.get("chunks") or [entry["hash"]]
        for oid in reached:
            if oid not in seen:
                seen.add(oid)
                day["objects"] += 1
                day["stored_bytes"] += census.stored[oid]
    unique = sum(sizes.values())
    stored = census.usage["objects"]["bytes"] + census.usage["packs"]["bytes"]
    referenced = sum(d["stored_bytes"] for d in days.values())
    newest_step = next(i for i in newest_first if records[i]["kind"] == "step")
    dirs = []
    for path, oid in census.trees(records[newest_step]["state_hash"]):
        below = census.files(oid)
        dirs.append({"path": path, "bytes": sum(e["size"] for _, e, _ in below), "files": len(below)})
    biggest = sorted(sizes, key=lambda h: (-sizes[h], h))[:top]
    return {
        "checkpoints": {"total": len(refs), "pinned": len(os.listdir(census.store / "refs" / "pins")),
                        "kinds": dict(Counter(r["kind"] for r in records.values())), "lanes": lanes},
        "files": sum(len(f) for f in files.values()), "logical_bytes": sum(logical.values()),
        "unique_files": len(sizes), "unique_bytes": unique, "stored_bytes": stored,
        "referenced_bytes": referenced, "unreferenced_bytes": stored - referenced,
        "dedup_ratio": round(sum(logical.values()) / unique, 3), "compression_ratio": round(unique / stored, 3),
        "store_usage": {**census.usage, "total": {k: sum(u[k] for u in census.usage.values())
                                                  for k in ("files", "bytes", "disk")}},
        "biggest_files": [{"hash": h, "size": sizes[h],
                           "checkpoints": [i for i in newest_first if any(e["hash"] == h for _, e, _ in files[i])]}
                          for h in biggest],
        "paths": {h: {p for p, e, _ in files[next(i for i in newest_first if any(
            e["hash"] == h for _, e, _ in files[i]))] if e["hash"] == h} for h in biggest},
        "biggest_dirs": {"checkpoint_id": newest_step,
                         "dirs": sorted(dirs, key=lambda d: (-d["bytes"], d["path"]))[:top]},
        "growth": [days[d] for d in sorted(days)],
        "damaged_checkpoints": {}, "damaged_objects": [], "success": True, "store": str(census.store),
    }


def _age(store: Path, checkpoint_id: str, days: int) -> None:
    """Say in the ref that this store got the checkpoint ``days`` earlier (as one kept since then would)."""
    ref = store / "refs" / "checkpoints" / checkpoint_id
    oid, added = ref.read_text().split("\n")[:2]
    ref.write_text(f"{oid}\n{int(added) - days * 86_400_000_000_000}\n")


@pytest.fixture
def busy_store(tmp_path: Path) -> tuple[RollbackRecoverySystem, Path]:
    """A real git repository's store after a few days of use (see the module docstring)."""
    rng = random.Random(13)
    repo = make_repo(tmp_path / "repo", None, {"README.md": "# demo\n", "src/app.py": "print('v1')\n"})
    write(repo, "src/lib/util.py", "".join(f"def f{i}(): return {i}\n" for i in range(3000)))
    write(repo, "vendor/util_copy.py", (repo / "src/lib/util.py").read_bytes())  # the same content twice
    write(repo, "data/blob.bin", rng.randbytes(5 << 20))  # above the chunking threshold: stored in chunks
    os.symlink("src/app.py", repo / "app-link")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more")
    system = RollbackRecoverySystem(root=repo)
    first = system.checkpoint("standard", 1, "build").checkpoint_id
    write(repo, "src/app.py", "print('v2')\n")
    second = system.checkpoint("standard", 2, "test").checkpoint_id
    docs = system.checkpoint("docs", 1, "docs").checkpoint_id  # the same tree as ``second``
    write(repo, "notes.txt", "to be forgotten\n" * 500)
    gone = system.checkpoint("heavy", 1, "gone", error_message="boom").checkpoint_id
    system.delete([gone])
    system.gc(Retention(grace=timedelta(0)))  # sweeps what only ``gone`` reached: packs rewritten
    write(repo, "notes.txt", rng.randbytes(40_000))
    waiting = system.checkpoint("heavy", 2, "waits for gc", error_message="boom").checkpoint_id
    write(repo, "notes.txt", "kept by the undo point\n")
    system.restore(first)  # an undo point of kind pre-restore
    system.pin(docs)
    system.delete([waiting])  # forgotten, not yet collected: its objects are stored, reached by none
    store = system.store_path
    _age(store, first, 2)
    _age(store, second, 1)
    assert list((store / "objects").glob("*/*")) and list((store / "packs").glob("*.pack"))
    return system, store


def test_stats_match_an_independent_count_of_the_store_files(busy_store: tuple[RollbackRecoverySystem, Path],
                                                            cli: Cli) -> None:
    system, store = busy_store
    out = cli("stats", "--json", "--top", str(TOP), cwd=system.root)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = expected(Census(store).read(), TOP)
    paths = want.pop("paths")
    for entry in got["biggest_files"]:  # any path the content has in the newest checkpoint naming it
        assert entry.pop("path") in paths[entry["hash"]]
    assert got == want
    assert len(got["growth"]) == 3 and got["unreferenced_bytes"] > 0
    assert got["checkpoints"]["kinds"] == {"step": 3, "pre-restore": 1}
    assert got["dedup_ratio"] > 2 and got["biggest_files"][0]["size"] == 5 << 20

    text = cli("stats", "--top", str(TOP), cwd=system.root)
    assert text.returncode == 0 and text.stderr == ""
    assert "checkpoints  4 (docs 1, standard 3; pre-restore 1, step 3; 1 pinned)" in text.stdout
    assert "data/blob.bin" in text.stdout and "growth per day" in text.stdout


def test_stats_of_a_damaged_store_counts_and_names_the_damage(busy_store: tuple[RollbackRecoverySystem, Path],
                                                              cli: Cli) -> None:
    """A garbled ref and a chunk its pack's index no longer names: the rest is counted, the damage
    named with the checkpoints it affects, exit 13, one error line and no traceback."""
    from rrstore.store.pack import decode_index, encode_index

    system, store = busy_store
    listed = system.list().checkpoints
    broken = listed[-1].checkpoint_id
    (store / "refs" / "checkpoints" / broken).write_text("garbage\n")
    census = Census(store).read()
    blob = next(e for p, e, _ in census.files(listed[0].state_hash) if p == "data/blob.bin")
    chunk = blob["chunks"][0]
    pack = next(p for p in (store / "packs").glob("*.pack") if chunk in _pack_oids(p))
    index = pack.with_suffix(".idx")
    entries = decode_index(pack.stem, index.read_bytes())
    del entries[chunk]
    index.write_bytes(encode_index(entries))
    for merged in (store / "index" / "packs").glob("*.midx"):
        merged.unlink()  # derived data: the packs' own indexes are read instead
    for damaged in (cli("stats", "--json", cwd=system.root), cli("stats", cwd=system.root)):
        assert damaged.returncode == 13, damaged.stderr
        assert "Traceback" not in damaged.stderr and len(damaged.stderr.splitlines()) == 1
        assert broken in damaged.stderr and chunk in damaged.stderr
    got = json.loads(cli("stats", "--json", cwd=system.root).stdout)
    assert list(got["damaged_checkpoints"]) == [broken] and got["success"] is False
    assert got["damaged_objects"] == [{"kind": "object-missing", "oid": chunk, "reason": "not in the store",
                                       "checkpoints": [r.checkpoint_id for r in listed[:-1]]}]
    assert got["checkpoints"]["total"] == len(listed) - 1


def _pack_oids(path: Path) -> set[str]:
    census = Census(path.parent.parent)
    census._pack(path.read_bytes())
    return set(census.stored)
