"""Run one command and measure it: wall time, CPU time and peak RSS of that child.

``os.wait4`` returns the resource usage of exactly the process waited for,
including its own waited-for children (git's helpers, the two sides of a
shell pipeline), so a measurement never mixes in another command. Output goes
to temporary files, never pipes, so a chatty tool cannot block on a full pipe.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int
    exit_code: int
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)
    ok_codes: tuple[int, ...] = field(default=(0,), repr=False)
    other_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code in self.ok_codes

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        doc.pop("stdout")
        doc.pop("ok_codes")
        doc["stderr"] = self.stderr[-1000:] if self.exit_code != 0 else ""
        return doc


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], m: Measurement) -> None:
        tail = (m.stderr.strip() or m.stdout.strip())[-600:]
        super().__init__(f"{' '.join(argv)} exited {m.exit_code}: {tail}")
        self.measurement = m


TIME_BIN = "/usr/bin/time"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    # user nice system idle iowait irq softirq (steal, time the hypervisor took, is left out)
    return (sum(fields[:7]) - fields[3] - fields[4]) / CLK_TCK


def _gnu_time() -> bool:
    """GNU time measures the child's peak RSS from its own small process.

    ``wait4`` alone would report at least the RSS of this Python process: the
    child's memory before ``exec`` is a (v)fork of it and counts in its maxrss.
    """
    if not os.access(TIME_BIN, os.X_OK):
        return False
    proc = subprocess.run([TIME_BIN, "-f", "%M", "true"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and proc.stderr.strip().isdigit()


HAVE_GNU_TIME = _gnu_time()


def run(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        check: bool = True, ok_codes: Sequence[int] = (0,)) -> Measurement:
    """Run ``argv`` to completion and measure it; exit codes in ``ok_codes`` count as success."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as rss_file:
        full = [TIME_BIN, "-f", "%M", "-o", rss_file.name, "--", *argv] if HAVE_GNU_TIME else list(argv)
        busy = busy_cpu_s()
        start = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        # CPU time other processes used meanwhile: how busy the machine was with things other than this step
        other = max(0.0, busy_cpu_s() - busy - (usage.ru_utime + usage.ru_stime))
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        rss = usage.ru_maxrss
        if HAVE_GNU_TIME:
            lines = rss_file.read().strip().splitlines()
            if lines and lines[-1].strip().isdigit():
                rss = int(lines[-1])
        m = Measurement(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, user_s=usage.ru_utime,
                        sys_s=usage.ru_stime, max_rss_kib=rss, exit_code=proc.returncode,
                        stdout=out.read().decode(errors="replace"), stderr=err.read().decode(errors="replace"),
                        ok_codes=tuple(ok_codes), other_cpu_s=round(other, 3))
    if check and not m.ok:
        raise CommandFailed(argv, m)
    return m


def quiet(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run an unmeasured helper command; raise on failure; return stdout."""
    proc = subprocess.run(list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return proc.stdout


@dataclass
class DiskUsage:
    disk: int  # allocated blocks, as du counts them
    apparent: int  # sum of file sizes
    files: int


def disk_usage(*paths: Path, skip: Sequence[str] = ()) -> DiskUsage:
    """Bytes on disk (st_blocks) and apparent bytes under ``paths``; hard links once.

    ``skip`` names top-level entries of each path to leave out (caches).
    """
    seen: set[tuple[int, int]] = set()
    disk = apparent = files = 0
    for top in paths:
        if not os.path.lexists(top):
            continue
        stack = [str(top)]
        first = True
        while stack:
            d = stack.pop()
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                disk += st.st_blocks * 512
                apparent += st.st_size if not os.path.isdir(d) else 0
            if not os.path.isdir(d) or os.path.islink(d):
                files += 1
                continue
            with os.scandir(d) as it:
                for entry in it:
                    if first and entry.name in skip:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    est = entry.stat(follow_symlinks=False)
                    key = (est.st_dev, est.st_ino)
                    files += 1
                    if key in seen:
                        continue
                    seen.add(key)
                    disk += est.st_blocks * 512
                    apparent += est.st_size
            first = False
    return DiskUsage(disk, apparent, files)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
