"""``list -v`` and ``show`` say what a user asks first (issue 13): pinned or not, an undo point as
such, and for a damaged checkpoint what is damaged and the way out; ``forget`` is ``delete``.

Real git repositories and real damage: refs and records rewritten or removed on disk, a pack
removed, a loose copy that does not hash to its name.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_repo, write

from rrstore import RollbackRecoverySystem
from rrstore.tree import Entry, flatten

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", None, {"README.md": "# demo\n", "src/app.py": "print(1)\n",
                                               "lib/util.py": "x = 1\n", "lib/deep/more.py": "y = 2\n"})


def _row(listing: str, checkpoint_id: str) -> list[str]:
    return next(line.split() for line in listing.splitlines() if line.startswith(checkpoint_id))


def test_list_v_and_show_say_pinned_and_undo(repo: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=repo)
    first = system.checkpoint("standard", 1, "build").checkpoint_id
    write(repo, "src/app.py", "print(2)\n")
    second = system.checkpoint("standard", 2, "test").checkpoint_id
    undo = system.restore(first).undo_checkpoint_id
    assert undo is not None
    assert cli("pin", first, cwd=repo).returncode == 0

    table = cli("list", "-v", cwd=repo)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:5] == ["ID", "LANE", "STEP", "STATUS", "PINNED"]
    assert _row(table.stdout, first)[1:5] == ["standard", "1", "success", "yes"]
    assert _row(table.stdout, second)[1:5] == ["standard", "2", "success", "-"]
    assert _row(table.stdout, undo)[1:5] == ["standard", "1", "undo", "-"]  # the restored step's lane and step
    listed = {r["checkpoint_id"]: r for r in json.loads(cli("list", "--json", cwd=repo).stdout)}
    assert listed[first]["pinned"] is True and listed[second]["pinned"] is False

    shown = cli("show", first, cwd=repo)
    assert shown.returncode == 0 and "pinned: True" in shown.stdout.splitlines()
    assert "pinned: False" in cli("show", second, cwd=repo).stdout.splitlines()
    doc = json.loads(cli("show", "--json", first, cwd=repo).stdout)
    assert doc["pinned"] is True and "damage" not in doc and doc["checkpoint_id"] == first
    assert json.loads(cli("show", "--json", "latest", cwd=repo).stdout)["checkpoint_id"] == second


def _damaged(out: subprocess.CompletedProcess[str], checkpoint_id: str) -> str:
    """The damaged-show contract: exit 13, one error line naming the way out, no traceback."""
    assert out.returncode == 13, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
    assert "check --repair" in out.stderr and f"rrstore delete {checkpoint_id}" in out.stderr
    return out.stderr


def test_show_of_a_damaged_ref_or_record_says_what_is_damaged(repo: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=repo)
    first = system.checkpoint("standard", 1, "build").checkpoint_id
    write(repo, "src/app.py", "print(2)\n")
    second = system.checkpoint("standard", 2, "test").checkpoint_id
    refs = system.store_path / "refs" / "checkpoints"

    (refs / second).write_text("garbage\n")
    out = cli("show", second, cwd=repo)
    _damaged(out, second)
    assert out.stdout.splitlines() == [f"checkpoint_id: {second}", "pinned: False",
                                       f"damage: ref-unreadable refs/checkpoints/{second}: "
                                       "ref does not hold an object id: 'garbage'"]
    doc = json.loads(cli("show", "--json", second, cwd=repo).stdout)
    assert doc == {"checkpoint_id": second, "pinned": False, "damage": [
        {"kind": "ref-unreadable", "target": f"refs/checkpoints/{second}",
         "reason": "ref does not hold an object id: 'garbage'", "paths": []}]}

    (refs / second).write_bytes((refs / first).read_bytes())  # names another checkpoint's record
    out = cli("show", second, cwd=repo)
    _damaged(out, second)
    assert f"damage: ref-unreadable refs/checkpoints/{second}: names the record of checkpoint {first}" in out.stdout

    record = (refs / first).read_text().split("\n")[0]
    (system.store_path / "objects" / record[:2] / record[2:]).unlink()
    out = cli("show", "--json", first, cwd=repo)
    _damaged(out, first)
    assert [(d["kind"], d["target"]) for d in json.loads(out.stdout)["damage"]] == [("record-missing", record)]
    assert cli("show", "standard-step9-20260101_000000", cwd=repo).returncode == 12

    gone = cli("forget", second, cwd=repo)  # delete's other name: works on the damaged one
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip() == second and not (refs / second).exists()


def _pack_holding(store: Path, oid: str) -> Path:
    from rrstore.store.pack import decode_index

    for index in (store / "packs").glob("*.idx"):
        if oid in decode_index(index.stem, index.read_bytes()):
            return index.with_suffix(".pack")
    raise AssertionError(f"{oid} is in no pack")


def test_show_of_missing_trees_and_contents_names_their_paths(repo: Path, cli: Cli) -> None:
    """The pack of the first checkpoint goes: the second still has its own root, src/ and src/app.py,
    but lib/ (unchanged, so stored by the first) and README.md are lost, at their paths."""
    system = RollbackRecoverySystem(root=repo)
    first = system.checkpoint("standard", 1, "build")
    write(repo, "src/app.py", "print(2)\n")
    second = system.checkpoint("standard", 2, "test").checkpoint_id
    store = system.store_path
    readme, lib = (_flat(system, first.record.state_hash)[p] for p in ("README.md", "lib"))
    pack = _pack_holding(store, lib.oid)
    pack.unlink()  # its index remains: a lookup still finds the objects, a read would not
    out = cli("show", second, cwd=repo)
    _damaged(out, second)
    damage = [line for line in out.stdout.splitlines() if line.startswith("damage: ")]
    gone = f"pack {pack.stem} is missing (its index remains)"
    assert damage == [f"damage: object-missing {readme.oid} at README.md: {gone}",
                      f"damage: tree-missing {lib.oid} at lib: {gone}"]

    pack.with_suffix(".idx").unlink()  # the index too: now nothing names them
    for merged in (store / "index" / "packs").glob("*.midx"):
        merged.unlink()
    out = cli("show", second, cwd=repo)
    _damaged(out, second)
    assert [line for line in out.stdout.splitlines() if line.startswith("damage: ")] == [
        f"damage: object-missing {readme.oid} at README.md: not in the store",
        f"damage: tree-missing {lib.oid} at lib: not in the store"]
    assert "state_hash: " in out.stdout and "pinned: False" in out.stdout  # the record is shown too
    doc = json.loads(cli("show", "--json", second, cwd=repo).stdout)
    assert {(d["kind"], tuple(d["paths"])) for d in doc["damage"]} == {("object-missing", ("README.md",)),
                                                                       ("tree-missing", ("lib",))}
    assert doc["state_hash"] == system.show(second).state_hash


def test_show_read_data_finds_a_corrupt_content(repo: Path, cli: Cli) -> None:
    """A loose copy that does not hash to its name is what every reader gets: only ``--read-data``
    reads contents, and then names the file."""
    import zstandard

    system = RollbackRecoverySystem(root=repo)
    checkpoint_id = system.checkpoint("standard", 1, "build").checkpoint_id
    entry = _flat(system, system.show(checkpoint_id).state_hash)["lib/deep/more.py"]
    loose = system.store_path / "objects" / entry.oid[:2] / entry.oid[2:]
    loose.parent.mkdir(exist_ok=True)
    loose.write_bytes(zstandard.ZstdCompressor().compress(b"y = 3\n"))

    assert cli("show", checkpoint_id, cwd=repo).returncode == 0  # contents are only looked up
    out = cli("show", "--read-data", "--json", checkpoint_id, cwd=repo)
    _damaged(out, checkpoint_id)
    [damage] = json.loads(out.stdout)["damage"]
    assert damage["kind"] == "object-corrupt" and damage["target"] == entry.oid
    assert damage["paths"] == ["lib/deep/more.py"]


def test_forget_is_delete_and_help_says_so(repo: Path, cli: Cli) -> None:
    import click
    from rrstore.cli.main import cli as group

    ctx = click.Context(group)
    assert group.get_command(ctx, "forget") is group.get_command(ctx, "delete")
    helped = cli("--help", cwd=repo).stdout
    assert any(line.split() == ["forget", "Alias", "of", "delete."] for line in helped.splitlines())
    system = RollbackRecoverySystem(root=repo)
    checkpoint_id = system.checkpoint("standard", 1, "build").checkpoint_id
    system.pin(checkpoint_id)
    assert cli("forget", checkpoint_id, cwd=repo).returncode == 2  # pinned: refused, as delete does
    assert cli("forget", "--force", checkpoint_id, cwd=repo).returncode == 0
    assert system.list().checkpoints == []


def _flat(system: RollbackRecoverySystem, root: str) -> dict[str, Entry]:
    return flatten(system.open_store().objects, root)


def test_list_remote_v_shows_the_remotes_pins(repo: Path, cli: Cli, s3_remote: str, seaweedfs: object,
                                             s3_env: dict[str, str]) -> None:
    import os

    system = RollbackRecoverySystem(root=repo)
    kept = system.checkpoint("standard", 1, "build").checkpoint_id
    write(repo, "src/app.py", "print(2)\n")
    other = system.checkpoint("standard", 2, "test").checkpoint_id
    remote = ("--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint)  # type: ignore[attr-defined]
    env = {**os.environ, **s3_env}
    assert cli("push", *remote, cwd=repo, env=env).returncode == 0
    assert cli("pin", kept, *remote, cwd=repo, env=env).returncode == 0
    table = cli("list", "-v", *remote, cwd=repo, env=env)
    assert table.returncode == 0, table.stderr
    assert _row(table.stdout, kept)[4] == "yes" and _row(table.stdout, other)[4] == "-"
    listed = {r["checkpoint_id"]: r["pinned"] for r in json.loads(cli("list", "--json", *remote, cwd=repo,
                                                                      env=env).stdout)}
    assert listed == {kept: True, other: False}
    assert "pinned: False" in cli("show", kept, cwd=repo).stdout  # pinned there, not in this store
