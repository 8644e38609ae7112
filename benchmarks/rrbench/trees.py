"""The trees the benchmark checkpoints: how each is made, checked, changed and reset.

Every tree has a *source* (the pristine content: a generated directory, the
interpreter's standard library, its site-packages) and a *work tree* the
tools operate on. A manifest (path -> kind, size, SHA-1, exec bit) of the
source defines the expected state; after every restore the work tree's
manifest is compared with it, and ``sync`` repairs the work tree from the
source by copying only what differs.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import sysconfig
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# kind ('f' or 'l'), size, digest (of content or link target), executable
Entry = tuple[str, int, str, bool]
Manifest = dict[str, Entry]

CHUNK = 1 << 20
GIT_ENV = {
    "GIT_AUTHOR_NAME": "rrstore bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "rrstore bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def _digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def list_files(root: Path, skip_top: Iterable[str] = (".git",),
               keep: Callable[[str], bool] | None = None) -> list[tuple[str, os.stat_result]]:
    """Every file and symlink below ``root`` (relative, '/'-separated), without ``skip_top``."""
    skip = set(skip_top)
    out: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for item in it:
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                if not rel_dir and item.name in skip:
                    continue
                if keep is not None and not keep(rel):
                    continue
                if item.is_dir(follow_symlinks=False):
                    stack.append(rel)
                else:
                    out.append((rel, item.stat(follow_symlinks=False)))
    out.sort()
    return out


def manifest(root: Path, skip_top: Iterable[str] = (".git",), keep: Callable[[str], bool] | None = None,
             workers: int = 4) -> Manifest:
    """Content manifest of ``root``: hashes files in a few threads (hashlib releases the GIL)."""
    files = list_files(root, skip_top, keep)

    def one(item: tuple[str, os.stat_result]) -> tuple[str, Entry]:
        rel, st = item
        path = os.path.join(root, rel)
        if stat.S_ISLNK(st.st_mode):
            return rel, ("l", 0, os.readlink(path), False)
        if not stat.S_ISREG(st.st_mode):
            return rel, ("o", 0, "", False)
        return rel, ("f", st.st_size, _digest(path), bool(st.st_mode & 0o100))

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, files, chunksize=64))


def compare(expected: Manifest, actual: Manifest, limit: int = 5) -> list[str]:
    """Differences, as short human lines (at most ``limit`` plus a count)."""
    problems: list[str] = []
    missing = [p for p in expected if p not in actual]
    extra = [p for p in actual if p not in expected]
    changed = [p for p in expected if p in actual and expected[p] != actual[p]]
    for label, items in (("missing", missing), ("extra", extra), ("differs", changed)):
        if items:
            problems.append(f"{len(items)} {label}: " + ", ".join(items[:limit]))
    return problems


def wipe(root: Path, keep_top: Iterable[str] = (".git",)) -> None:
    """Remove everything in ``root`` except the ``keep_top`` entries."""
    keep = set(keep_top)
    for item in os.scandir(root):
        if item.name in keep:
            continue
        if item.is_dir(follow_symlinks=False):
            shutil.rmtree(item.path)
        else:
            os.unlink(item.path)


def sync(src: Path, dst: Path, expected: Manifest, keep: Callable[[str], bool] | None = None,
         skip_top: Iterable[str] = (".git",)) -> int:
    """Make ``dst`` hold exactly ``expected`` by copying differing paths from ``src``; returns paths fixed."""
    dst.mkdir(parents=True, exist_ok=True)
    actual = manifest(dst, skip_top, keep)
    fixed = 0
    for rel in actual:
        if rel not in expected:
            os.unlink(dst / rel)
            fixed += 1
    for rel, entry in expected.items():
        if actual.get(rel) == entry:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                os.unlink(target)
        source = src / rel
        if entry[0] == "l":
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
        fixed += 1
    _prune_empty_dirs(dst, skip_top)
    return fixed


def _prune_empty_dirs(root: Path, skip_top: Iterable[str]) -> None:
    skip = set(skip_top)
    for dirpath, dirnames, _ in os.walk(root, topdown=False):
        rel = os.path.relpath(dirpath, root)
        if rel == "." or rel.split(os.sep)[0] in skip:
            continue
        if not dirnames and not os.listdir(dirpath):
            os.rmdir(dirpath)


# --- churn -------------------------------------------------------------------

def churn_paths(expected: Manifest, fraction: float, seed: int, big_threshold: int = 0) -> list[str]:
    """A deterministic ``fraction`` of the regular files (at least one).

    With ``big_threshold`` the choice always includes one file at least that
    large, so an in-place edit of a big file is part of the churn.
    """
    files = sorted(p for p, e in expected.items() if e[0] == "f")
    count = max(1, round(len(files) * fraction))
    rng = random.Random(seed)
    chosen = rng.sample(files, min(count, len(files)))
    if big_threshold:
        big = [p for p in files if expected[p][1] >= big_threshold]
        if big and not any(p in big for p in chosen):
            chosen[0] = rng.choice(big)
    return sorted(chosen)


def apply_churn(root: Path, paths: list[str], expected: Manifest, seed: int) -> Manifest:
    """Edit ``paths`` in place, deterministically; returns the manifest after the edit.

    Files under 1 MiB get a line inserted in the middle (size changes); larger
    ones get 4 KiB overwritten in the middle (same size, same inode).
    """
    after = dict(expected)
    for rel in paths:
        path = root / rel
        seed_bytes = hashlib.sha1(f"{seed}:{rel}".encode()).digest()
        size = path.stat().st_size
        if size < CHUNK:
            data = path.read_bytes()
            mid = len(data) // 2
            data = data[:mid] + b"\n# churned " + seed_bytes.hex().encode() + b"\n" + data[mid:]
            with open(path, "r+b") as fh:
                fh.write(data)
                fh.truncate()
        else:
            patch = random.Random(seed_bytes).randbytes(4096)
            with open(path, "r+b") as fh:
                fh.seek(size // 2)
                fh.write(patch)
        entry = expected[rel]
        st = path.stat()
        after[rel] = ("f", st.st_size, _digest(str(path)), entry[3])
    return after


# --- generated tree ------------------------------------------------------------

@dataclass(frozen=True)
class GeneratedSpec:
    small_files: int
    binaries: int
    binary_min: int
    binary_max: int
    large_files: int
    large_size: int
    seed: int = 20251126

    @property
    def key(self) -> str:
        return (f"gen-v1-{self.small_files}-{self.binaries}-{self.binary_min}-{self.binary_max}-"
                f"{self.large_files}-{self.large_size}-{self.seed}")


FULL_GENERATED = GeneratedSpec(small_files=10_000, binaries=30, binary_min=256 << 10, binary_max=4 << 20,
                               large_files=2, large_size=100 << 20)
QUICK_GENERATED = GeneratedSpec(small_files=300, binaries=4, binary_min=32 << 10, binary_max=256 << 10,
                                large_files=1, large_size=2 << 20)

SMOKE_GENERATED = GeneratedSpec(small_files=60, binaries=2, binary_min=16 << 10, binary_max=64 << 10,
                                large_files=1, large_size=(3 << 20) // 2)

_WORDS = [
    "def", "class", "return", "self", "import", "from", "if", "else", "elif", "for", "while", "in", "not", "and",
    "or", "None", "True", "False", "value", "result", "items", "config", "path", "data", "index", "count", "name",
    "key", "error", "options", "args", "kwargs", "parse", "render", "update", "build", "load", "save", "check",
    "open", "close", "read", "write", "buffer", "stream", "node", "tree", "store", "object", "hash", "chunk",
    "size", "offset", "length", "entry", "record", "state", "cache",
]


def _code_lines(rng: random.Random, n: int) -> list[bytes]:
    lines = []
    for _ in range(n):
        indent = "    " * rng.randint(0, 3)
        words = rng.choices(_WORDS, k=rng.randint(2, 9))
        tail = rng.choice(("", ":", "()", f" = {rng.randint(0, 9999)}", f"({words[0]}, {words[-1]})",
                           f"  # {' '.join(rng.choices(_WORDS, k=4))}"))
        lines.append(f"{indent}{'_'.join(words[:2])} {' '.join(words[2:])}{tail}\n".encode())
    return lines


def _semi_compressible(rng: random.Random, size: int, lines: list[bytes]) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += rng.choice(lines)
        if rng.random() < 0.02:
            out += rng.randbytes(rng.randint(8, 256))
    return bytes(out[:size])


def generate(root: Path, spec: GeneratedSpec) -> None:
    """Write the generated tree below ``root`` (deterministic for a spec)."""
    rng = random.Random(spec.seed)
    pool = _code_lines(rng, 6000)
    exts = (".py", ".js", ".ts", ".c", ".h", ".md", ".json", ".txt", ".toml", ".rs")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(spec.small_files):
        depth = rng.randint(1, 4)
        parts = [f"pkg{rng.randint(0, 24):02d}"] + [f"mod{rng.randint(0, 9)}" for _ in range(depth - 1)]
        folder = root.joinpath("src", *parts)
        folder.mkdir(parents=True, exist_ok=True)
        size = int(2 ** rng.uniform(7.5, 14))  # ~180 B .. 16 KiB, log-uniform
        body = bytearray()
        while len(body) < size:
            body += rng.choice(pool)
        (folder / f"file{i:05d}{rng.choice(exts)}").write_bytes(bytes(body))
    bindir = root / "assets"
    bindir.mkdir(exist_ok=True)
    for i in range(spec.binaries):
        size = rng.randint(spec.binary_min, spec.binary_max)
        data = rng.randbytes(size) if i % 2 == 0 else _semi_compressible(rng, size, pool)
        (bindir / f"blob{i:03d}.bin").write_bytes(data)
    largedir = root / "data"
    largedir.mkdir(exist_ok=True)
    block = 1 << 20
    for i in range(spec.large_files):
        with open(largedir / f"large{i}.dat", "wb") as fh:
            written = 0
            n = 0
            while written < spec.large_size:
                size = min(block, spec.large_size - written)
                # 40% random blocks, 60% compressible ones (text with some noise)
                chunk = rng.randbytes(size) if n % 5 in (1, 3) else _semi_compressible(rng, size, pool)
                fh.write(chunk)
                written += size
                n += 1
    # a few executables and a symlink, as real trees have
    tools = root / "tools"
    tools.mkdir(exist_ok=True)
    for i in range(3):
        script = tools / f"script{i}.sh"
        script.write_bytes(b"#!/bin/sh\necho " + str(i).encode() + b"\n")
        script.chmod(0o755)
    os.symlink("script0.sh", tools / "default.sh")


# --- real trees ------------------------------------------------------------------

def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def site_packages_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


QUICK_STDLIB_TOP = ("json", "email", "http", "urllib", "logging", "importlib")


def stdlib_filter(quick: bool) -> Callable[[str], bool]:
    """Which paths of the standard library belong in the tree (never site-packages)."""

    def keep(rel: str) -> bool:
        top = rel.split("/", 1)[0]
        if top == "site-packages":
            return False
        if not quick:
            return True
        if top == "__pycache__":
            return False
        return top in QUICK_STDLIB_TOP or ("/" not in rel and rel.startswith(("a", "b", "c")))

    return keep


def sitepackages_filter(quick: bool, root: Path) -> Callable[[str], bool]:
    """All of site-packages; in quick mode only small top-level entries, ~600 files in all."""
    if not quick:
        return lambda rel: True
    chosen: set[str] = set()
    total = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        count = sum(len(files) for _, _, files in os.walk(entry.path)) if entry.is_dir() else 1
        if count <= 100 and total + count <= 600:
            chosen.add(entry.name)
            total += count

    def keep(rel: str) -> bool:
        return rel.split("/", 1)[0] in chosen

    return keep
