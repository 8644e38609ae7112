"""Trees: canonical, deterministic directory objects; anything malformed is a CorruptObject."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import blake3
import pytest

from rrstore.backends import LocalBackend
from rrstore.errors import CorruptObject
from rrstore.store.objects import ObjectStore, hash_bytes
from rrstore.tree import (
    DIR,
    FILE,
    SYMLINK,
    Entry,
    decode_tree,
    encode_tree,
    flatten,
    flatten_except,
    read_tree,
    tree_oid,
    valid_name,
    walk,
)

A = "a" * 64
B = "b" * 64
C = "c" * 64
BAD_OID = "0" * 64


def entries() -> list[Entry]:
    return [
        Entry("zeta.txt", FILE, A, 5, False),
        Entry("run.sh", FILE, B, 12, True),
        Entry("src", DIR, C),
        Entry("link", SYMLINK, target="../outside/target"),
        Entry("big.bin", FILE, A, 10_000_000, False, chunks=(B, C)),
        Entry("été ☃.md", FILE, B, 0, False),
        Entry("with space\nand newline", FILE, C, 1, False),
    ]


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    return ObjectStore(LocalBackend(tmp_path / "store"))


def test_golden_encoding() -> None:
    """The exact bytes are the format: changing them changes every state hash ever recorded."""
    data = encode_tree([Entry("b", DIR, C), Entry("a", FILE, A, 3, True), Entry("l", SYMLINK, target="a")])
    expected = ('{"entries":[{"exec":true,"hash":"' + A + '","name":"a","size":3,"type":"file"},'
                '{"name":"b","tree":"' + C + '","type":"dir"},'
                '{"name":"l","target":"a","type":"symlink"}],"format":"rrstore-tree-1"}').encode()
    assert data == expected
    assert tree_oid([Entry("b", DIR, C), Entry("a", FILE, A, 3, True), Entry("l", SYMLINK, target="a")]) == (
        blake3.blake3(expected).hexdigest(), expected)


def test_encoding_is_ascii_with_unicode_escapes() -> None:
    data = encode_tree([Entry("été ☃\n", FILE, A, 1, False)])
    assert data.isascii()
    assert b'"name":"\\u00e9t\\u00e9 \\u2603\\n"' in data


@pytest.mark.parametrize("seed", range(6))
def test_any_order_gives_the_same_bytes_and_oid(seed: int) -> None:
    base = entries()
    reference = tree_oid(base)
    shuffled = list(base)
    random.Random(seed).shuffle(shuffled)
    assert tree_oid(shuffled) == reference
    assert tree_oid(list(reversed(base))) == reference


def test_entries_are_sorted_by_utf8_bytes_of_the_name() -> None:
    names = ["b", "B", "a.txt", "a", "a-b", "a_b", "é", "z", "\U0001f600", "\uffee", "10", "9"]
    data = encode_tree([Entry(n, FILE, A, 1, False) for n in names])
    encoded_names = [e["name"] for e in json.loads(data)["entries"]]
    assert encoded_names == sorted(names, key=lambda n: n.encode("utf-8"))
    assert encoded_names[:4] == ["10", "9", "B", "a"]


def test_round_trip_decode() -> None:
    original = entries()
    oid, data = tree_oid(original)
    decoded = decode_tree(oid, data)
    assert decoded == sorted(original, key=lambda e: e.name.encode())
    assert encode_tree(decoded) == data


def test_empty_tree_round_trips() -> None:
    oid, data = tree_oid([])
    assert decode_tree(oid, data) == []
    assert oid == hash_bytes(b'{"entries":[],"format":"rrstore-tree-1"}')


def test_content_matters_to_the_oid() -> None:
    base = tree_oid([Entry("f", FILE, A, 1, False)])[0]
    assert tree_oid([Entry("f", FILE, A, 1, True)])[0] != base
    assert tree_oid([Entry("f", FILE, B, 1, False)])[0] != base
    assert tree_oid([Entry("g", FILE, A, 1, False)])[0] != base
    assert tree_oid([Entry("f", SYMLINK, target="x")])[0] != tree_oid([Entry("f", SYMLINK, target="y")])[0]
    assert tree_oid([Entry("f", DIR, A)])[0] != base


def test_stored_tree_reads_back_and_walks(objects: ObjectStore) -> None:
    sub_oid, sub_data = tree_oid([Entry("inner.txt", FILE, A, 2, False), Entry("deeper", DIR, tree_oid([])[0])])
    objects.put(tree_oid([])[1])
    objects.put(sub_data)
    root_oid, root_data = tree_oid([Entry("src", DIR, sub_oid), Entry("top.txt", FILE, B, 3, True)])
    objects.put(root_data)
    assert read_tree(objects, root_oid) == [Entry("src", DIR, sub_oid), Entry("top.txt", FILE, B, 3, True)]
    paths = [path for path, _ in walk(objects, root_oid)]
    assert paths == ["src", "src/deeper", "src/inner.txt", "top.txt"]
    flat = flatten(objects, root_oid)
    assert flat["src/inner.txt"] == Entry("inner.txt", FILE, A, 2, False)
    assert flat["src/deeper"].kind == DIR


def file_entry(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"name": "f", "type": "file", "hash": A, "size": 1, "exec": False}
    raw.update(overrides)
    return raw


def tree_doc(*raw_entries: object) -> bytes:
    return json.dumps({"format": "rrstore-tree-1", "entries": list(raw_entries)}).encode()


def test_a_well_formed_hand_written_tree_decodes() -> None:
    """Sanity check for the malformed cases below: the same shape with good values is accepted."""
    data = tree_doc(file_entry(), {"name": "d", "type": "dir", "tree": B},
                    {"name": "l", "type": "symlink", "target": "f"})
    assert [e.name for e in decode_tree(BAD_OID, data)] == ["f", "d", "l"]


MALFORMED = {
    "not json": b"{not json",
    "truncated json": tree_doc(file_entry())[:-5],
    "invalid utf-8": b'{"format":"rrstore-tree-1","entries":[{"name":"\xff\xfe"}]}',
    "json list": b"[]",
    "json string": b'"tree"',
    "empty": b"",
    "wrong format": json.dumps({"format": "rrstore-tree-0", "entries": []}).encode(),
    "no format": json.dumps({"entries": []}).encode(),
    "entries not a list": json.dumps({"format": "rrstore-tree-1", "entries": {}}).encode(),
    "entry not an object": tree_doc("f"),
    "dotdot name": tree_doc(file_entry(name="..")),
    "dot name": tree_doc(file_entry(name=".")),
    "empty name": tree_doc(file_entry(name="")),
    "slash in name": tree_doc(file_entry(name="a/b")),
    "leading slash": tree_doc(file_entry(name="/etc")),
    "traversal name": tree_doc(file_entry(name="../../etc/passwd")),
    "nul in name": tree_doc(file_entry(name="a\0b")),
    "name not a string": tree_doc(file_entry(name=7)),
    "duplicate names": tree_doc(file_entry(), file_entry(hash=B)),
    "duplicate file and dir": tree_doc(file_entry(), {"name": "f", "type": "dir", "tree": B}),
    "short hash": tree_doc(file_entry(hash=A[:-1])),
    "long hash": tree_doc(file_entry(hash=A + "a")),
    "uppercase hash": tree_doc(file_entry(hash=A.upper())),
    "non-hex hash": tree_doc(file_entry(hash="g" * 64)),
    "missing hash": tree_doc({"name": "f", "type": "file", "size": 1, "exec": False}),
    "numeric hash": tree_doc(file_entry(hash=123)),
    "null hash": tree_doc(file_entry(hash=None)),
    "list hash": tree_doc(file_entry(hash=list(A))),
    "bad chunk oid": tree_doc(file_entry(chunks=[B, "xyz"])),
    "chunks not a list": tree_doc(file_entry(chunks=B)),
    "negative size": tree_doc(file_entry(size=-1)),
    "string size": tree_doc(file_entry(size="1")),
    "boolean size": tree_doc(file_entry(size=True)),
    "float size": tree_doc(file_entry(size=1.0)),
    "exec not bool": tree_doc(file_entry(exec=1)),
    "bad dir oid": tree_doc({"name": "d", "type": "dir", "tree": "nope"}),
    "dir oid not a string": tree_doc({"name": "d", "type": "dir", "tree": 1}),
    "empty symlink target": tree_doc({"name": "l", "type": "symlink", "target": ""}),
    "symlink target not a string": tree_doc({"name": "l", "type": "symlink", "target": None}),
    "unknown type": tree_doc({"name": "x", "type": "fifo"}),
    "deeply nested json": b'{"format":"rrstore-tree-1","entries":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tree_raises_corrupt_object(data: bytes) -> None:
    oid = hash_bytes(data)
    with pytest.raises(CorruptObject) as info:
        decode_tree(oid, data)
    assert info.value.oid == oid
    assert oid in str(info.value)


def test_read_tree_of_a_stored_non_tree_raises_corrupt_object(objects: ObjectStore) -> None:
    oid = objects.put(b"just a file, not a tree\n").oid
    with pytest.raises(CorruptObject) as info:
        read_tree(objects, oid)
    assert info.value.oid == oid


def test_reachable_walks_a_tree_whose_bytes_were_first_seen_as_a_file(tmp_path: Path) -> None:
    """A file holding exactly a directory's tree encoding is the same object; the walk must still descend."""
    from rrstore import RollbackRecoverySystem
    from rrstore.tree import Reach, reachable

    root = tmp_path / "p"
    (root / "b" / "c").mkdir(parents=True)
    (root / "b" / "c" / "deep.txt").write_text("deep\n")
    system = RollbackRecoverySystem(root=root)
    first = system.checkpoint("standard", 1, "first").record
    objects = system.open_store().objects
    b_tree = flatten(objects, first.state_hash)["b"].oid
    (root / "a.txt").write_bytes(objects.get(b_tree))  # sorts before b/, so it is seen first
    second = system.checkpoint("standard", 2, "second").record
    deep = flatten(objects, second.state_hash)["b/c/deep.txt"].oid
    assert deep in set(reachable(objects, second.state_hash, Reach()))


# --- names that are never written (docs/store-format.md) --------------------------------------------------


REFUSED = [".git", ".GIT", ".Git", ".gIt", ".git.", ".git ", ".git. .", "GIT~1", "git~1", ".g\u200cit", "\ufeff.git",
           ".git::$INDEX_ALLOCATION", ".Git:stream",
           ".checkpoints", ".CHECKPOINTS", ".Checkpoints", ".chec\u212apoints", "", ".", "..", "a/b", "nul\0"]
ACCEPTED = [".gitignore", ".github", ".gitkeep", "git", "..git", ".git~1", ".checkpoints2", "checkpoints",
            "x.git", "été", "\u200c", "...", "a b", ".gitx:y", ":.git"]


@pytest.mark.parametrize("name", REFUSED)
def test_never_written_refuses_reserved_and_structural_names(name: str) -> None:
    from rrstore.tree import never_written

    assert never_written(name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_never_written_accepts_look_alikes(name: str) -> None:
    from rrstore.tree import never_written

    assert never_written(name) == ""


def test_the_default_store_name_is_reserved() -> None:
    from rrstore.config import Settings
    from rrstore.tree import never_written

    assert "store" in never_written(Settings().store)


def test_the_fast_path_scan_agrees_with_the_per_name_rule() -> None:
    """``paths_never_written`` (one pass over all paths) finds exactly what checking each name finds."""
    from rrstore.tree import never_written, paths_never_written

    rng = random.Random(8)
    parts = [n for n in REFUSED + ACCEPTED if n and "/" not in n and "\0" not in n and n not in (".", "..")]
    parts += ["src", "a", "pkg", ".gi", "it", ".checkpoint"]
    for _ in range(300):
        paths = ["/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6))]
        expected = [p for p in paths if any(never_written(n) for n in p.split("/"))]
        assert paths_never_written(paths) == expected, paths


def test_check_paths_refuses_reserved_names_and_the_store_path_in_any_case() -> None:
    from rrstore.errors import UnsafeTree
    from rrstore.tree import check_paths

    check_paths("c", ["src", "src/a.py", ".gitignore", "store-dir2", "var/cp2"], ["var/cp"])
    for paths, store in ([["src", ".git", ".git/hooks"], []], [["sub", "sub/.GIT"], []],
                         [["a", "a/.checkpoints"], []], [["var", "var/cp", "var/cp/config.json"], ["var/cp"]],
                         [["Var", "Var/CP"], ["var/cp"]]):
        with pytest.raises(UnsafeTree) as caught:
            check_paths("c", paths, store)
        assert caught.value.path == paths[1] and caught.value.exit_code == 17


def test_tree_check_refuses_names_and_links_leading_out() -> None:
    from rrstore.errors import UnsafeTree
    from rrstore.tree import TreeCheck

    check = TreeCheck()
    check.add(A, [Entry("ok", SYMLINK, target="a/b"), Entry("up", SYMLINK, target="../../x")], ("c", "sub"))
    check.add(B, [Entry("sub", DIR, A)], ("c", ""))
    check.add(C, [Entry("one", DIR, B)], ("c", ""))
    with pytest.raises(UnsafeTree, match=re.escape("path sub/up: symlink to '../../x' leads out of the tree")):
        check.check_root("c", B)   # B at the root: sub/up climbs above it
    check.check_root("c", C)       # one level deeper it stays inside
    for bad in (Entry(".Git", DIR, A), Entry("l", SYMLINK, target="/etc/passwd"),
                Entry("l", SYMLINK, target="a/../../x"), Entry(".checkpoints", FILE, A, 1)):
        with pytest.raises(UnsafeTree):
            TreeCheck().add(C, [bad], ("c", ""))


# --- restore re-checks trees, whoever wrote them -----------------------------------------------------------


def _hand_written(system: object, files: dict[str, bytes], checkpoint_id: str) -> None:
    """Write a checkpoint holding ``files`` straight into the store (no scan, no import): an old or hand-made store."""
    from rrstore.record import CheckpointRecord
    from rrstore.system import RollbackRecoverySystem

    assert isinstance(system, RollbackRecoverySystem)
    store = system.open_store()

    def build(items: dict[str, bytes]) -> str:
        found: list[Entry] = []
        groups: dict[str, dict[str, bytes]] = {}
        for path, data in items.items():
            head, _, rest = path.partition("/")
            if rest:
                groups.setdefault(head, {})[rest] = data
            else:
                store.objects.put(data, loose=True)
                found.append(Entry(head, FILE, hash_bytes(data), len(data), data.startswith(b"#!")))
        found += [Entry(name, DIR, build(sub)) for name, sub in groups.items()]
        oid, raw = tree_oid(found)
        store.objects.put(raw, oid, loose=True)
        return oid

    record = CheckpointRecord(checkpoint_id=checkpoint_id, lane="standard", step_number=1, step_name="by hand",
                              timestamp="2026-01-02T03:04:05.000000+00:00", state_hash=build(files)).encode()
    store.objects.put(record, loose=True)
    assert store.refs.create(checkpoint_id, hash_bytes(record))


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and "locks" not in p.relative_to(root).parts[:2]}


@pytest.mark.parametrize("planted", [".git/hooks/post-checkout", ".GIT/hooks/post-checkout", "sub/.git/config",
                                     ".checkpoints/config.json", "pkg/.Checkpoints/refs/checkpoints/x"])
def test_restore_refuses_a_hand_written_tree_holding_a_name_never_written(planted: str, git_project: Path,
                                                                           tmp_path: Path) -> None:
    """Restore checks every tree it reads before the undo checkpoint: one line, exit 17, nothing written
    anywhere. Before the fix the restore exited 0 and wrote the file (into ``.git/`` or the store).

    ``--path`` reads only the trees on the way to its paths (a damaged tree elsewhere must not stop
    it): a name planted in a directory it does not read is then neither checked nor written.
    """
    import subprocess
    import sys

    from conftest import GIT_ENV

    from rrstore import RollbackRecoverySystem

    system = RollbackRecoverySystem(root=git_project)
    system.checkpoint("standard", 1, "real")
    _hand_written(system, {planted: b"#!/bin/sh\ntouch /tmp/rrstore-pwned\n", "README.md": b"# demo\n"},
                  "hand-step1-20260102_030405")
    before = _files_under(git_project)   # .git/, the store and the tree
    for extra in ([], ["--dry-run"], ["--path", "README.md"]):
        out = subprocess.run([sys.executable, "-m", "rrstore", "restore", "--checkpoint-id",
                              "hand-step1-20260102_030405", *extra], cwd=git_project, capture_output=True,
                             text=True, env={**os.environ, **GIT_ENV})
        if extra[:1] == ["--path"] and planted.startswith(("sub/", "pkg/")):  # a directory --path never reads
            assert out.returncode == 0, out.stderr
            assert not (git_project / planted).exists()
            after = _files_under(git_project)
            assert after.keys() == before.keys()  # the stat cache is saved again, nothing more
            before = after
            continue
        assert out.returncode == 17, (extra, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
        assert out.stderr.startswith("rrstore: error: restore refused, nothing was changed: checkpoint hand-step1-")
        assert "is never written" in out.stderr, out.stderr
    assert _files_under(git_project) == before


def test_a_name_no_file_system_can_hold_is_refused_when_decoded() -> None:
    """JSON can carry a lone surrogate (\\ud800) that os.fsencode cannot write: restore crashed on it."""
    data = b'{"entries":[{"exec":false,"hash":"' + b"0" * 64 + b'","name":"bad\\ud800","size":0,"type":"file"}],' \
           b'"format":"rrstore-tree-1"}'
    with pytest.raises(CorruptObject):
        decode_tree("t" * 64, data)
    assert valid_name("caf\u00e9") and valid_name("raw\udcff")  # UTF-8 and surrogate-escaped bytes stay fine


def test_two_spellings_of_one_byte_name_are_refused_so_no_alias_passes_the_duplicate_check() -> None:
    """"\\udcc3\\udcbf" (surrogate-escaped bytes) and "\\u00ff" are two strings for the bytes c3 bf: a crafted
    tree holding a symlink under one and a directory under the other passed the duplicate check, and
    a dump of it let an extractor write through the link (attacker's repro). Only the spelling a scan
    makes (``os.fsdecode`` of the bytes) is a name."""
    entry = '{"exec":false,"hash":"' + "0" * 64 + '","name":"%s","size":0,"type":"file"}'
    for alias in ("\\udcc3\\udcbf", "x\\udce2\\udc82\\udcac"):
        data = ('{"entries":[' + entry % alias + '],"format":"rrstore-tree-1"}').encode()
        with pytest.raises(CorruptObject):
            decode_tree("t" * 64, data)
    assert not valid_name("\udcc3\udcbf") and valid_name("\u00ff") and valid_name("raw\udcff")


def test_a_tree_bomb_stops_every_walk_with_a_corrupt_object(objects: ObjectStore, monkeypatch) -> None:
    """40 trees, each naming the next twice, expand to 2^40 paths from a few KiB: ls -r, find, dump and
    restore ran without end and grew memory without limit (attacker's repro). Walks stop past
    MAX_ENTRIES (lowered here so the test is quick)."""
    import rrstore.tree as tree_module
    from rrstore.browse import Pattern, _Finder

    monkeypatch.setattr(tree_module, "MAX_ENTRIES", 5000)
    oid = objects.put(encode_tree([Entry("leaf", FILE, "0" * 64, 0, False)])).oid
    for _ in range(40):
        oid = objects.put(encode_tree([Entry("a", DIR, oid), Entry("b", DIR, oid)])).oid
    with pytest.raises(CorruptObject, match="expands to more than 5000 entries"):
        flatten(objects, oid)
    with pytest.raises(CorruptObject, match="expands to more than"):
        flatten_except(objects, oid, {})
    for pattern in ("leaf", "a/**/leaf"):
        with pytest.raises(CorruptObject, match="expands to more than"):
            _Finder(objects, Pattern(pattern)).below(oid)
