"""Progress: the real CLI with stderr on a pseudo-terminal draws bytes, rate and ETA; on a pipe (or with
--quiet / --json) nothing; the library's callbacks end at the bytes really read, written or copied."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import GIT_ENV, SeaweedFS

from rrstore import RollbackRecoverySystem

MiB = 1 << 20
# label: 12.0 MiB / 24.0 MiB   50%  8.1 MiB/s  ETA 0:01 (a rate may be in B, KiB or MiB)
BAR = re.compile(r"(\w+): [\d.]+ MiB / [\d.]+ MiB +\d+%  [\d.]+ (B|KiB|MiB|GiB)/s  ETA (\d+:)?\d+:\d\d")
CLEAR = "\r\x1b[K"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV, "RRSTORE_PROGRESS_DELAY": "0", **(extra or {})}
    env.pop("RRSTORE_DIR", None)
    return env


def on_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None,
                interrupt_at: str | None = None) -> tuple[int, str, str]:
    """Run ``python -m rrstore ARGS`` with stderr on a pseudo-terminal (120 columns): (exit code, stdout,
    everything the terminal received). With ``interrupt_at``, SIGINT once the terminal shows that text."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with open(cwd.parent / f"stdout-{time.monotonic_ns()}", "w+b") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=_env(env),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=slave)
        os.close(slave)
        seen = bytearray()
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
            if interrupt_at is not None and interrupt_at.encode() in seen:
                proc.send_signal(signal.SIGINT)
                interrupt_at = None
        os.close(master)
        code = proc.wait(timeout=120)
        out.seek(0)
        return code, out.read().decode(), seen.decode("utf-8", "replace").replace("\r\n", "\n")


def on_pipe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=_env(env), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def fill(root: Path, files: int = 6, size: int = 4 * MiB) -> int:
    """Incompressible files (each stored once): the bytes every command below moves."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"data{i}.bin").write_bytes(os.urandom(size))
    return files * size


def bars(terminal: str, label: str) -> list[str]:
    """The progress lines drawn for ``label``, each ending at the next carriage return."""
    return [m.group(0) for m in BAR.finditer(terminal) if m.group(1) == label]


def checkpoint_args(step: int = 1) -> tuple[str, ...]:
    return ("checkpoint", "--lane", "standard", "--step-number", str(step), "--step-name", "build")


# --- on a terminal ------------------------------------------------------------------------------------


def test_checkpoint_restore_export_import_draw_bytes_rate_and_eta(tmp_path: Path) -> None:
    project = tmp_path / "project"
    fill(project)
    code, cp, term = on_terminal(*checkpoint_args(), cwd=project)
    assert code == 0, term
    cp = cp.strip()
    assert bars(term, "checkpoint"), term
    assert "24.0 MiB / 24.0 MiB  100%" in term
    last_bar = term.rindex("checkpoint: ")
    assert term[last_bar:].index(CLEAR) < term[last_bar:].index(f"checkpoint {cp}:"), \
        "the line is cleared before the summary"

    for name in ("data0.bin", "data3.bin"):
        (project / name).write_bytes(os.urandom(4 * MiB))
    code, _, term = on_terminal("restore", cp, cwd=project)
    assert code == 0, term
    assert bars(term, "restore") and "8.0 MiB / 8.0 MiB  100%" in term, term

    archive = tmp_path / "one.rrar"
    code, _, term = on_terminal("export", cp, "-o", str(archive), cwd=project)
    assert code == 0, term
    assert bars(term, "export") and "24.0 MiB / 24.0 MiB  100%" in term, term

    code, _, term = on_terminal("verify", str(archive), cwd=project)
    assert code == 0, term
    assert bars(term, "verify"), term

    other = tmp_path / "other"
    other.mkdir()
    code, _, term = on_terminal("import", str(archive), cwd=other)
    assert code == 0, term
    assert bars(term, "import"), term


def test_push_and_pull_draw_bytes_rate_and_eta(tmp_path: Path, seaweedfs: SeaweedFS, s3_remote: str,
                                               s3_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    ids = []
    for step in range(1, 4):  # three checkpoints: three packs, so the bar moves between them
        fill(project, files=2)
        code, cp, term = on_terminal(*checkpoint_args(step), cwd=project, env=s3_env)
        assert code == 0, term
        ids.append(cp.strip())
    remote = ("--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint)
    code, out, term = on_terminal("push", *remote, cwd=project, env=s3_env)
    assert code == 0, term
    assert out.split() == ids
    assert len(bars(term, "push")) >= 2, term

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    code, out, term = on_terminal("pull", *ids, *remote, cwd=fresh, env=s3_env)
    assert code == 0, term
    assert len(bars(term, "pull")) >= 2, term


def test_quiet_and_json_draw_nothing_on_a_terminal(tmp_path: Path) -> None:
    project = tmp_path / "project"
    fill(project, files=2)
    for flag in ("--quiet", "--json"):
        code, _, term = on_terminal(*checkpoint_args(), flag, cwd=project)
        assert code == 0, term
        assert "\r" not in term and "MiB" not in term, (flag, term)


def test_ctrl_c_leaves_the_terminal_line_clean(tmp_path: Path) -> None:
    project = tmp_path / "project"
    fill(project, files=60, size=2 * MiB)
    code, _, term = on_terminal(*checkpoint_args(), cwd=project, interrupt_at="checkpoint: ")
    assert code == 130, term
    after = term[term.rindex("checkpoint: "):]
    assert CLEAR in after, repr(term[-3000:])  # a Ctrl-C during the first draw left the line uncleared
    cleared = after.index(CLEAR)
    rest = after[cleared + len(CLEAR):]
    assert "\r" not in rest and "MiB" not in rest, repr(after)  # only the interruption message follows


# --- not a terminal -----------------------------------------------------------------------------------


def test_nothing_but_messages_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    project = tmp_path / "project"
    fill(project, files=2)
    made = on_pipe(*checkpoint_args(), cwd=project)
    assert made.returncode == 0, made.stderr
    cp = made.stdout.strip()
    (project / "data0.bin").write_bytes(b"changed")
    archive = tmp_path / "a.rrar"
    for args in (("restore", cp), ("export", cp, "-o", str(archive))):
        done = on_pipe(*args, cwd=project)
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr and "/s" not in done.stderr and "\x1b" not in done.stderr, done.stderr
    assert "\r" not in made.stderr and "/s" not in made.stderr, made.stderr


# --- the byte accounting -------------------------------------------------------------------------------


class Calls:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    @property
    def last(self) -> tuple[int, int]:
        return self.calls[-1]

    def monotonic(self) -> bool:
        return all(a[0] <= b[0] for a, b in zip(self.calls, self.calls[1:], strict=False))


def test_checkpoint_and_restore_report_the_bytes_read_and_written(tmp_path: Path) -> None:
    project = tmp_path / "project"
    total = fill(project, files=3, size=300_000) + fill(project / "small", files=40, size=1000)
    past = time.time() - 60  # older than the stat cache's racy window: the second checkpoint trusts them
    for path in project.rglob("*.bin"):
        os.utime(path, (past, past))
    system = RollbackRecoverySystem(root=project)
    got = Calls()
    cp = system.checkpoint("standard", 1, "s", progress=got).checkpoint_id
    assert got.last == (total, total) and got.monotonic()
    assert got.calls[0][1] == total  # known from the start: the scan's sizes

    again = Calls()
    system.checkpoint("standard", 2, "s", progress=again)  # nothing changed: nothing read
    assert again.calls == []

    (project / "data1.bin").write_bytes(b"x" * 10)
    (project / "small" / "data5.bin").unlink()
    back = Calls()
    system.restore(cp, progress=back)
    assert back.last == (301_000, 301_000) and back.monotonic()


@pytest.mark.parametrize("fmt", ["rrstore", "tar"])
def test_export_and_import_report_the_bytes_written_and_read(tmp_path: Path, fmt: str) -> None:
    project = tmp_path / "project"
    total = fill(project, files=3, size=200_000)
    (project / "big.bin").write_bytes(os.urandom(5 * MiB))  # > 4 MiB: chunks, whose sizes are estimated
    total += 5 * MiB
    system = RollbackRecoverySystem(root=project)
    cp = system.checkpoint("standard", 1, "s").checkpoint_id
    archive = tmp_path / f"a.{fmt}"
    wrote = Calls()
    system.export([cp], archive, fmt, progress=wrote)
    assert wrote.last == (total, total) and wrote.monotonic()
    if fmt == "tar":
        return
    size = archive.stat().st_size
    checked = Calls()
    system.verify_archive(archive, progress=checked)
    assert checked.last == (size, size)
    imported = Calls()
    (tmp_path / "other").mkdir()
    RollbackRecoverySystem(root=tmp_path / "other").import_archive(archive, progress=imported)
    assert imported.last == (2 * size, 2 * size) and imported.monotonic()  # two passes: check, then store


def test_push_and_pull_report_the_bytes_copied(tmp_path: Path, seaweedfs: SeaweedFS, s3_remote: str,
                                               s3_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    system = RollbackRecoverySystem(root=project)
    for step in (1, 2):
        fill(project, files=2, size=500_000)
        system.checkpoint("standard", step, "s")
    sent = Calls()
    pushed = system.push([], s3_remote, seaweedfs.endpoint, progress=sent)
    assert pushed.bytes > 2 * 500_000
    assert sent.last == (pushed.bytes, pushed.bytes) and sent.monotonic()
    # the estimate (packs from their indexes; records, loose, count nothing) is close to what was sent
    assert 0.9 * pushed.bytes < sent.calls[0][1] <= pushed.bytes

    got = Calls()
    (tmp_path / "fresh").mkdir()
    pulled = RollbackRecoverySystem(root=tmp_path / "fresh").pull(pushed.transferred, s3_remote,
                                                                  seaweedfs.endpoint, progress=got)
    assert got.last == (pulled.bytes, pulled.bytes) and got.monotonic()
    assert 0.9 * pulled.bytes < got.calls[0][1] <= pulled.bytes


def test_a_pty_without_a_size_still_draws_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal reporting 0 columns (a bare pty) must not cut the line to nothing."""
    import rrstore.cli.output as output

    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    bar = output._Bar("checkpoint", 0.0)
    assert bar.width >= 79


def test_without_a_total_or_past_an_estimate_the_line_has_bytes_and_rate_but_no_eta() -> None:
    import rrstore.cli.output as output

    bar = output._Bar("import", 0.0)
    assert bar.line(5 * MiB, 0, 2.5 * MiB) == "import: 5.0 MiB  2.5 MiB/s"
    assert bar.line(5 * MiB, 4 * MiB, 2.5 * MiB) == "import: 5.0 MiB  2.5 MiB/s"
    assert bar.line(MiB, 4 * MiB, 0.5 * MiB) == "import: 1.0 MiB / 4.0 MiB   25%  512.0 KiB/s  ETA 0:06"
    assert bar.line(0, 4 * MiB, 0.0).endswith("0 B/s  ETA -:--")
    assert output._clock(3725) == "1:02:05"
