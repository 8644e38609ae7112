"""``rrstore diff -p`` / ``-z`` / ``--json`` on a real git repository with two real checkpoints.

The patch is judged by the tools that consume patches: the real ``git apply`` turns a restored copy of
the first checkpoint into the second's files byte for byte, and real ``git diff`` of the same two
states prints the same bytes. Names with a newline, a tab, a quote or a byte that is not UTF-8 go
through the plain output (one quoted line each), ``-z`` and ``--json`` (exact).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GIT_ENV, git, one_error_line, run_cli, tree_manifest, write
from faults import pack_damaged, pack_index

from rrstore import RollbackRecoverySystem
from rrstore.diff import quote_path
from rrstore.patch import grouped, opcodes
from rrstore.tree import flatten

NEWLINE_NAME = "two\nlines.txt"
ODD_NAME = 'tab\there "quoted".txt'
LATIN1_NAME = os.fsdecode(b"caf\xe9.txt")  # not UTF-8: a surrogate escape in Python and JSON
BIG_LINES = [f"line {i:06d} of a file large enough to be stored in chunks\n" for i in range(90_000)]


def run_bytes(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The CLI as ``run_cli`` runs it, stdout kept as bytes (a patch or ``-z`` records are not text)."""
    env = {k: v for k, v in {**os.environ, **GIT_ENV}.items() if k != "RRSTORE_DIR"}
    return subprocess.run([sys.executable, "-m", "rrstore", *args], cwd=cwd, capture_output=True, env=env,
                          timeout=120)


def checkpoint(repo: Path, step: int) -> str:
    out = run_cli("checkpoint", "--lane", "standard", "--step-number", str(step), "--step-name", f"s{step}",
                  cwd=repo)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def state_a(repo: Path) -> None:
    write(repo, "edit.txt", "".join(f"line {i}\n" for i in range(1, 21)))
    write(repo, "gone.txt", "deleted in B\n")
    write(repo, "run.sh", "#!/bin/sh\necho run\n")
    write(repo, "both.sh", "echo old\n")
    write(repo, "data.bin", b"\x89PNG\0\0binary\0" + bytes(range(256)))
    write(repo, "nonl.txt", "no newline at the end")
    write(repo, "crlf.txt", "one\r\ntwo\rstill two\r\nthree\r\n")
    write(repo, "kind", "a file in A, a symlink in B\n")
    write(repo, "big.txt", "".join(BIG_LINES))
    write(repo, ODD_NAME, "odd name\n")
    os.symlink("edit.txt", repo / "link")


def state_b(repo: Path) -> None:
    lines = [f"line {i}\n" for i in range(1, 21)]
    lines[2], lines[15] = "line three, edited\n", "line sixteen, edited\n"
    write(repo, "edit.txt", "".join(lines) + "line 21 added\n")
    os.unlink(repo / "gone.txt")
    os.chmod(repo / "run.sh", 0o755)
    write(repo, "both.sh", "echo new\n")
    os.chmod(repo / "both.sh", 0o755)
    write(repo, "data.bin", b"\x89PNG\0\0binary\0" + bytes(range(255, -1, -1)))
    write(repo, "nonl.txt", "still no newline, other words")
    write(repo, "crlf.txt", "one\r\ntwo\rstill two, edited\r\nthree\r\n")
    os.unlink(repo / "kind")
    os.symlink("nonl.txt", repo / "kind")
    write(repo, "big.txt", "".join([*BIG_LINES[:40_000], "an edit in the middle\n", *BIG_LINES[40_001:]]))
    write(repo, ODD_NAME, "odd name, edited\n")
    write(repo, NEWLINE_NAME, "a name with a newline\n")
    write(repo, LATIN1_NAME, "a latin-1 name\n")
    write(repo, "empty.txt", "")
    os.unlink(repo / "link")
    os.symlink("run.sh", repo / "link")


CHANGES = {"A": {NEWLINE_NAME, LATIN1_NAME, "empty.txt"}, "D": {"gone.txt"},
           "M": {"edit.txt", "run.sh", "both.sh", "data.bin", "nonl.txt", "crlf.txt", "kind", "big.txt",
                 ODD_NAME, "link"}}


@pytest.fixture
def states(tmp_path: Path) -> tuple[Path, str, str, dict[str, tuple[object, ...]]]:
    """A git repository checkpointed in state A, then in state B (left in B); B's manifest."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    state_a(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "A")
    a = checkpoint(repo, 1)
    state_b(repo)
    b = checkpoint(repo, 2)
    return repo, a, b, tree_manifest(repo)


States = tuple[Path, str, str, dict[str, tuple[object, ...]]]


def test_git_apply_of_the_patch_turns_a_restored_a_into_b(states: States, tmp_path: Path) -> None:
    repo, a, b, want = states
    out = run_bytes("diff", "-p", a, b, cwd=repo)
    assert out.returncode == 0, out.stderr
    patch = tmp_path / "a-to-b.patch"
    patch.write_bytes(out.stdout)
    restored = run_cli("restore", a, cwd=repo)
    assert restored.returncode == 0, restored.stderr
    assert tree_manifest(repo) != want
    data_bin_in_a = tree_manifest(repo)["data.bin"]
    # A binary file's content is not in the patch (git's own "Binary files differ" is not applicable either).
    subprocess.run(["git", "apply", "--exclude=data.bin", str(patch)], cwd=repo, check=True,
                   capture_output=True, env={**os.environ, **GIT_ENV, "HOME": str(repo)})
    got = tree_manifest(repo)
    assert got["data.bin"] == data_bin_in_a
    assert {p: e for p, e in got.items() if p != "data.bin"} == {p: e for p, e in want.items() if p != "data.bin"}


def test_the_patch_is_the_one_git_diff_prints(states: States) -> None:
    repo, a, b, _ = states
    git(repo, "add", "-A")
    for context in ("3", "0", "7"):
        ours = run_bytes("diff", "-U", context, a, b, cwd=repo)
        assert ours.returncode == 0, ours.stderr
        theirs = subprocess.run(["git", "diff", "--cached", "--no-renames", "--no-color", "--no-ext-diff",
                                 f"-U{context}"], cwd=repo, capture_output=True, check=True,
                                env={**os.environ, **GIT_ENV, "HOME": str(repo)}).stdout
        assert ours.stdout == theirs
    assert b"Binary files a/data.bin and b/data.bin differ\n" in ours.stdout


def test_the_patch_against_the_working_tree_reads_the_files(states: States) -> None:
    repo, a, b, _ = states
    between = run_bytes("diff", "-p", a, b, cwd=repo)
    against_tree = run_bytes("diff", "-p", a, cwd=repo)  # the working tree is in state B
    assert against_tree.returncode == 0, against_tree.stderr
    assert against_tree.stdout == between.stdout and between.stdout
    write(repo, "edit.txt", "only this now\n")
    assert b"+only this now\n" in run_bytes("diff", "-p", b, cwd=repo).stdout
    assert run_bytes("diff", "-p", b, b, cwd=repo).stdout == b""


def test_plain_output_gives_each_name_one_quoted_line(states: States) -> None:
    repo, a, b, _ = states
    out = run_cli("diff", a, b, cwd=repo)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == sum(len(paths) for paths in CHANGES.values())
    assert 'A "two\\nlines.txt"' in lines
    assert 'A "caf\\351.txt"' in lines
    assert 'M "tab\\there \\"quoted\\".txt"' in lines
    git(repo, "add", "-A")  # git's own quoting of the same names (its tab our space, its T a change of kind)
    theirs = git(repo, "diff", "--cached", "--no-renames", "--name-status").splitlines()
    assert sorted(lines) == sorted(line.replace("\t", " ", 1).replace("T ", "M ", 1) for line in theirs)


def test_z_records_give_back_the_exact_names(states: States) -> None:
    repo, a, b, _ = states
    out = run_bytes("diff", "-z", a, b, cwd=repo)
    assert out.returncode == 0, out.stderr
    fields = out.stdout.split(b"\0")
    assert fields[-1] == b""
    records = list(zip(fields[:-1:2], fields[1:-1:2], strict=True))
    got: dict[str, set[str]] = {}
    for status, path in records:
        got.setdefault(status.decode(), set()).add(os.fsdecode(path))
    assert got == CHANGES
    assert [os.fsdecode(p) for _, p in records] == sorted(os.fsdecode(p) for _, p in records)


def test_json_carries_the_exact_names(states: States) -> None:
    repo, a, b, _ = states
    out = run_cli("diff", a, b, "--json", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert out.stdout.isascii() and "\\udce9" in out.stdout  # the byte 0xe9 as docs/cli.md says
    doc = json.loads(out.stdout)
    assert set(doc["added"]) == CHANGES["A"] and set(doc["removed"]) == CHANGES["D"]
    assert set(doc["modified"]) == CHANGES["M"]
    assert os.fsencode(next(p for p in doc["added"] if p.startswith("caf"))) == b"caf\xe9.txt"


@pytest.mark.parametrize("args", [("-p", "--json"), ("-z", "--json"), ("-p", "-z"), ("-U", "2", "-z")])
def test_two_output_choices_are_refused(states: States, args: tuple[str, ...]) -> None:
    repo, a, b, _ = states
    line = one_error_line(run_cli("diff", *args, a, b, cwd=repo), 2)
    assert "give one of them" in line


def test_damaged_stored_content_fails_the_patch_not_the_path_list(states: States) -> None:
    repo, a, b, _ = states
    manager = RollbackRecoverySystem(root=repo).checkpoint_manager
    objects, record = manager.store.objects, manager.get(a)
    chunks = set(flatten(objects, record.state_hash)["big.txt"].chunks)
    assert len(chunks) > 2
    packs = sorted((repo / ".checkpoints" / "packs").glob("*.idx"))
    for idx in packs:  # a block holding nothing but big.txt's chunks in A, not its first chunk
        entries = pack_index(idx)
        blocks: dict[int, list[tuple[str, int, int, int, int]]] = {}
        for entry in entries:
            blocks.setdefault(entry[1], []).append(entry)
        for start, held in blocks.items():
            if all(e[0] in chunks for e in held):
                pack = idx.with_suffix(".pack")
                data = bytearray(pack.read_bytes())
                at = start + held[0][2] // 2
                data[at] ^= 0x55
                pack.write_bytes(bytes(data))
                assert pack_damaged(pack, entries, at)
                break
        else:
            continue
        break
    else:
        pytest.fail("no pack block holds only big.txt's chunks")
    assert run_cli("diff", a, b, cwd=repo).returncode == 0  # names come from the trees alone
    line = one_error_line(run_cli("diff", "-p", a, b, cwd=repo), 13)
    assert "corrupt object" in line and a in line


def test_a_file_over_the_limit_is_reported_binary(states: States, monkeypatch: pytest.MonkeyPatch) -> None:
    import rrstore.patch

    repo, a, b, _ = states
    monkeypatch.setattr(rrstore.patch, "TEXT_MAX_BYTES", 1 << 20)  # big.txt is 5 MiB
    out = b"".join(RollbackRecoverySystem(root=repo).patch(a, b).chunks())
    assert b"Binary files a/big.txt and b/big.txt differ\n" in out
    assert b"+line three, edited\n" in out


def test_mode_only_change_reads_no_content(states: States) -> None:
    repo, a, b, _ = states
    out = run_bytes("diff", "-p", a, b, cwd=repo).stdout
    assert b"diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\ndiff --git" in out


def test_quote_path_quotes_what_could_forge_a_line_or_a_control() -> None:
    assert quote_path("plain name.txt") == "plain name.txt"
    assert quote_path("a\nb") == '"a\\nb"'
    assert quote_path("\x1b[31m") == '"\\033[31m"'
    assert quote_path("é") == '"\\303\\251"'
    assert quote_path("\x7f") == '"\\177"'


def test_hunks_rebuild_the_new_lines_for_random_edits() -> None:
    """The hunk grouping over trimmed opcodes (patch.opcodes/grouped): applying the hunks' new sides
    over the old lines gives the new lines, for every context size, with no hunk for equal content."""
    rng = random.Random(13)
    for _ in range(2000):
        before = [bytes([rng.choice(b"abcde")]) for _ in range(rng.randrange(30))]
        after = list(before)
        for _ in range(rng.randrange(5)):
            at = rng.randrange(len(after) + 1)
            if rng.random() < 0.4 or at == len(after):
                after.insert(at, b"x")
            elif rng.random() < 0.5:
                del after[at]
            else:
                after[at] = b"y"
        context = rng.randrange(4)
        groups = list(grouped(opcodes(before, after), context))
        rebuilt, done = [], 0
        for group in groups:
            rebuilt += before[done:group[0][1]]
            rebuilt += [line for _, _, _, j1, j2 in group for line in after[j1:j2]]
            done = group[-1][2]
        assert rebuilt + before[done:] == after
        assert (groups == []) == (before == after)
