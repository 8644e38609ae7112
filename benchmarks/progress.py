"""What progress costs: a cold checkpoint and a full restore of many small files, with and without the
CLI's progress bar, and the import cost of the renderers it could have used.

    python benchmarks/progress.py [--files 20000] [--size 1024] [--runs 6] [--output benchmarks/results/progress.md]

The bar is the CLI's own (``cli.output._Bar``, no start delay) drawing to a real pseudo-terminal that a
thread drains, so every draw is paid as on a user's terminal. Runs alternate without/with (the order
swapped every round), in fresh stores (cold: nothing cached), after one warm-up round; the median of
each is reported, wall and CPU. Import costs are CPU milliseconds of ``import rich.progress`` (and
of ``click.termui``) in a fresh interpreter that has imported click, as the CLI has. Not part of
the test suite; figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rrstore import RollbackRecoverySystem

IMPORT_PROBE = """
import time, importlib
import click
t = time.process_time()
importlib.import_module({module!r})
print((time.process_time() - t) * 1000)
"""


def import_ms(module: str, runs: int) -> float:
    """Median CPU ms of importing ``module`` after click, each in a fresh interpreter."""
    got = [float(subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)], check=True,
                                capture_output=True, text=True).stdout) for _ in range(runs)]
    return statistics.median(got)


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        folder = root / f"d{i // 200:03d}"
        if i % 200 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:05d}.txt").write_bytes(os.urandom(size // 2).hex().encode()[:size])


class Terminal:
    """stderr on a pseudo-terminal for the block's duration, its output drained (and counted) by a thread."""

    def __enter__(self) -> Terminal:
        self.master, slave = os.openpty()
        self.saved = sys.stderr
        sys.stderr = open(slave, "w", closefd=True)  # closed in __exit__
        self.received = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()
        return self

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def __exit__(self, *exc: object) -> None:
        sys.stderr.close()
        sys.stderr = self.saved
        self.thread.join(timeout=5)
        os.close(self.master)


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``action``; CPU is this process's, pool threads included."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


Round = tuple[tuple[float, float], tuple[float, float]]
DRAWN: list[int] = []  # bytes the terminal received in each round with the bar: proof that it drew


def one_round(work: Path, tree: Path, with_bar: bool) -> Round:
    """((wall, CPU) of the checkpoint, of the restore) in a fresh store, with the bar or without."""
    from rrstore.cli.output import _Bar

    store = work / f"store-{time.monotonic_ns()}"
    system = RollbackRecoverySystem(root=tree, store=store)
    with Terminal() as terminal:
        bar = _Bar("checkpoint", 0.0) if with_bar else None
        made: list[str] = []
        took = timed(lambda: made.append(system.checkpoint("standard", 1, "bench", progress=bar).checkpoint_id))
        if bar is not None:
            bar.close()
        for folder in tree.iterdir():
            shutil.rmtree(folder)
        bar = _Bar("restore", 0.0) if with_bar else None
        back = timed(lambda: system.restore(made[0], undo=False, progress=bar))
        if bar is not None:
            bar.close()
    if with_bar:
        DRAWN.append(terminal.received)
    shutil.rmtree(store)
    return took, back


def per_call_ns(calls: int = 200_000) -> float:
    """What one call of the bar costs the library (median of 5 loops of ``calls``), drawing to a pty."""
    from rrstore.cli.output import _Bar

    took = []
    with Terminal():
        for _ in range(5):
            bar = _Bar("checkpoint", 0.0)
            start = time.perf_counter_ns()
            for done in range(calls):
                bar(done, calls)
            took.append((time.perf_counter_ns() - start) / calls)
            bar.close()
    return statistics.median(took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "progress.md")
    args = parser.parse_args()
    rich_ms, termui_ms = import_ms("rich.progress", 11), import_ms("click.termui", 11)
    call_ns = per_call_ns()
    with tempfile.TemporaryDirectory(prefix="rr-progress-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        make_tree(tree, args.files, args.size)
        one_round(work, tree, True)  # warm-up: page cache, imports
        figures: dict[bool, list[Round]] = {False: [], True: []}
        for run in range(args.runs):
            for with_bar in ((False, True) if run % 2 == 0 else (True, False)):  # neither always goes first
                figures[with_bar].append(one_round(work, tree, with_bar))
    rows = []
    for with_bar in (False, True):
        cells = [statistics.median(r[step][kind] for r in figures[with_bar]) for step in (0, 1) for kind in (0, 1)]
        rows.append(f"| {'with the bar' if with_bar else 'no progress'} | " + " | ".join(f"{c:.2f}" for c in cells)
                    + " |")
    text = "\n".join([
        f"# Progress cost ({args.files} files of {args.size} B, median of {args.runs} alternating runs, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)", "",
        "| | cold checkpoint wall s | CPU s | full restore wall s | CPU s |", "|---|---:|---:|---:|---:|", *rows,
        "",
        "| renderer import, after click (CPU ms, median of 11) | ms |", "|---|---:|",
        f"| rich.progress | {rich_ms:.1f} |", f"| click.termui (already loaded) | {termui_ms:.1f} |", "",
        f"One call of the bar costs {call_ns:.0f} ns ({call_ns * args.files / 1e6:.1f} ms for {args.files} files).",
        f"With the bar the terminal received a median of {statistics.median(DRAWN):.0f} bytes per round.", ""])
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
