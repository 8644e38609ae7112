"""What browsing costs (issue 13): ls -r, cat, dump, find and log over a history of checkpoints.

Builds a project of a copy of the Python standard library (about 2,000 files) plus one large random
file, takes COUNT checkpoints that each change one file, then times each browse verb through the
library and counts the tree objects ``find`` and ``log`` read (each distinct tree should be read
once, however many checkpoints share it)::

    python benchmarks/browse.py DIR [COUNT]      # default 50 checkpoints; prints JSON

Runs with whatever ``rrstore`` is importable. Times are wall seconds of one run on a warm cache.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

BIG = 64 << 20


def build(root: Path, count: int) -> None:
    from rrstore import RollbackRecoverySystem

    if (root / ".checkpoints").is_dir():
        return
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, root / "lib", ignore=shutil.ignore_patterns("__pycache__", "site-packages", "test*"),
                    symlinks=True)
    (root / "big.bin").write_bytes(os.urandom(BIG))
    system = RollbackRecoverySystem(root=root)
    for i in range(count):
        (root / "lib" / "json" / "edited.py").write_text(f"value = {i}\n")
        system.checkpoint("standard", i + 1, f"s{i}")


class _Devnull(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return round(time.perf_counter() - start, 3), out


def measure(root: Path) -> dict[str, Any]:
    from rrstore import RollbackRecoverySystem
    from rrstore.store.objects import ObjectStore

    reads: Counter[str] = Counter()
    original = ObjectStore.get

    def counting(self: ObjectStore, oid: str) -> bytes:
        reads[oid] += 1
        return original(self, oid)

    ObjectStore.get = counting  # type: ignore[method-assign]
    browser = RollbackRecoverySystem(root=root).browser
    count = len(browser.manager.list_checkpoints())
    out: dict[str, Any] = {"checkpoints": count}
    secs, items = _timed(lambda: browser.ls("latest", recursive=True))
    out["ls_r"] = {"s": secs, "entries": len(items)}
    secs, _ = _timed(lambda: browser.cat("latest", "big.bin", _Devnull()))  # type: ignore[arg-type]
    out["cat_big"] = {"s": secs, "MiB_per_s": round(BIG / (1 << 20) / secs, 1)}
    for fmt in ("tar", "zip"):
        secs, result = _timed(lambda fmt=fmt: browser.dump("latest", _Devnull(), fmt))  # type: ignore[misc, arg-type]
        out[f"dump_{fmt}"] = {"s": secs, "MiB_per_s": round(result.bytes / (1 << 20) / secs, 1)}
    for name, call in (("find_name", lambda: browser.find("*.py")), ("find_path", lambda: browser.find("lib/**/x*.py")),
                       ("log", lambda: browser.log("lib/json/edited.py"))):
        reads.clear()
        secs, result = _timed(call)
        hits = len(result.hits) if name.startswith("find") else len(result.changes)
        out[name] = {"s": secs, "results": hits, "objects_read": sum(reads.values()),
                     "read_twice": sum(1 for n in reads.values() if n > 1)}
    return out


def main(argv: list[str]) -> None:
    root = Path(argv[0]).resolve()
    build(root, int(argv[1]) if len(argv) > 1 else 50)
    print(json.dumps(measure(root), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
