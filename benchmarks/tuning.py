"""Measurements behind rrstore's fixed parameters: zstd level, pack block size, chunk size.

    python benchmarks/tuning.py [--tree DIR] [--output benchmarks/results/tuning.md]

(1) zstd level x block size on a real source tree (default: this interpreter's
standard library, with __pycache__): compression ratio, compression and
decompression speed, single thread, as rrstore compresses pack blocks.
(2) FastCDC average chunk size on a large file edited in a few places: how
many bytes a second checkpoint must store, and how many chunks the file has.
Not part of the test suite; figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sysconfig
import time
from pathlib import Path

import blake3
import zstandard
from pyfastcdc import FastCDC


def read_tree(root: Path, limit: int) -> list[bytes]:
    blobs, total = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "site-packages")
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if len(data) > 4 << 20:
                continue
            blobs.append(data)
            total += len(data)
            if total >= limit:
                return blobs
    return blobs


def blocks_of(blobs: list[bytes], block: int) -> list[bytes]:
    out, cur, size = [], [], 0
    for data in blobs:
        cur.append(data)
        size += len(data)
        if size >= block:
            out.append(b"".join(cur))
            cur, size = [], 0
    if cur:
        out.append(b"".join(cur))
    return out


def level_table(blobs: list[bytes]) -> list[str]:
    raw = sum(len(b) for b in blobs)
    rows = ["| level | block | ratio | compress MB/s | decompress MB/s |", "|---:|---:|---:|---:|---:|"]
    for block in (0, 64 << 10, 256 << 10, 1 << 20):
        units = blobs if block == 0 else blocks_of(blobs, block)
        for level in (1, 3, 6, 9, 19):
            comp = zstandard.ZstdCompressor(level=level, write_content_size=True)
            t0 = time.perf_counter()
            frames = [comp.compress(u) for u in units]
            t1 = time.perf_counter()
            dec = zstandard.ZstdDecompressor()
            for f in frames:
                dec.decompress(f)
            t2 = time.perf_counter()
            size = sum(len(f) for f in frames)
            label = "per file" if block == 0 else f"{block >> 10} KiB"
            rows.append(f"| {level} | {label} | {raw / size:.2f} | {raw / (t1 - t0) / 1e6:.0f} | "
                        f"{raw / (t2 - t1) / 1e6:.0f} |")
    return rows


def chunk_table(size: int, edits: int) -> list[str]:
    rng = random.Random(7)
    base = bytearray(blake3.blake3(b"tuning").digest(length=size))
    edited = bytearray(base)
    for _ in range(edits):
        at = rng.randrange(size - 100)
        edited[at:at + 100] = rng.randbytes(100)
    rows = ["| average chunk | chunks | stored by the edited copy | of the file |", "|---:|---:|---:|---:|"]
    for avg in (256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20):
        cdc = FastCDC(avg, min_size=avg // 4, max_size=avg * 4)
        first = {blake3.blake3(c.data).digest(): c.length for c in cdc.cut_buf(bytes(base))}
        second = {blake3.blake3(c.data).digest(): c.length for c in cdc.cut_buf(bytes(edited))}
        new = sum(n for k, n in second.items() if k not in first)
        rows.append(f"| {avg >> 10} KiB | {len(first)} | {new / 1e6:.1f} MB | {100 * new / size:.1f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--limit-mb", type=int, default=120, help="read at most this much of the tree")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "tuning.md")
    args = parser.parse_args()
    blobs = read_tree(args.tree, args.limit_mb << 20)
    raw = sum(len(b) for b in blobs)
    lines = [
        "# Tuning measurements", "",
        f"Machine: {os.cpu_count()} CPUs; one thread; `python benchmarks/tuning.py`.", "",
        f"## zstd level and pack block size ({len(blobs)} files, {raw / 1e6:.0f} MB of {args.tree})", "",
        *level_table(blobs), "",
        "## FastCDC average chunk size (100 MB file, 10 edits of 100 bytes)", "",
        *chunk_table(100 << 20, 10), "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
