"""Helpers for the fault-injection suite (tests/test_faults.py): trials, kills, flips, crafted input.

Nothing here mocks rrstore: trials drive the real CLI in subprocesses and
damage real store files; tests/craft.py crafts hostile input.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from conftest import GIT_ENV, tree_manifest
from craft import b3

from rrstore import RollbackRecoverySystem

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
    """Every file under the store -> sha256 (lock files and the derived indexes under ``index/``, which a
    read may refresh, left out): 'byte-identical' compares these."""
    out = {}
    for dirpath, dirs, names in os.walk(store):
        dirs.sort()
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(store).as_posix()
            if skip_locks and rel.startswith(("locks/", "index/")):
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


# --- the kill bench ---------------------------------------------------------------------------------


class Bench:
    """A box with a project whose checkpoints are known (id -> manifest), and the checks after a kill."""

    def __init__(self, tmp_path: Path, outcomes: Outcomes, operation: str) -> None:
        self.box = Box.make(tmp_path)
        self.tmp = tmp_path
        self.outcomes = outcomes
        self.operation = operation
        self.rng = outcomes.settings.rng(operation)
        self.known: dict[str, Manifest] = {}
        self.step = 0

    @property
    def project(self) -> Path:
        return self.box.project

    @property
    def store(self) -> Path:
        return self.project / ".checkpoints"

    def checkpoint(self, lane: str = "standard") -> str:
        self.step += 1
        done = self.box.run("checkpoint", "--lane", lane, "--step-number", str(self.step), "--step-name", "bench")
        assert done.returncode == 0, done.stderr
        self.known[done.stdout.strip()] = tree_manifest(self.project)
        return done.stdout.strip()

    def delays(self, duration: float) -> list[float]:
        return [self.rng.uniform(0.0, duration) for _ in range(self.outcomes.settings.trials)]

    def ids(self, trial: Trial, store: Path | None = None) -> set[str] | None:
        args = ("--store", str(store)) if store else ()
        done = self.box.run(*args, "list", "--json")
        if not trial.succeeded(done, "list after the kill"):
            return None
        return {r["checkpoint_id"] for r in json.loads(done.stdout)}

    def verify(self, trial: Trial, ids: dict[str, Manifest], store: Path | None = None) -> None:
        """Each checkpoint restores byte-identically into an empty directory (in-process: faster)."""
        scratch = self.tmp / "scratch"
        for checkpoint_id, want in ids.items():
            rm_rf(scratch)
            scratch.mkdir()
            try:
                # force: the scratch directory is another project than the one that took them
                RollbackRecoverySystem(root=scratch, store=store or self.store).restore(checkpoint_id, force=True)
            except Exception as exc:
                trial.fail("lost checkpoint", f"{checkpoint_id}: {type(exc).__name__}: {exc}")
                continue
            got = tree_manifest(scratch)
            trial.expect(got == want, "wrong byte", f"{checkpoint_id}: {difference(want, got)}")

    def sample(self, count: int = 2) -> dict[str, Manifest]:
        picked = self.rng.sample(sorted(self.known), min(count, len(self.known)))
        return {i: self.known[i] for i in picked}

    def no_escape(self, trial: Trial, before: Manifest) -> None:
        after = self.box.outside()
        trial.expect(after == before, "escape", f"outside the project: {difference(before, after)}")


def difference(want: Manifest, got: Manifest) -> str:
    """A few paths missing, extra and changed: enough to see what went wrong."""
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    changed = sorted(p for p in set(want) & set(got) if want[p] != got[p])[:3]
    return f"missing {missing}, extra {extra}, changed {changed}"


def killed_output(trial: Trial, killed: Killed, what: str) -> None:
    """Count where the kill landed; a command that finished first must have succeeded cleanly."""
    trial.outcomes.landed[trial.operation] += killed.killed
    if not killed.killed:
        trial.expect("Traceback" not in killed.stderr, "traceback", f"{what}: {killed.stderr[-1500:]}")
        trial.expect(killed.returncode == 0, "other", f"{what} exit {killed.returncode}: {killed.stderr[-800:]}")
