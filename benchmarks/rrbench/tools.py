"""Adapters: how each tool checkpoints, detects no change, restores, collects garbage, exports.

Each method returns a ``Cmd`` (argv, working directory, environment) that
``measure.run`` times; one-time set-up (``init``) and look-ups of ids are
not timed. Every tool gets a fresh store per run, outside the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import measure
from .trees import GIT_ENV


@dataclass
class Cmd:
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    ok_codes: tuple[int, ...] = (0,)


@dataclass
class Ctx:
    """One tool on one tree in one run."""

    tree: Path
    store: Path
    scratch: Path
    tree_has_git: bool
    counter: int = 0
    refs: dict[str, str] = field(default_factory=dict)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # the sandbox sets it; rrstore (and borg) should run with their .pyc as users have them
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


class Tool:
    name = ""
    binaries: tuple[str, ...] = ()
    dedup = True
    label = ""
    # gc in the tree scenarios: git's gc packs (it keeps every commit) and takes minutes on these
    # trees; it is measured on the history instead
    gc_in_trees = True

    def available(self) -> bool:
        return all(shutil.which(b) for b in self.binaries)

    def version(self) -> str:
        return ""

    def env(self, ctx: Ctx) -> dict[str, str]:
        return base_env()

    def init(self, ctx: Ctx) -> None:
        ctx.store.mkdir(parents=True)

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        raise NotImplementedError

    def after_checkpoint(self, ctx: Ctx, label: str, m: measure.Measurement) -> str:
        """The reference a later restore names (untimed look-up if needed)."""
        return label

    def unchanged(self, ctx: Ctx, label: str) -> Cmd:
        return self.checkpoint(ctx, label)

    def status(self, ctx: Ctx) -> Cmd | None:
        return None

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        raise NotImplementedError

    def gc(self, ctx: Ctx) -> Cmd | None:
        return None

    def export(self, ctx: Ctx, refs: Sequence[str], out: Path) -> Cmd | None:
        return None

    def store_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.disk_usage(ctx.store)

    def cache_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.DiskUsage(0, 0, 0)


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, env=base_env())
    except OSError:
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


class RRStore(Tool):
    name = "rrstore"
    label = "rrstore"

    def __init__(self, command: Sequence[str], env_overrides: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.env_overrides = env_overrides or {}
        self._help: dict[str, str | None] = {}

    def available(self) -> bool:
        return self.help_text("--version") is not None

    def help_text(self, *args: str) -> str | None:
        key = " ".join(args)
        if key not in self._help:
            proc = subprocess.run([*self.command, *args], capture_output=True, text=True, check=False,
                                  env={**base_env(), **self.env_overrides})
            self._help[key] = proc.stdout if proc.returncode == 0 else None
        return self._help[key]

    def has(self, command: str) -> bool:
        return self.help_text(command, "--help") is not None

    def version(self) -> str:
        text = (self.help_text("--version") or "?").strip()
        return text.split("version", 1)[-1].strip()

    def env(self, ctx: Ctx) -> dict[str, str]:
        env = {**base_env(), **self.env_overrides}
        env.pop("RRSTORE_DIR", None)
        return env

    def _cli(self, ctx: Ctx, *args: str) -> Cmd:
        return Cmd([*self.command, "-q", "--store", str(ctx.store), "-C", str(ctx.tree), *args],
                   env=self.env(ctx))

    def init(self, ctx: Ctx) -> None:
        pass  # the first checkpoint creates the store: that is part of a cold checkpoint

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        ctx.counter += 1
        return self._cli(ctx, "checkpoint", "--lane", "standard", "--step-number", str(ctx.counter),
                         "--step-name", label)

    def after_checkpoint(self, ctx: Ctx, label: str, m: measure.Measurement) -> str:
        lines = m.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"rrstore checkpoint printed no id (stderr: {m.stderr.strip()[-300:]})")
        return lines[-1].strip()

    def status(self, ctx: Ctx) -> Cmd | None:
        return self._cli(ctx, "status")

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        return self._cli(ctx, "restore", "--checkpoint-id", ref)

    def gc(self, ctx: Ctx) -> Cmd | None:
        text = self.help_text("gc", "--help")
        if text is None:
            return None
        args = ["gc"]
        if "--older-than" in text:
            args += ["--older-than", "0s"]
        if "--keep-last" in text:
            args += ["--keep-last", "1"]
        return self._cli(ctx, *args)

    def export(self, ctx: Ctx, refs: Sequence[str], out: Path) -> Cmd | None:
        text = self.help_text("export", "--help")
        if text is None or "--output" not in text:
            return None
        return self._cli(ctx, "export", *refs, "--output", str(out))

    def store_usage(self, ctx: Ctx) -> measure.DiskUsage:
        # the stat cache is a cache (like git's index, restic's and borg's caches): counted apart
        return measure.disk_usage(ctx.store, skip=("cache", "tmp", "locks"))

    def cache_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.disk_usage(ctx.store / "cache")

    def undo_metrics(self, ctx: Ctx) -> dict[str, object]:
        """Metrics of the checkpoint a restore takes of the tree first (so it can be undone)."""
        import json

        cmd = Cmd([*self.command, "--store", str(ctx.store), "-C", str(ctx.tree), "list", "--json"],
                  env=self.env(ctx))
        try:
            records = json.loads(measure.quiet(cmd.argv, env=cmd.env))
        except (RuntimeError, ValueError):
            return {}
        if records and isinstance(records[0], dict) and str(records[0].get("step_name", "")).startswith("before"):
            metrics = records[0].get("metrics", {})
            return metrics if isinstance(metrics, dict) else {}
        return {}

    def metrics(self, ctx: Ctx, ref: str) -> dict[str, object]:
        import json

        cmd = Cmd([*self.command, "--store", str(ctx.store), "-C", str(ctx.tree), "show", ref, "--json"],
                  env=self.env(ctx))
        try:
            doc = json.loads(measure.quiet(cmd.argv, env=cmd.env))
        except (RuntimeError, ValueError):
            return {}
        metrics = doc.get("metrics", {})
        return metrics if isinstance(metrics, dict) else {}


class Git(Tool):
    name = "git"
    label = "git (separate git dir)"
    binaries = ("git",)
    gc_in_trees = False

    def version(self) -> str:
        return _first_line(["git", "--version"])

    def env(self, ctx: Ctx) -> dict[str, str]:
        return {**base_env(), **GIT_ENV, "GIT_DIR": str(ctx.store), "GIT_WORK_TREE": str(ctx.tree)}

    def init(self, ctx: Ctx) -> None:
        env = self.env(ctx)
        measure.quiet(["git", "init", "-q"], cwd=ctx.tree, env=env)
        # no automatic gc/maintenance in the middle of a timed commit (it would also pack the
        # loose objects the size comparison is about); `git gc` is measured as its own step
        for key, value in (("gc.auto", "0"), ("maintenance.auto", "false"), ("core.fsmonitor", "false")):
            measure.quiet(["git", "config", key, value], cwd=ctx.tree, env=env)

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        return Cmd(["sh", "-c", 'git add -A && git commit -q --allow-empty --no-verify -m "$1"', "sh", label],
                   cwd=ctx.tree, env=self.env(ctx))

    def after_checkpoint(self, ctx: Ctx, label: str, m: measure.Measurement) -> str:
        return measure.quiet(["git", "rev-parse", "HEAD"], cwd=ctx.tree, env=self.env(ctx)).strip()

    def unchanged(self, ctx: Ctx, label: str) -> Cmd:
        # nothing to commit: git's answer to "did anything change" is `git status`
        return Cmd(["git", "status", "--porcelain"], cwd=ctx.tree, env=self.env(ctx))

    def status(self, ctx: Ctx) -> Cmd | None:
        return Cmd(["git", "status", "--porcelain"], cwd=ctx.tree, env=self.env(ctx))

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        return Cmd(["git", "checkout", "-q", "-f", ref], cwd=ctx.tree, env=self.env(ctx))

    def gc(self, ctx: Ctx) -> Cmd | None:
        return Cmd(["git", "gc", "-q", "--prune=now"], cwd=ctx.tree, env=self.env(ctx))

    def store_usage(self, ctx: Ctx) -> measure.DiskUsage:
        # the object database (loose objects until `git gc`); the index is git's stat cache
        return measure.disk_usage(ctx.store / "objects", ctx.store / "refs", ctx.store / "packed-refs")

    def cache_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.disk_usage(ctx.store / "index")


class Restic(Tool):
    name = "restic"
    label = "restic (repo v2, compression auto)"
    binaries = ("restic",)

    def version(self) -> str:
        return _first_line(["restic", "version"])

    def env(self, ctx: Ctx) -> dict[str, str]:
        return {**base_env(), "RESTIC_REPOSITORY": str(ctx.store), "RESTIC_PASSWORD": "rrstore-bench",
                "RESTIC_CACHE_DIR": str(ctx.scratch / "restic-cache"), "RESTIC_PROGRESS_FPS": "0.1"}

    def init(self, ctx: Ctx) -> None:
        measure.quiet(["restic", "init", "-q", "--repository-version", "2"], env=self.env(ctx))

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        excl = ["--exclude", ".git"] if ctx.tree_has_git else []
        return Cmd(["restic", "backup", "-q", "--compression", "auto", "--host", "bench", "--tag", label,
                    *excl, "."], cwd=ctx.tree, env=self.env(ctx))

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        # restic 0.14 cannot replace an existing symlink: it restores everything else and exits 1
        # ("file exists"); accepted here because the restored tree is verified afterwards
        return Cmd(["restic", "restore", "-q", "latest", "--tag", ref, "--target", "."], cwd=ctx.tree,
                   env=self.env(ctx), ok_codes=(0, 1))

    def gc(self, ctx: Ctx) -> Cmd | None:
        return Cmd(["restic", "forget", "-q", "--keep-last", "1", "--prune"], cwd=ctx.tree, env=self.env(ctx))

    def cache_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.disk_usage(ctx.scratch / "restic-cache")


class Borg(Tool):
    name = "borg"
    label = "borg (-e none, zstd,3)"
    binaries = ("borg",)

    def version(self) -> str:
        return _first_line(["borg", "--version"])

    def env(self, ctx: Ctx) -> dict[str, str]:
        return {**base_env(), "BORG_REPO": str(ctx.store), "BORG_PASSPHRASE": "",
                "BORG_BASE_DIR": str(ctx.scratch / "borg-base"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_DISPLAY_PASSPHRASE": "no", "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
                "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO"}

    def init(self, ctx: Ctx) -> None:
        measure.quiet(["borg", "init", "-e", "none"], env=self.env(ctx))

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        excl = ["--exclude", ".git"] if ctx.tree_has_git else []
        return Cmd(["borg", "create", "--compression", "zstd,3", *excl, f"::{label}", "."], cwd=ctx.tree,
                   env=self.env(ctx))

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        return Cmd(["borg", "extract", f"::{ref}"], cwd=ctx.tree, env=self.env(ctx))

    def gc(self, ctx: Ctx) -> Cmd | None:
        return Cmd(["sh", "-c", "borg prune --keep-last 1 && borg compact"], cwd=ctx.tree, env=self.env(ctx))

    def cache_usage(self, ctx: Ctx) -> measure.DiskUsage:
        return measure.disk_usage(ctx.scratch / "borg-base")


class TarZstd(Tool):
    name = "tar-zstd"
    label = "tar | zstd -3 -T0"
    binaries = ("tar", "zstd", "bash")
    dedup = False

    def version(self) -> str:
        return f"{_first_line(['tar', '--version'])}; {_first_line(['zstd', '--version'])}"

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        excl = "--exclude=./.git " if ctx.tree_has_git else ""
        script = f'tar -C "$1" {excl}-cf - . | zstd -q -3 -T0 -o "$2"'
        return Cmd(["bash", "-o", "pipefail", "-c", script, "bash", str(ctx.tree),
                    str(ctx.store / f"{label}.tar.zst")], env=self.env(ctx))

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        script = 'zstd -q -dc "$2" | tar -C "$1" -xf -'
        return Cmd(["bash", "-o", "pipefail", "-c", script, "bash", str(ctx.tree),
                    str(ctx.store / f"{ref}.tar.zst")], env=self.env(ctx))


class CpA(Tool):
    name = "cp-a"
    label = "cp -a (a copy per checkpoint)"
    binaries = ("cp", "find")
    dedup = False

    def version(self) -> str:
        return _first_line(["cp", "--version"])

    def checkpoint(self, ctx: Ctx, label: str) -> Cmd:
        dest = ctx.store / label
        if ctx.tree_has_git:
            script = 'mkdir "$2" && find . -mindepth 1 -maxdepth 1 ! -name .git -exec cp -a -t "$2" {} +'
            return Cmd(["sh", "-c", script, "sh", str(ctx.tree), str(dest)], cwd=ctx.tree, env=self.env(ctx))
        return Cmd(["cp", "-a", str(ctx.tree), str(dest)], env=self.env(ctx))

    def restore(self, ctx: Ctx, ref: str) -> Cmd:
        return Cmd(["cp", "-a", f"{ctx.store / ref}/.", f"{ctx.tree}/"], env=self.env(ctx))


def all_tools(rrstore: RRStore) -> list[Tool]:
    return [rrstore, Git(), Restic(), Borg(), TarZstd(), CpA()]
