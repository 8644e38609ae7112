"""gc --cron-line / --systemd-unit: the generated job runs under cron's environment and removes what the policy says.

cron runs ``sh -c COMMAND`` with ``PATH=/usr/bin:/bin``, no virtual
environment and the home directory as the current one; systemd runs
``ExecStart`` without a shell and as little environment. These tests run
the generated command exactly so (``env -i PATH=/usr/bin:/bin``), from
directories other than the project, in a project whose path holds a space,
a quote, ``%`` and ``$HOME``. Old checkpoints come from archives whose
records are dated 30 days back (a checkpoint's age counts from its record's
time when that is earlier than when the store got it), so the CLI's real
clock judges them old.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from craft import Craft
from gc_helpers import rand, ref_ids

from rrstore import RollbackRecoverySystem
from rrstore.errors import UsageError
from rrstore.record import CheckpointRecord
from rrstore.schedule import GCJob, cron_command, gc_args, running_program, systemd_quote

CRON_ENV = ["env", "-i", "PATH=/usr/bin:/bin"]
POLICY = ["--older-than", "7d", "--keep-last", "1", "--keep-lane", "docs", "--grace", "0s"]
ODD_NAME = "100% $HOME it's"


def console_script() -> Path:
    """The rrstore console script installed beside this interpreter (a venv's bin/, or pip's scripts dir)."""
    script = Path(sys.executable).parent / "rrstore"
    if not script.is_file():
        script = Path(shutil.which("rrstore") or "rrstore")
    assert script.is_file(), "the rrstore console script is not installed"
    return script


def old_archive(path: Path, checkpoint_id: str, lane: str, seed: int) -> None:
    """An archive of one checkpoint whose record is 30 days old."""
    craft = Craft()
    when = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="microseconds")
    root = craft.tree(craft.file(f"{lane}-{seed}.bin", rand(seed, 4096)))
    record = CheckpointRecord(checkpoint_id=checkpoint_id, lane=lane, step_number=1, step_name="old",
                              timestamp=when, state_hash=root)
    craft.refs[checkpoint_id] = craft.add(record.encode())
    path.write_bytes(craft.archive())


def rrstore(*args: str, cwd: Path, program: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RRSTORE_DIR"}
    return subprocess.run([*(program or [sys.executable, "-m", "rrstore"]), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.fixture
def aged(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project with a young checkpoint, then two old standard ones (imported in turn) and an old docs one.

    The policy (POLICY) removes ``gone`` only: ``newest`` is the newest standard one the store got
    (--keep-last 1), ``docs`` is in a kept lane, ``young`` is younger than 7 days.
    """
    root = tmp_path / ODD_NAME
    root.mkdir()
    (root / "work.txt").write_text("young\n")
    ids = {"young": RollbackRecoverySystem(root=root).checkpoint("standard", 3, "young").checkpoint_id,
           "gone": "standard-step1-20261001_010101-aaaaaa", "newest": "standard-step1-20261001_010102-bbbbbb",
           "docs": "docs-step1-20261001_010103-cccccc"}
    for seed, name in enumerate(("gone", "newest", "docs")):
        archive = tmp_path / f"{name}.rrs"
        old_archive(archive, ids[name], ids[name].split("-")[0], seed)
        out = rrstore("import", str(archive), "-C", str(root), cwd=root)
        assert out.returncode == 0, out.stderr
    return root, ids


def run_in_cron_env(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as cron runs it: its ``\\%`` back to ``%``, then ``sh -c`` with nothing but PATH."""
    return subprocess.run([*CRON_ENV, "sh", "-c", command.replace("\\%", "%")], cwd=cwd, capture_output=True,
                          text=True)


@pytest.mark.parametrize("how", ["console script", "python -m rrstore"])
@pytest.mark.parametrize("where", ["elsewhere", "/"])
def test_the_cron_line_runs_under_env_i(aged: tuple[Path, dict[str, str]], tmp_path: Path, how: str,
                                        where: str) -> None:
    root, ids = aged
    store = root / ".checkpoints"
    program = [str(console_script())] if how == "console script" else [sys.executable, "-m", "rrstore"]
    out = rrstore("gc", *POLICY, "--cron-line", "0 4 * * 0", cwd=root, program=program)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "\n" not in line
    fields = line.split(None, 5)
    assert fields[:5] == ["0", "4", "*", "*", "0"]
    command = fields[5]
    assert shlex.split(command.replace("\\%", "%"))[0] == program[0]  # absolute: no PATH lookup
    assert ref_ids(store) == set(ids.values())  # generating the line changed nothing

    cwd = tmp_path / "elsewhere" if where == "elsewhere" else Path("/")
    cwd.mkdir(exist_ok=True)
    ran = run_in_cron_env(command, cwd)
    assert ran.returncode == 0, ran.stderr
    assert ref_ids(store) == {ids["young"], ids["newest"], ids["docs"]}
    assert ran.stdout == f"removed {ids['gone']}\n"
    assert not (cwd / ".checkpoints").exists()
    again = run_in_cron_env(command, cwd)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # nothing to say: cron mails nothing


def test_the_cron_line_appends_to_its_log(aged: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, ids = aged
    log = tmp_path / "logs 100%" / "gc.log"
    log.parent.mkdir()
    out = rrstore("gc", *POLICY, "--cron-line", "--log", str(log), "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"line", "schedule", "command"}
    assert doc["schedule"] == "0 3 * * *" and doc["line"] == f"{doc['schedule']} {doc['command']}"
    assert "\\%" in doc["command"] and "'100% $HOME it'\"'\"'s'" not in doc["command"]  # every % escaped
    ran = run_in_cron_env(doc["command"], tmp_path)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert log.read_text().startswith(f"removed {ids['gone']}\ngc removed 1 checkpoint(s)")


def split_exec_start(value: str) -> list[str]:
    """``ExecStart=``'s words as systemd reads them: its quotes, then ``%%`` and ``$$`` undone."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]


def test_the_systemd_units_run_under_env_i(aged: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, ids = aged
    out = rrstore("gc", *POLICY, "--systemd-unit", "Sun *-*-* 03:00", cwd=root)
    assert out.returncode == 0, out.stderr
    parts = re.split(r"^# (\S+)\n", out.stdout, flags=re.M)
    assert parts[0] == ""
    units = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert set(units) == {"rrstore-gc-100-HOME-it-s.service", "rrstore-gc-100-HOME-it-s.timer"}
    service, timer = configparser.ConfigParser(interpolation=None), configparser.ConfigParser(interpolation=None)
    service.optionxform = timer.optionxform = str  # type: ignore[assignment,method-assign]
    service.read_string(units["rrstore-gc-100-HOME-it-s.service"])
    timer.read_string(units["rrstore-gc-100-HOME-it-s.timer"])
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["OnCalendar"] == "Sun *-*-* 03:00" and timer["Install"]["WantedBy"] == "timers.target"
    argv = split_exec_start(service["Service"]["ExecStart"])
    assert argv[:4] == [os.path.abspath(sys.executable), "-P", "-m", "rrstore"]
    assert argv[4:8] == ["-C", str(root), "--store", str(root / ".checkpoints")]

    verify = shutil.which("systemd-analyze")
    if verify:  # the real parser, where the machine has it (the run below is the test either way)
        folder = tmp_path / "units"
        folder.mkdir()
        for name, text in units.items():
            (folder / name).write_text(text)
        checked = subprocess.run([verify, "verify", *(str(folder / n) for n in units)], capture_output=True,
                                 text=True)
        assert checked.returncode == 0, checked.stderr

    ran = subprocess.run([*CRON_ENV, *argv], cwd="/", capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ref_ids(root / ".checkpoints") == {ids["young"], ids["newest"], ids["docs"]}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--cron-line", "every day"], 2, "not a crontab schedule"),
    (["--cron-line", "--systemd-unit"], 2, "--cron-line and --systemd-unit exclude each other"),
    (["--log", "gc.log"], 2, "--log needs --cron-line or --systemd-unit"),
    (["--older-than", "soon", "--cron-line"], 2, "soon"),
    (["--systemd-unit", ""], 2, "not a systemd calendar"),
])
def test_bad_schedules_are_one_line_and_print_nothing(project: Path, args: list[str], code: int,
                                                      message: str) -> None:
    (project / "f.txt").write_text("x\n")
    RollbackRecoverySystem(root=project).checkpoint("standard", 1, "s")
    out = rrstore("gc", *args, cwd=project)
    assert out.returncode == code and out.stdout == ""
    assert out.stderr.startswith("rrstore: error:") and message in out.stderr and out.stderr.count("\n") == 1


def test_no_store_no_line_unless_it_is_a_remote_gc(tmp_path: Path) -> None:
    out = rrstore("gc", "--cron-line", "-C", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 10 and out.stdout == "" and "no rrstore store" in out.stderr
    out = rrstore("gc", "--remote", "s3://bucket/team", "--cron-line", "-C", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.rstrip().endswith(" gc --older-than 7d --grace 15m --remote s3://bucket/team")
    out = rrstore("gc", "--systemd-unit", "", "-C", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "not a systemd calendar" in out.stderr  # bad input is told first


def test_quoting_and_the_program() -> None:
    job = GCJob(("/opt/r r/bin/rrstore",), Path("/p/50%"), Path("/p/50%/.checkpoints"), ("--older-than", "7d"))
    assert cron_command(job) == "'/opt/r r/bin/rrstore' -C /p/50\\% --store /p/50\\%/.checkpoints gc --older-than 7d"
    assert gc_args("14d", 2, ("docs", "heavy"), "0s", dry_run=True, remote="s3://b/p", endpoint_url="http://e") == (
        "--older-than", "14d", "--grace", "0s", "--keep-last", "2", "--keep-lane", "docs", "--keep-lane", "heavy",
        "--remote", "s3://b/p", "--endpoint-url", "http://e", "--dry-run")
    assert systemd_quote('a "b" $X 5%') == '"a \\"b\\" $$X 5%%"' and systemd_quote("/usr/bin/x") == "/usr/bin/x"
    with pytest.raises(UsageError):
        cron_command(GCJob(("/x",), Path("/a\nb"), Path("/s"), ()))
    assert running_program("/usr/lib/python3/site-packages/rrstore/__main__.py", "/v/bin/python") == \
        ("/v/bin/python", "-P", "-m", "rrstore")
    script = console_script()
    assert running_program(str(script), "/v/bin/python") == (str(script.absolute()),)
