"""What every part of the scaling benchmark shares: its context, timed steps (medians), table rows, targets."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import measure
from .bench import log
from .tools import base_env
from .trees import GIT_ENV

HELPER = Path(__file__).resolve().parent / "scale_helper.py"


@dataclass
class Sizes:
    """Sizes of each part; ``--quick`` scales them down (figures then mean nothing)."""

    few_checkpoints: int = 20
    many_checkpoints: int = 2000
    remote_few: int = 30
    remote_many: int = 2000
    small_files: int = 10_000
    many_files: int = 200_000
    big_file: int = 4 << 30
    two_files: int = 1 << 30
    restore_file: int = 3 << 29  # 1.5 GiB
    runs_short: int = 5
    runs_long: int = 3
    runs_huge: int = 1


QUICK_SIZES = Sizes(few_checkpoints=5, many_checkpoints=40, remote_few=3, remote_many=20, small_files=300,
                    many_files=2000, big_file=48 << 20, two_files=16 << 20, restore_file=24 << 20,
                    runs_short=3, runs_long=1, runs_huge=1)


@dataclass
class Context:
    rrstore: list[str]          # how to run the CLI
    python: str                 # the interpreter rrstore is installed in (runs scale_helper.py)
    work: Path                  # every tree and store of the run
    sizes: Sizes
    quick: bool
    basis: str = "cpu"          # what time ratios compare: "cpu" or "wall"
    keep: bool = False
    notes: list[str] = field(default_factory=list)
    templates: dict[int, Path] = field(default_factory=dict)  # checkpoint count -> built store
    build_s: dict[int, float] = field(default_factory=dict)  # checkpoint count -> seconds its store took

    def env(self, **extra: str) -> dict[str, str]:
        env = base_env()
        env.pop("RRSTORE_DIR", None)
        env.update(extra)
        return env

    def cli(self, store: Path, tree: Path, *args: str) -> list[str]:
        return [*self.rrstore, *self.cli_args(store, tree, *args)]

    @staticmethod
    def cli_args(store: Path, tree: Path, *args: str) -> list[str]:
        return ["-q", "--store", str(store), "-C", str(tree), *args]

    def helper(self, *args: str) -> list[str]:
        return [self.python, str(HELPER), *args]


def git_env(git_dir: Path | None = None, work_tree: Path | None = None) -> dict[str, str]:
    env = {**base_env(), **GIT_ENV}
    if git_dir is not None:
        env["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    return env


def git(tree: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return measure.quiet(["git", "-C", str(tree), *args], env=env or git_env())


def fresh(path: Path) -> Path:
    remove(path)
    path.mkdir(parents=True)
    return path


def remove(*paths: Path) -> None:
    """Delete trees (``rm -rf``: on 200k files it is several times faster than shutil.rmtree)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            if shutil.which("rm"):
                subprocess.run(["rm", "-rf", "--", str(path)], check=False)
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


@dataclass
class Figure:
    """Medians (times) and the maximum (peak RSS) of a step's runs."""

    wall_s: float
    cpu_s: float
    rss_mib: float
    runs: int
    walls: list[float]
    cpus: list[float]
    stdout: str = ""

    def time(self, basis: str) -> float:
        return self.cpu_s if basis == "cpu" else self.wall_s

    def as_json(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 4), "cpu_s": round(self.cpu_s, 4), "rss_mib": round(self.rss_mib, 1),
                "runs": self.runs, "walls": [round(w, 4) for w in self.walls],
                "cpus": [round(c, 4) for c in self.cpus]}


Argv = Sequence[str]


def timed(argv: Argv | Callable[[int], Argv], runs: int, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, before: Callable[[int], object] | None = None,
          after: Callable[[int, measure.Measurement], None] | None = None,
          ok_codes: Sequence[int] = (0,), sync: bool = True) -> Figure:
    """Run a command ``runs`` times (``before``/``after`` untimed around each) and summarise."""
    ms: list[measure.Measurement] = []
    for i in range(runs):
        if before is not None:
            before(i)
        if sync:
            os.sync()
        cmd = argv(i) if callable(argv) else argv
        m = measure.run(list(cmd), cwd=cwd, env=env, ok_codes=ok_codes)
        ms.append(m)
        if after is not None:
            after(i, m)
    walls = [m.wall_s for m in ms]
    cpus = [m.cpu_s for m in ms]
    return Figure(wall_s=measure.median(walls), cpu_s=measure.median(cpus),
                  rss_mib=max(m.max_rss_kib for m in ms) / 1024, runs=runs, walls=walls, cpus=cpus,
                  stdout=ms[-1].stdout)


# --- rows of the table -----------------------------------------------------------------------

@dataclass
class Row:
    step: str
    rrstore: str
    peer: str = "-"
    ratio: float | None = None
    target: str = "-"
    limit: float | None = None
    higher_is_better: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        if self.limit is None:
            return "-"
        if self.ratio is None:
            return "n/a"
        ok = self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit
        return "PASS" if ok else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "rrstore": self.rrstore, "peer": self.peer,
                "ratio": None if self.ratio is None else round(self.ratio, 3), "target": self.target,
                "limit": self.limit, "result": self.result, "data": self.data}


def ms_text(fig: Figure, basis: str) -> str:
    other = "wall" if basis == "cpu" else "CPU"
    return f"{fig.time(basis) * 1000:.0f} ms {basis_name(basis)} ({fig.time(other.lower()) * 1000:.0f} {other})"


def s_text(fig: Figure, basis: str) -> str:
    other = "wall" if basis == "cpu" else "cpu"
    return f"{fig.time(basis):.2f} s {basis_name(basis)} ({fig.time(other):.2f} {basis_name(other)})"


def basis_name(basis: str) -> str:
    return "CPU" if basis == "cpu" else "wall"


def time_text(fig: Figure, basis: str) -> str:
    return ms_text(fig, basis) if fig.time(basis) < 2 else s_text(fig, basis)


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def time_row(step: str, rr: Figure, peer: Figure | None, peer_name: str, basis: str, limit: float | None,
             target: str = "") -> Row:
    r = ratio(rr.time(basis), peer.time(basis)) if peer is not None else None
    return Row(step, time_text(rr, basis), f"{peer_name} {time_text(peer, basis)}" if peer else f"{peer_name}: -",
               r, target or (f"≤ {limit:g}× {peer_name}" if limit is not None else "-"), limit,
               data={"rrstore": rr.as_json(), "peer": peer.as_json() if peer else None})


def rss_row(step: str, rr: Figure, peer: Figure | None, peer_name: str = "restic",
            limit: float | None = 1.0) -> Row:
    r = ratio(rr.rss_mib, peer.rss_mib) if peer is not None else None
    return Row(f"{step}: peak RSS", f"{rr.rss_mib:.0f} MB", f"{peer_name} {peer.rss_mib:.0f} MB" if peer else
               f"{peer_name}: -", r, f"≤ {peer_name}" if limit is not None else "-", limit,
               data={"rrstore": rr.as_json(), "peer": peer.as_json() if peer else None})


class Part:
    """One part's result: its table, notes, and anything else worth keeping in the JSON."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.duration_s = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        log(f"  {row.step}: {row.rrstore} | {row.peer} | "
            f"{'-' if row.ratio is None else f'{row.ratio:.2f}'} | {row.target} | {row.result}")
        return row

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "rows": [r.as_json() for r in self.rows], "notes": self.notes,
                "duration_s": round(self.duration_s, 1), **self.extra}


def restic_available() -> bool:
    return shutil.which("restic") is not None


def restic_env(repo: Path, scratch: Path) -> dict[str, str]:
    return {**base_env(), "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": "rrstore-bench",
            "RESTIC_CACHE_DIR": str(scratch / "restic-cache"), "RESTIC_PROGRESS_FPS": "0.1"}


class Restic:
    """restic on one tree, as benchmarks/rrbench/tools.Restic runs it (repo v2, compression auto)."""

    def __init__(self, tree: Path, base: Path, exclude_git: bool = False) -> None:
        self.tree = tree
        self.base = base
        self.repo = base / "repo"
        self.exclude_git = exclude_git
        self.env = restic_env(self.repo, base)

    def init(self) -> None:
        fresh(self.base)
        measure.quiet(["restic", "init", "-q", "--repository-version", "2"], env=self.env)

    def backup_argv(self) -> list[str]:
        excl = ["--exclude", ".git"] if self.exclude_git else []
        return ["restic", "backup", "-q", "--compression", "auto", "--host", "bench", *excl, "."]

    def backup(self, runs: int) -> Figure:
        """Cold backups: a fresh repository before each run."""
        return timed(self.backup_argv(), runs, env=self.env, cwd=self.tree, before=lambda _: self.init())

    def restore(self, runs: int, target: Path, include: str | None = None) -> Figure:
        """Restores of the latest snapshot into an empty ``target``."""
        inc = ["--include", include] if include else []
        return timed(["restic", "restore", "-q", "latest", "--target", str(target), *inc], runs, env=self.env,
                     cwd=self.base, before=lambda _: fresh(target), ok_codes=(0, 1))


def checkpoint_id(m: measure.Measurement) -> str:
    lines = m.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"rrstore checkpoint printed no id (stderr: {m.stderr.strip()[-300:]})")
    return lines[-1].strip()


def checkpoint_now(ctx: Context, store: Path, tree: Path, step: int, name: str) -> str:
    m = measure.run(ctx.cli(store, tree, "checkpoint", "--lane", "standard", "--step-number", str(step),
                            "--step-name", name), env=ctx.env())
    return checkpoint_id(m)


def count_files(root: Path, skip_top: tuple[str, ...] = (".git",)) -> int:
    total = 0
    for dirpath, dirnames, files in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        total += len(files)
    return total


def disk_free_gb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e9
