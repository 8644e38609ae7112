"""Helpers for the fault-injection suite (tests/test_faults.py): trials, kills, flips, crafted input.

Nothing here mocks rrstore: trials drive the real CLI in subprocesses, damage
real store files, and craft archives, stores and remotes from the documented
formats (docs/store-format.md sections 1, 2 and 8), not with rrstore's writers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard
from conftest import GIT_ENV, tree_manifest

KINDS = ("lost checkpoint", "wrong byte", "traceback", "escape", "other")
DEFAULT_SEED = 20261201
Manifest = dict[str, tuple[object, ...]]


# --- settings and outcome accounting -------------------------------------------------------------------


@dataclass
class FaultSettings:
    """How many trials, from which seed; ``report`` names a JSON file for the summary (or None)."""

    trials: int
    seed: int
    report: Path | None

    @property
    def flips(self) -> int:
        return 2 * self.trials

    def rng(self, name: str) -> random.Random:
        """One generator per test, so a test's draws do not depend on which other tests ran."""
        return random.Random(f"{self.seed}:{name}")

    def reproduce(self) -> str:
        return f"RRSTORE_FAULT_SEED={self.seed} RRSTORE_FAULT_TRIALS={self.trials}"


@dataclass
class Failure:
    operation: str
    trial: int | str
    kind: str
    detail: str


@dataclass
class Outcomes:
    """Trials per operation and failures per kind, for the whole session (the table in docs/reliability.md)."""

    settings: FaultSettings
    trials: Counter[str] = field(default_factory=Counter)
    landed: Counter[str] = field(default_factory=Counter)   # kills that found the command still running
    failures: list[Failure] = field(default_factory=list)

    @contextmanager
    def trial(self, operation: str, index: int | str, count: bool = True) -> Iterator[Trial]:
        """Count one trial (unless not ``count``); an unexpected exception in it is an 'other' failure."""
        self.trials[operation] += count
        current = Trial(self, operation, index)
        try:
            yield current
        except Exception as exc:  # the trial's own bookkeeping failed: still one classified failure
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            current.fail("other", f"{detail}\n{traceback.format_exc(limit=4)}")

    def check(self, *operations: str, trial: int | str | None = None) -> None:
        """Fail the test if a trial of these operations (or that one trial) failed, naming the seed and the failures."""
        lines = []
        for operation in operations:
            mine = [f for f in self.failures if f.operation == operation and trial in (None, f.trial)]
            if not mine:
                continue
            kinds = Counter(f.kind for f in mine)
            lines.append(f"{len({f.trial for f in mine})} of {self.trials[operation]} {operation} trial(s) failed: "
                         + ", ".join(f"{n} {k}" for k, n in kinds.items()))
            lines += [f"  trial {f.trial} [{f.kind}]: {f.detail[:1200]}" for f in mine[:4]]
        if lines:
            raise AssertionError("\n".join([*lines, f"reproduce with {self.settings.reproduce()}"]))

    def summary(self) -> dict[str, object]:
        """Per operation: trials, kills that landed, and the trials that failed in each way (once per kind)."""
        rows = {}
        for operation, count in sorted(self.trials.items()):
            kinds = Counter(kind for _, kind in {(f.trial, f.kind) for f in self.failures if f.operation == operation})
            rows[operation] = {"trials": count, "killed mid-run": self.landed.get(operation, 0),
                               **{k: kinds.get(k, 0) for k in KINDS}}
        return {"seed": self.settings.seed, "trials_setting": self.settings.trials, "operations": rows}

    def table(self) -> str:
        """The summary as the Markdown table of docs/reliability.md."""
        head = "| operation | trials | killed mid-run | " + " | ".join(KINDS) + " |"
        lines = [head, "|" + " --- |" * (3 + len(KINDS))]
        operations = self.summary()["operations"]
        assert isinstance(operations, dict)
        for operation, row in operations.items():
            landed = row["killed mid-run"] if operation.startswith("kill") else "-"
            lines.append(f"| {operation} | {row['trials']} | {landed} | " + " | ".join(str(row[k]) for k in KINDS)
                         + " |")
        return "\n".join(lines)


@dataclass
class Trial:
    outcomes: Outcomes
    operation: str
    index: int | str
    failed: bool = False

    def fail(self, kind: str, detail: str) -> None:
        assert kind in KINDS, kind
        self.failed = True
        self.outcomes.failures.append(Failure(self.operation, self.index, kind, detail))

    def expect(self, ok: bool, kind: str, detail: str) -> bool:
        if not ok:
            self.fail(kind, detail)
        return ok

    def clean_output(self, done: subprocess.CompletedProcess[str], what: str) -> bool:
        """A command that ran to its end printed no traceback (any exit code)."""
        return self.expect("Traceback" not in done.stderr, "traceback", f"{what}: {done.stderr[-1500:]}")

    def succeeded(self, done: subprocess.CompletedProcess[str], what: str) -> bool:
        """Exit 0 and no traceback; anything else is an 'other' failure (or a traceback)."""
        if not self.clean_output(done, what):
            return False
        return self.expect(done.returncode == 0, "other", f"{what}: exit {done.returncode}: {done.stderr[-800:]}")


# --- running the real CLI --------------------------------------------------------------------------------


@dataclass
class Box:
    """A directory holding the project and what must stay untouched: a sibling, HOME and TMPDIR.

    Every subprocess runs with HOME and TMPDIR inside the box, so a write to
    either shows up as an escape, as does any change beside the project.
    """

    path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.path / "project"

    @classmethod
    def make(cls, parent: Path) -> Box:
        box = cls(parent / "box")
        for name in ("project", "sibling", "home", "tmpdir"):
            (box.path / name).mkdir(parents=True)
        (box.path / "sibling" / "keep.txt").write_bytes(b"a neighbour's file\n")
        os.symlink("keep.txt", box.path / "sibling" / "link")
        return box

    def env(self) -> dict[str, str]:
        env = {**os.environ, **GIT_ENV, "HOME": str(self.path / "home"), "TMPDIR": str(self.path / "tmpdir"),
               **self.extra_env}
        env.pop("RRSTORE_DIR", None)
        return env

    def outside(self) -> Manifest:
        """Everything in the box except the project: must never change."""
        return tree_manifest(self.path, skip=("project",))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rrstore", *args]

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=cwd or self.project, capture_output=True, text=True,
                              env=self.env(), timeout=timeout)

    def run_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands at the same time (in the project); their results in order."""
        procs = [subprocess.Popen(self.argv(*args), cwd=self.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=self.env(), text=True) for args in commands]
        out = []
        for args, proc in zip(commands, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=120)
            out.append(subprocess.CompletedProcess(self.argv(*args), proc.returncode, stdout, stderr))
        return out

    def killed(self, args: tuple[str, ...], delay: float, cwd: Path | None = None) -> Killed:
        """Start ``rrstore ARGS``, SIGKILL it after ``delay`` seconds (unless it ended first)."""
        proc = subprocess.Popen(self.argv(*args), cwd=cwd or self.project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(), text=True)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        was_killed = proc.poll() is None
        if was_killed:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        return Killed(was_killed, proc.returncode, out, err)


@dataclass
class Killed:
    killed: bool
    returncode: int
    stdout: str
    stderr: str


def timed(box: Box, *args: str, cwd: Path | None = None) -> float:
    """Run a command to its end (it must succeed) and return its wall time: the range kills are drawn over."""
    start = time.monotonic()
    done = box.run(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.stderr)
    return time.monotonic() - start


# --- files and trees --------------------------------------------------------------------------------


def store_files(store: Path, skip_locks: bool = True) -> dict[str, str]:
    """Every file under the store -> sha256 (lock files left out): 'byte-identical' compares these."""
    out = {}
    for dirpath, dirs, names in os.walk(store):
        dirs.sort()
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(store).as_posix()
            if skip_locks and rel.startswith("locks/"):
                continue
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if not path.is_symlink() else "link"
    return out


def write_tree(root: Path, rng: random.Random, large: int = 3, small: int = 250,
               large_size: int = 9 << 19) -> None:
    """A few chunked files (above 4 MiB) and many small ones in a few directories."""
    for i in range(large):
        (root / f"big{i}.bin").write_bytes(rng.randbytes(large_size + rng.randrange(1 << 16)))
    for i in range(small):
        path = root / f"pkg{i % 7}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(50, 3000)))


def mutate_tree(root: Path, rng: random.Random, large: int = 2, small: int = 40) -> None:
    """Change ``large`` big files in a few places, rewrite/add/remove small ones."""
    bigs = sorted(root.glob("big*.bin"))
    for path in rng.sample(bigs, min(large, len(bigs))):
        with open(path, "r+b") as fh:
            for _ in range(3):
                fh.seek(rng.randrange(path.stat().st_size))
                fh.write(rng.randbytes(1 << 16))
    smalls = sorted(root.glob("pkg*/*.py"))
    for path in rng.sample(smalls, min(small, len(smalls))):
        choice = rng.random()
        if choice < 0.1:
            path.unlink()
        else:
            path.write_bytes(rng.randbytes(rng.randrange(50, 3000)))
    new = root / f"pkg{rng.randrange(7)}" / f"new{rng.randrange(1 << 30)}.py"
    new.write_bytes(rng.randbytes(200))


def rm_rf(path: Path) -> None:
    """Remove a tree with rm -rf: shutil (and pytest's cleanup) recurse and fail on very deep trees."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def flip_byte(path: Path, rng: random.Random) -> int:
    """XOR one byte of ``path`` at a random offset with a random non-zero mask; return the offset."""
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data))
    data[at] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))
    return at


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)


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
        from rrstore.checkpoint import CheckpointRecord

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


# --- reading a store's packs from the documented format (the oracle for flips) ---------------------------

IDX_ENTRY = struct.Struct("<32sQIII")


def pack_index(idx: Path) -> list[tuple[str, int, int, int, int]]:
    """(oid, block offset, block length, offset in block, length) for every entry of a pack index."""
    data = idx.read_bytes()
    count = struct.unpack_from("<I", data, 6)[0]
    out = []
    for i in range(count):
        raw, block, length, at, size = IDX_ENTRY.unpack_from(data, 10 + i * IDX_ENTRY.size)
        out.append((raw.hex(), block, length, at, size))
    return out


def oids_hit(entries: list[tuple[str, int, int, int, int]], offset: int) -> set[str]:
    """The objects a damaged byte at ``offset`` of their pack can spoil: its block's, or all for the header."""
    if offset < 6:
        return {e[0] for e in entries}
    return {e[0] for e in entries if e[1] <= offset < e[1] + e[2]}


def pack_damaged(pack: Path, entries: list[tuple[str, int, int, int, int]], offset: int) -> bool:
    """Whether the flip at ``offset`` really spoiled an object (a flip can leave a frame decoding the same)."""
    data = pack.read_bytes()
    if offset < 6:
        return True
    for oid, block, length, at, size in entries:
        if not block <= offset < block + length:
            continue
        try:
            content = zstandard.ZstdDecompressor().decompress(data[block:block + length])
        except zstandard.ZstdError:
            return True
        if b3(content[at:at + size]) != oid:
            return True
    return False


def loose_damaged(path: Path, oid: str) -> bool:
    try:
        return b3(zstandard.ZstdDecompressor().decompress(path.read_bytes())) != oid
    except zstandard.ZstdError:
        return True


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
