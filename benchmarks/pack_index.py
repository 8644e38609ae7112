"""What indexes save at scale (issue 11): CPU of a checkpoint among many packs, and the S3 requests of a
push and a pull against a remote holding many checkpoints.

Runs with whatever ``rrstore`` is importable, so the same command measures two versions side by side
(``PYTHONPATH=<a checkout of the old version> python benchmarks/pack_index.py ...``)::

    python benchmarks/pack_index.py build DIR COUNT          # a small project with COUNT checkpoints
    python benchmarks/pack_index.py local DIR                # CPU of `rrstore checkpoint` after a one-file change
    python benchmarks/pack_index.py remote DIR s3://b/p ENDPOINT   # push all once, then count requests

Each checkpoint changes one file and writes one pack. Requests are counted with botocore's
``request-created`` event (one per HTTP request). The S3 credentials come from the environment.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any


def _step(root: Path, i: int) -> None:
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "shared.py").write_text("shared = True\n" * 100)
    (root / "src" / f"mod{i % 5}.py").write_text(f"value = {i}\n")


def build(root: Path, count: int) -> None:
    from rrstore import RollbackRecoverySystem

    root.mkdir(parents=True, exist_ok=True)
    system = RollbackRecoverySystem(root=root)
    start = len(system.list().checkpoints) if (root / ".checkpoints").is_dir() else 0
    for i in range(start, count):
        _step(root, i)
        system.checkpoint("standard", i + 1, f"s{i}")


def local(root: Path, runs: int = 5) -> dict[str, object]:
    """CPU seconds (user + sys) of `rrstore checkpoint` after a one-file change, in a subprocess; the
    first run is left out of the median (it may write a merged index once)."""
    times = []
    for i in range(runs):
        (root / "src" / "edited.py").write_text(f"edit = {i}\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "rrstore", "checkpoint", "--lane", "standard", "--step-number",
                        str(9000 + i), "--step-name", "bench", "-q"], cwd=root, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    packs = len(list((root / ".checkpoints" / "packs").glob("*.idx")))
    return {"packs": packs, "cpu_ms_median": round(1000 * statistics.median(times[1:]), 1),
            "cpu_ms_runs": [round(1000 * t, 1) for t in times]}


class _Requests:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def install(self) -> None:
        from rrstore.backends.s3 import S3Backend

        original = S3Backend._make_client
        counter = self

        def make(backend: Any) -> Any:
            client = original(backend)

            def created(request: Any, operation_name: str, **_: Any) -> None:
                with counter.lock:
                    counter.calls.append((operation_name, request.url.split("?", 1)[0]))

            client.meta.events.register("request-created.s3", created)
            return client

        S3Backend._make_client = make  # type: ignore[method-assign]

    def take(self) -> dict[str, object]:
        with self.lock:
            calls, self.calls = self.calls, []
        ops = Counter(op for op, _ in calls)
        idx = sum(1 for op, key in calls if op == "GetObject" and key.endswith(".idx"))
        return {"requests": len(calls), "idx_gets": idx, **dict(sorted(ops.items()))}


def remote(root: Path, url: str, endpoint: str) -> dict[str, object]:
    from rrstore import RollbackRecoverySystem

    counter = _Requests()
    counter.install()
    system = RollbackRecoverySystem(root=root)
    system.push([], url, endpoint)  # every checkpoint: the remote now holds them all (not counted)
    held = len(system.list(all_projects=True).checkpoints)
    counter.take()
    out: dict[str, object] = {"checkpoints_on_remote": held}
    for label in ("push_one_new", "push_one_new_again"):
        _step(root, 10_000 + len(out))
        new = system.checkpoint("standard", 10_000 + len(out), "bench").checkpoint_id
        counter.take()
        system.push([new], url, endpoint)
        out[label] = counter.take()
    system.push([new], url, endpoint)
    out["push_nothing_new"] = counter.take()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "target"
        target.mkdir()
        counter.take()
        RollbackRecoverySystem(root=target).pull([new], url, endpoint)
        out["pull_one_into_empty"] = counter.take()
    return out


def main(argv: list[str]) -> int:
    verb, root = argv[0], Path(argv[1])
    if verb == "build":
        build(root, int(argv[2]))
        return 0
    if verb == "local":
        work = Path(tempfile.mkdtemp()) / "copy"
        shutil.copytree(root, work, symlinks=True)  # every version measures the same store
        try:
            print(json.dumps(local(work)))
        finally:
            shutil.rmtree(work.parent)
        return 0
    if verb == "remote":
        work = Path(tempfile.mkdtemp()) / "copy"
        shutil.copytree(root, work, symlinks=True)
        try:
            print(json.dumps(remote(work, argv[2], argv[3])))
        finally:
            shutil.rmtree(work.parent)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
