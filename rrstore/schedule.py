"""Scheduled gc (verbs): the crontab line and the systemd service and timer that run ``rrstore gc``.

cron and systemd start a command with almost no environment: ``PATH`` is
``/usr/bin:/bin``, no virtual environment is active, no ``RRSTORE_DIR`` is
set and the current directory is the home directory (or ``/``). So a bare
``rrstore`` exits 127 there, and a relative store lands somewhere else. What
this module writes names everything absolutely: the rrstore program that is
running now (its console script, else its interpreter with ``-m rrstore``:
both carry their virtual environment with them), the project root (``-C``)
and the store (``--store``), then the gc options, each word quoted for the
reader that runs it (``sh`` for cron, systemd's own rules for a unit).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

CRON_SCHEDULE = "0 3 * * *"  # daily at 03:00
SYSTEMD_CALENDAR = "daily"
_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@reboot"}
_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


@dataclass(frozen=True)
class GCJob:
    """What a scheduled gc runs: ``program`` with the project, store and gc options, and where output goes."""

    program: tuple[str, ...]
    root: Path
    store: Path
    gc_args: tuple[str, ...]
    log: Path | None = None

    @property
    def argv(self) -> list[str]:
        return [*self.program, "-C", str(self.root), "--store", str(self.store), "gc", *self.gc_args]

    @property
    def slug(self) -> str:
        """The project's part of the unit names (``rrstore-gc-SLUG``): its directory name, tamed."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.root.name).strip("-.") or "root"


def running_program(argv0: str, executable: str) -> tuple[str, ...]:
    """The absolute command that runs this rrstore again, from anywhere, with no environment.

    The console script when that is what runs (``argv0`` names it): its
    ``#!`` line names the interpreter of its virtual environment, and a
    pipx link (``~/.local/bin/rrstore``) is kept as a link, so it survives a
    reinstall. Otherwise (``python -m rrstore``) that interpreter, not
    resolved through symlinks (a venv's ``python`` is a link to the base
    one, which would lose the venv), with ``-P`` so that no ``rrstore``
    directory in the current one shadows the installed package.
    """
    if os.path.basename(argv0) == "rrstore" and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return (os.path.abspath(argv0),)
    if not executable:
        raise UsageError("cannot tell which Python runs rrstore (sys.executable is empty)")
    return (os.path.abspath(executable), "-P", "-m", "rrstore")


def gc_args(older_than: str, keep_last: int, keep_lanes: Sequence[str], grace: str, *, dry_run: bool = False,
            remote: str | None = None, endpoint_url: str | None = None) -> tuple[str, ...]:
    """gc's options as given, spelled out (the defaults of ``--older-than`` and ``--grace`` too)."""
    words = ["--older-than", older_than, "--grace", grace]
    if keep_last:
        words += ["--keep-last", str(keep_last)]
    for lane in keep_lanes:
        words += ["--keep-lane", lane]
    if remote:
        words += ["--remote", remote]
    if endpoint_url:
        words += ["--endpoint-url", endpoint_url]
    if dry_run:
        words.append("--dry-run")
    return tuple(words)


def _no_newline(job: GCJob) -> None:
    for word in [*job.argv, str(job.log or "")]:
        if "\n" in word or "\r" in word or "\0" in word:
            raise UsageError(f"cannot schedule a command with a line break or NUL in it: {word!r}")


def cron_line(job: GCJob, schedule: str = CRON_SCHEDULE) -> str:
    """One crontab line: ``schedule``, then the command as ``sh`` reads it.

    Without a log, output goes where cron sends it (mail to ``MAILTO``; gc
    says nothing unless it removed something or failed). With one, it is
    appended there. ``%`` is escaped as cron requires (cron turns a bare one
    into a newline and feeds the rest to standard input).
    """
    return f"{check_cron_schedule(schedule)} {cron_command(job)}"


def cron_command(job: GCJob) -> str:
    """The command part of the crontab line (what ``sh -c`` gets once cron has undone its ``\\%``)."""
    _no_newline(job)
    command = shlex.join(job.argv)
    if job.log is not None:
        command += f" >> {shlex.quote(str(job.log))} 2>&1"
    return command.replace("%", r"\%")


def check_cron_schedule(schedule: str) -> str:
    """``schedule`` if it is five crontab time fields or a macro such as ``@daily`` (else UsageError)."""
    fields = schedule.split()
    if (len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields)) or \
            (len(fields) == 1 and fields[0] in _CRON_MACROS):
        return " ".join(fields)
    raise UsageError(f"not a crontab schedule (five fields such as '0 3 * * *', or @daily): {schedule!r}")


def systemd_quote(word: str) -> str:
    """``word`` as one argument of ``ExecStart=``: systemd's quoting, with its ``%`` and ``$`` escaped."""
    word = word.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _setting(value: str) -> str:
    """A unit setting's value (a description, a path): specifiers escaped."""
    return value.replace("%", "%%")


def check_systemd_calendar(calendar: str) -> str:
    """``calendar`` trimmed, if it can be an ``OnCalendar=`` value: one line, not empty (else UsageError).

    systemd itself judges the expression (``systemd-analyze calendar``).
    """
    if not calendar.strip() or any(c in calendar for c in "\r\n\0"):
        raise UsageError(f"not a systemd calendar (OnCalendar=, e.g. daily or 'Sun *-*-* 03:00'): {calendar!r}")
    return calendar.strip()


def systemd_units(job: GCJob, calendar: str = SYSTEMD_CALENDAR) -> dict[str, str]:
    """``{name: text}`` of a oneshot service running the gc and the timer that starts it on ``calendar``."""
    _no_newline(job)
    calendar = check_systemd_calendar(calendar)
    name = f"rrstore-gc-{job.slug}"
    what = f"rrstore garbage collection of {_setting(str(job.root))}"
    output = "" if job.log is None else (f"StandardOutput=append:{_setting(str(job.log))}\n"
                                         f"StandardError=append:{_setting(str(job.log))}\n")
    service = ("[Unit]\n"
               f"Description={what}\n\n"
               "[Service]\n"
               "Type=oneshot\n"
               f"ExecStart={' '.join(systemd_quote(w) for w in job.argv)}\n"
               f"{output}"
               "Nice=19\n"
               "IOSchedulingClass=idle\n")
    timer = ("[Unit]\n"
             f"Description={what}, {_setting(calendar)}\n\n"
             "[Timer]\n"
             f"OnCalendar={calendar}\n"
             "Persistent=true\n"
             "RandomizedDelaySec=1h\n\n"
             "[Install]\n"
             "WantedBy=timers.target\n")
    return {f"{name}.service": service, f"{name}.timer": timer}
