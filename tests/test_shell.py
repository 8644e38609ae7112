"""Shell completion (``cli/completion.py``) through click's real protocol and real shells, and ``--help``
examples: every command's help ends with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import GIT_ENV, run_cli, system_tool

RRSTORE = Path(sys.executable).parent / "rrstore"  # the installed console script, as a shell calls it
ID_COMMANDS = [["restore", "--checkpoint-id"], ["restore"], ["show"], ["diff"], ["diff", "latest"], ["pin"],
               ["delete"], ["delete", "latest"], ["export"], ["push"], ["validate", "--checkpoint"]]


def checkpoint(project: Path, lane: str, step: int) -> str:
    (project / f"{lane}{step}.txt").write_text(f"{lane} {step}\n")
    done = run_cli("-q", "checkpoint", "--lane", lane, "--step-number", str(step), "--step-name", "s", cwd=project)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """A project with checkpoints in three lanes, two of them with two steps."""
    project = tmp_path_factory.mktemp("shell") / "proj"
    project.mkdir()
    ids: dict[str, list[str]] = {"standard": [], "docs": [], "heavy": []}
    for lane, step in (("standard", 1), ("docs", 1), ("standard", 2), ("heavy", 3), ("docs", 2)):
        ids[lane].append(checkpoint(project, lane, step))
    return project, ids


def complete(shell: str, words: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """The values the installed CLI offers for the last word of ``rrstore WORDS`` in ``shell``'s protocol."""
    line = " ".join(["rrstore", *words])
    cword = str(len(words)) if shell != "fish" else words[-1]  # fish passes the word being completed
    full = {**os.environ, **GIT_ENV, "_RRSTORE_COMPLETE": f"{shell}_complete", "COMP_WORDS": line,
            "COMP_CWORD": cword, **(env or {})}
    full.pop("RRSTORE_DIR", None) if "RRSTORE_DIR" not in (env or {}) else None
    done = subprocess.run([str(RRSTORE)], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = [line for line in done.stdout.splitlines() if line]  # nothing offered: one empty line
    if shell == "fish" and all(line.startswith(("plain,", "dir,", "file,")) for line in lines):
        return [line.split(",", 1)[1].split("\t")[0] for line in lines]  # click >= 8.4.2: type,value[\thelp]
    if shell in ("zsh", "fish"):  # type, value, help: three lines each
        return [lines[i + 1] for i in range(0, len(lines), 3)]
    return [row.split(",", 1)[1].split("\t")[0] for row in lines]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_partial_id_completes_to_exactly_the_matching_ids(shell: str, store: tuple[Path, dict]) -> None:
    project, ids = store
    everything = sorted(["latest", *ids["standard"], *ids["docs"], *ids["heavy"]])
    for words in ID_COMMANDS if shell == "bash" else ID_COMMANDS[::3]:  # the protocols differ by shell only
        assert sorted(complete(shell, [*words, "standard-step"], project)) == sorted(ids["standard"]), words
        assert complete(shell, [*words, ids["docs"][1][:-3]], project) == [ids["docs"][1]], words
        assert sorted(complete(shell, [*words, ""], project)) == everything, words
        assert complete(shell, [*words, "lat"], project) == ["latest"], words
        assert complete(shell, [*words, "nothing-like-it"], project) == [], words


def test_ids_come_from_the_store_the_command_line_names(store: tuple[Path, dict], tmp_path: Path) -> None:
    project, ids = store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wanted = sorted(ids["heavy"])
    assert complete("bash", ["show", "--store", str(project / ".checkpoints"), "heavy"], elsewhere) == wanted
    assert complete("bash", ["--store", str(project / ".checkpoints"), "show", "heavy"], elsewhere) == wanted
    assert complete("bash", ["-C", str(project), "diff", "heavy"], elsewhere) == wanted
    assert complete("bash", ["show", "heavy"], elsewhere,
                    env={"RRSTORE_DIR": str(project / ".checkpoints")}) == wanted
    assert complete("bash", ["pull", ""], project) == ["latest"]  # a remote's ids: not listed on each Tab


def test_unpin_completes_the_pinned_ids_only(store: tuple[Path, dict]) -> None:
    project, ids = store
    assert complete("bash", ["unpin", ""], project) == []
    done = run_cli("pin", ids["heavy"][0], cwd=project)
    assert done.returncode == 0, done.stderr
    try:
        for shell in ("bash", "zsh", "fish"):
            assert complete(shell, ["unpin", "h"], project) == [ids["heavy"][0]]
            assert complete(shell, ["unpin", "s"], project) == []
    finally:
        assert run_cli("unpin", ids["heavy"][0], cwd=project).returncode == 0


def test_without_a_store_nothing_is_offered_said_or_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for words in (["show", ""], ["restore", "--checkpoint-id", "st"], ["--store", str(empty / "no"), "pin", ""]):
        assert complete("bash", words, empty) == []  # and complete() checked: exit 0, stderr empty
    assert list(empty.iterdir()) == []
    (empty / ".checkpoints").mkdir()  # a store directory without its config.json: not a store
    assert complete("bash", ["show", ""], empty) == []
    assert [p.name for p in empty.rglob("*")] == [".checkpoints"]


def test_settings_that_do_not_parse_cost_the_ids_only(store: tuple[Path, dict], tmp_path: Path) -> None:
    """A broken rrstore.toml is an error for a command, but a Tab prints nothing: no line, no traceback."""
    project, _ = store
    broken = tmp_path / "broken"
    shutil.copytree(project, broken)
    (broken / "rrstore.toml").write_text("store = [unclosed\n")
    assert run_cli("list", cwd=broken).returncode == 2
    assert complete("bash", ["show", ""], broken) == []
    assert complete("bash", ["-C", str(broken / "missing"), "show", ""], broken) == []


def test_lanes_complete_from_the_one_list(tmp_path: Path) -> None:
    from rrstore.lanes import LANES

    assert complete("bash", ["checkpoint", "--lane", ""], tmp_path) == list(LANES)
    assert complete("fish", ["gc", "--keep-lane", "h"], tmp_path) == ["heavy"]
    assert complete("zsh", ["workflow", "--lane", "st"], tmp_path) == ["standard"]


def test_every_checkpoint_id_parameter_of_every_command_completes_ids() -> None:
    """Centrally: a parameter shown as ID completes ids, whichever module defines it; a parameter
    named for a checkpoint must be shown as ID (the convention new commands follow)."""
    from rrstore.cli.completion import CheckpointId, names_checkpoints
    from rrstore.cli.main import cli

    ctx = click.Context(cli)
    seen = 0
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        for param in command.params:
            named = "checkpoint" in (param.name or "") or (param.name or "") in ("old_id", "new_id")
            if named and not getattr(param, "is_flag", False):
                assert names_checkpoints(param), f"{name} {param.name}: give it metavar='ID'"
            if names_checkpoints(param):
                seen += 1
                custom = param._custom_shell_complete is not None  # pull's: only 'latest'
                assert custom or isinstance(param.type, CheckpointId), f"{name} {param.name}"
    assert seen >= len({tuple(w[:1]) for w in ID_COMMANDS})


def test_completion_prints_clicks_own_scripts_and_bash_accepts_its_one() -> None:
    from click.shell_completion import get_completion_class
    from rrstore.cli.main import cli

    for shell in ("bash", "zsh", "fish"):
        done = run_cli("completion", shell, cwd=Path.cwd())
        assert done.returncode == 0, done.stderr
        cls = get_completion_class(shell)
        assert cls is not None
        assert done.stdout == cls(cli, {}, "rrstore", "_RRSTORE_COMPLETE").source() + "\n"
        assert "_RRSTORE_COMPLETE" in done.stdout
    bash = run_cli("completion", "bash", cwd=Path.cwd()).stdout
    checked = subprocess.run(["bash", "-n"], input=bash, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    wrong = run_cli("completion", "tcsh", cwd=Path.cwd())
    assert wrong.returncode == 2 and wrong.stdout == "" and len(wrong.stderr.strip().splitlines()) == 1


def shell_env() -> dict[str, str]:
    return {**os.environ, **GIT_ENV, "PATH": f"{RRSTORE.parent}{os.pathsep}{os.environ['PATH']}"}


def test_bash_sourcing_the_script_completes_ids(store: tuple[Path, dict]) -> None:
    project, ids = store
    script = ('eval "$(rrstore completion bash)"; COMP_WORDS=(rrstore show standard-step); COMP_CWORD=2; '
              '_rrstore_completion rrstore; printf "%s\\n" "${COMPREPLY[@]}"; complete -p rrstore')
    done = subprocess.run(["bash", "-c", script], cwd=project, env=shell_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    *offered, registered = done.stdout.splitlines()
    assert sorted(offered) == sorted(ids["standard"])
    assert registered.startswith("complete ") and registered.endswith(" rrstore")


def test_fish_sourcing_the_script_completes_ids(store: tuple[Path, dict]) -> None:
    project, ids = store
    system_tool("fish")
    script = 'rrstore completion fish | source; complete -C "rrstore pin docs-step"'
    done = subprocess.run(["fish", "--no-config", "-c", script], cwd=project, env=shell_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split("\t")[0] for line in done.stdout.splitlines()) == sorted(ids["docs"])


def test_zsh_sourcing_the_script_completes_ids(store: tuple[Path, dict], tmp_path: Path) -> None:
    """The script as zsh runs it, with compadd (what the completion widget would show) printing its words."""
    project, ids = store
    system_tool("zsh")
    script = (f'autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump && eval "$(rrstore completion zsh)" && '
              'whence -w _rrstore_completion && print -r -- "$_comps[rrstore]" && '
              'compadd() { print -rl -- ${(P)${@[-1]}} } && words=(rrstore diff heavy) && CURRENT=3 && '
              '_rrstore_completion')
    done = subprocess.run(["zsh", "-f", "-c", script], cwd=project, env=shell_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["_rrstore_completion: function", "_rrstore_completion", *ids["heavy"]]


def command_help(name: str) -> str:
    from rrstore.cli.main import cli

    root = click.Context(cli, info_name="rrstore")
    command = cli.get_command(root, name)
    assert command is not None
    return command.get_help(click.Context(command, info_name=name, parent=root))


def test_every_commands_help_ends_with_one_or_two_examples() -> None:
    from rrstore.cli.main import COMMANDS, cli

    names = cli.list_commands(click.Context(cli))
    assert set(COMMANDS) <= set(names)
    for name in names:
        lines = command_help(name).rstrip().splitlines()
        assert "  Examples:" in lines, f"rrstore {name} --help: no Examples block at the end of its docstring"
        examples = lines[len(lines) - lines[::-1].index("  Examples:"):]
        assert 1 <= len(examples) <= 2, (name, examples)
        assert all(line.startswith("    rrstore ") for line in examples), (name, examples)
        assert lines.index("Options:") < len(lines) - len(examples), name  # the examples come last


def test_help_through_the_installed_cli_ends_with_the_examples(tmp_path: Path) -> None:
    done = run_cli("show", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.rstrip().splitlines()[-3:] == [
        "  Examples:", "    rrstore show latest",
        "    rrstore show standard-step2-20261201_071641-k3f9qz --json --read-data"]
