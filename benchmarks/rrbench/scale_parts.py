"""The local parts of the scaling benchmark: checkpoints (20 vs 2,000), files (10k, 200k), bigfile (4 GB), churn.

Each part prepares its trees under the run's work directory, times rrstore's
CLI (medians; peak RSS is the maximum of the runs) beside a peer, and returns
a ``Part`` whose rows carry the issue's targets.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from . import measure, trees
from .bench import log, refresh_index
from .scale_common import (
    Context,
    Figure,
    Part,
    Restic,
    Row,
    checkpoint_id,
    count_files,
    fresh,
    git,
    git_env,
    remove,
    restic_available,
    rss_row,
    time_row,
    timed,
)
from .scale_helper import touch_step

CKPT_SPEC = trees.GeneratedSpec(small_files=300, binaries=4, binary_min=32 << 10, binary_max=256 << 10,
                                large_files=0, large_size=0, seed=11)


# --- the small git repository the checkpoint-count and remote parts share ------------------------

def commit_all(tree: Path) -> None:
    """Make ``tree`` a git repository whose HEAD holds every file (rrstore's scope is git's)."""
    if not (tree / ".git").exists():
        git(tree, "init", "-q")
        git(tree, "config", "gc.auto", "0")
    if git(tree, "status", "--porcelain", "--ignored"):
        git(tree, "add", "-A", "-f")
        git(tree, "commit", "-q", "--allow-empty", "-m", "benchmark tree")


def ckpt_tree(ctx: Context) -> Path:
    tree = ctx.work / "trees" / "ckpt"
    stamp = ctx.work / "trees" / "ckpt.key"
    if not (tree.is_dir() and stamp.exists() and stamp.read_text().strip() == CKPT_SPEC.key):
        remove(tree)
        trees.generate(tree, CKPT_SPEC)
        touch_step(tree, 0)
        commit_all(tree)
        stamp.write_text(CKPT_SPEC.key + "\n")
    return tree


def template_store(ctx: Context, count: int) -> Path:
    """A store of ``count`` checkpoints of the ckpt tree, one file changed each time (built once a run)."""
    if count in ctx.templates:
        return ctx.templates[count]
    tree = ckpt_tree(ctx)
    store = ctx.work / "templates" / f"ckpt-{count}"
    remove(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    log(f"building a store of {count} checkpoints (in-process, through rrstore's Python API)")
    start = time.perf_counter()
    proc = measure.run(ctx.helper("build", str(tree), str(store), "1", str(count)), env=ctx.env(), check=False)
    if not proc.ok:
        log(f"  the Python API failed ({proc.stderr.strip()[-300:]}); building through the CLI instead")
        remove(store)
        for step in range(1, count + 1):
            touch_step(tree, step)
            measure.run(ctx.cli(store, tree, "checkpoint", "--lane", "standard", "--step-number", str(step),
                                "--step-name", f"step{step}"), env=ctx.env())
    build_s = time.perf_counter() - start
    ctx.build_s[count] = build_s
    log(f"  built in {build_s:.0f} s")
    ctx.templates[count] = store
    return store


def copy_store(template: Path, dest: Path) -> Path:
    remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, dest, symlinks=True)
    return dest


# --- checkpoints: the same commands at 20 and at 2,000 checkpoints ----------------------------------

CKPT_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("list", ("list",)),
    ("list --json", ("list", "--json")),
    ("show latest", ("show", "latest")),
    ("status", ("status",)),
    ("gc --dry-run", ("gc", "--dry-run")),
)


def part_checkpoints(ctx: Context) -> Part:
    few, many = ctx.sizes.few_checkpoints, ctx.sizes.many_checkpoints
    part = Part("checkpoints", f"The same commands at {few:,} and at {many:,} checkpoints")
    tree = ckpt_tree(ctx)
    stores = {n: copy_store(template_store(ctx, n), ctx.work / "stores" / f"ckpt-{n}") for n in (few, many)}
    runs = ctx.sizes.runs_short
    env = ctx.env()
    step = [100_000]

    def change_one_file(_: int) -> None:
        step[0] += 1
        touch_step(tree, step[0])

    for label, args in (*CKPT_COMMANDS, ("checkpoint after a one-file change", ())):
        figs: dict[int, Figure] = {}
        for n in (few, many):
            # one untimed run first: the page cache and the stat cache are warm for both counts alike
            if args:
                measure.run(ctx.cli(stores[n], tree, *args), env=env)
                figs[n] = timed(ctx.cli(stores[n], tree, *args), runs, env=env, sync=False)
            else:
                def argv(_: int, n: int = n) -> list[str]:
                    return ctx.cli(stores[n], tree, "checkpoint", "--lane", "standard", "--step-number",
                                   str(step[0]), "--step-name", "one-file")
                change_one_file(0)
                measure.run(argv(0), env=env)
                figs[n] = timed(argv, runs, env=env, before=change_one_file, sync=False)
        part.add(time_row(f"`{label}`", figs[many], figs[few], f"at {few:,}:", ctx.basis, 1.2,
                          f"≤ 1.2× its time at {few:,}"))
    part.rows[0].data["note"] = f"rrstore column at {many:,} checkpoints, peer column at {few:,}"
    part.notes.append(f"rrstore column: at {many:,} checkpoints; peer column: the same command on a store of "
                      f"{few:,} checkpoints of the same tree ({CKPT_SPEC.small_files} small files, "
                      f"{CKPT_SPEC.binaries} binaries, a git repository); {runs} runs each after one untimed run.")
    part.notes.append(build_note(ctx, (few, many)))
    for n in (few, many):
        remove(stores[n])
    return part


def build_note(ctx: Context, counts: tuple[int, ...]) -> str:
    built = [f"{n:,} in {ctx.build_s[n]:.0f} s" for n in counts if n in ctx.build_s]
    return ("Stores built in-process (one checkpoint after each one-file change, Python API), wall time: "
            + (", ".join(built) if built else "built earlier in this run") + ".")


# --- files: 10k and 200k small files -------------------------------------------------------------

def small_files_tree(ctx: Context, count: int) -> tuple[Path, Path]:
    """``count`` small text files (dirs of 100) in a plain directory, and a separate git dir over it."""
    tree = ctx.work / "trees" / f"files-{count}"
    gitdir = ctx.work / "trees" / f"files-{count}.git"
    stamp = ctx.work / "trees" / f"files-{count}.key"
    key = f"files-v1-{count}"
    if not (tree.is_dir() and gitdir.is_dir() and stamp.exists() and stamp.read_text().strip() == key):
        remove(tree, gitdir)
        log(f"generating {count:,} small files")
        rng = random.Random(count)
        pool = [b" ".join(rng.choice(trees._WORDS).encode() for _ in range(rng.randint(2, 12))) + b"\n"
                for _ in range(4000)]
        for i in range(count):
            folder = tree / f"top{i // 10_000:02d}" / f"d{(i // 100) % 100:02d}"
            if i % 100 == 0:
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i % 100:02d}.txt").write_bytes(b"".join(rng.choices(pool, k=rng.randint(2, 60))))
        log(f"  git add of {count:,} files (separate git dir, untimed)")
        env = git_env(gitdir, tree)
        for args in (["init", "-q"], ["config", "gc.auto", "0"], ["config", "core.fsmonitor", "false"],
                     ["add", "-A"], ["commit", "-q", "-m", "files"]):
            measure.quiet(["git", *args], cwd=tree, env=env)
        stamp.write_text(key + "\n")
    return tree, gitdir


def part_files(ctx: Context) -> Part:
    sizes = (ctx.sizes.small_files, ctx.sizes.many_files)
    part = Part("files", f"{sizes[0]:,} and {sizes[1]:,} small files")
    for count in sizes:
        files_case(ctx, part, count, big=count == sizes[1])
    part.notes.append("Plain directories (rrstore walks them); `git status --porcelain` runs over a separate git "
                      "dir holding every file; restic restores into an empty directory, rrstore into the wiped "
                      f"tree. Cold and restore: {ctx.sizes.runs_huge} run(s) at {sizes[1]:,} files, "
                      f"{ctx.sizes.runs_long} at {sizes[0]:,}.")
    return part


def files_case(ctx: Context, part: Part, count: int, big: bool) -> None:
    tree, gitdir = small_files_tree(ctx, count)
    base = fresh(ctx.work / "stores" / f"files-{count}")
    store = base / "rr"
    runs_cold = ctx.sizes.runs_huge if big else ctx.sizes.runs_long
    runs_quick = ctx.sizes.runs_long if big else ctx.sizes.runs_short
    env = ctx.env()
    name = f"{count:,} files"
    log(f"files: {name}")
    ckpt = ctx.cli(store, tree, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "c")
    cold = timed(ckpt, runs_cold, env=env, before=lambda _: remove(store))
    ref = checkpoint_id_text(cold)
    unchanged = timed(ckpt, runs_quick, env=env)
    genv = git_env(gitdir, tree)
    measure.quiet(["git", "update-index", "-q", "--refresh"], cwd=tree, env=genv)
    git_status = timed(["git", "status", "--porcelain"], runs_quick, env=genv, cwd=tree)
    restic_cold = restic_restore = None
    if restic_available():
        restic = Restic(tree, base / "restic")
        restic_cold = restic.backup(runs_cold)
        restic_restore = restic.restore(runs_cold, base / "restic-target")
        remove(base / "restic-target")

    def wipe(_: int) -> None:
        remove(tree)
        tree.mkdir()

    def check(_: int, m: measure.Measurement) -> None:
        found = count_files(tree, ())
        if found != count:
            part.notes.append(f"{name}: rrstore's full restore left {found:,} files, not {count:,}")

    restore = timed(ctx.cli(store, tree, "restore", "--checkpoint-id", ref), runs_cold, env=env, before=wipe,
                    after=check)
    part.add(time_row(f"{name}: cold checkpoint", cold, restic_cold, "restic backup", ctx.basis, None))
    part.add(rss_row(f"{name}: cold checkpoint", cold, restic_cold))
    part.add(time_row(f"{name}: unchanged re-checkpoint", unchanged, git_status, "`git status`", ctx.basis, 4))
    part.add(time_row(f"{name}: full restore (wiped tree)", restore, restic_restore, "restic restore",
                      ctx.basis, None))
    part.add(rss_row(f"{name}: full restore", restore, restic_restore))
    remove(base)
    if big and not ctx.keep:
        remove(tree, gitdir, ctx.work / "trees" / f"files-{count}.key")


# --- bigfile: one 4 GB file, two 1 GB files, restore of one 1.5 GB file ----------------------------

LOW_ENTROPY = bytes.maketrans(bytes(range(256)), (b"etaoin shrdlu\nc{" * 16))


def write_big_file(path: Path, size: int, seed: int) -> None:
    """Alternate 1 MiB blocks: random, then low-entropy text-like bytes (each block unique, no dedup)."""
    rng = random.Random(seed)
    block = 1 << 20
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        written = 0
        n = 0
        while written < size:
            length = min(block, size - written)
            data = rng.randbytes(length)
            fh.write(data if n % 2 == 0 else data.translate(LOW_ENTROPY))
            written += length
            n += 1


def big_tree(ctx: Context, name: str, files: dict[str, int], seed: int) -> Path:
    tree = ctx.work / "trees" / name
    stamp = ctx.work / "trees" / f"{name}.key"
    key = f"big-v1-{sorted(files.items())}-{seed}"
    if not (tree.is_dir() and stamp.exists() and stamp.read_text().strip() == key):
        remove(tree)
        for i, (fname, size) in enumerate(sorted(files.items())):
            log(f"writing {tree / fname} ({size / 1e9:.2f} GB)")
            write_big_file(tree / fname, size, seed + i)
        stamp.write_text(key + "\n")
    return tree


def drop_tree(ctx: Context, name: str) -> None:
    if not ctx.keep:
        remove(ctx.work / "trees" / name, ctx.work / "trees" / f"{name}.key")


def size_text(size: int) -> str:
    """GiB as the issue counts them ("one 4 GB file" = 4 GiB)."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def part_bigfile(ctx: Context) -> Part:
    s = ctx.sizes
    part = Part("bigfile", f"One {size_text(s.big_file)} file; two {size_text(s.two_files)} files; "
                           f"restore of one {size_text(s.restore_file)} file")
    env = ctx.env()
    base = fresh(ctx.work / "stores" / "bigfile")
    store = base / "rr"

    def ckpt(tree: Path) -> list[str]:
        return ctx.cli(store, tree, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "big")

    # one big file: rrstore against zstd -3 -T0 (throughput) and restic (RSS)
    tree = big_tree(ctx, "big-one", {"big.bin": s.big_file}, 41)
    path = tree / "big.bin"
    zstd = None
    if shutil.which("zstd"):
        measure.quiet(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(path)])  # into the page cache
        zstd = timed(["sh", "-c", 'zstd -q -3 -T0 -c "$1" > /dev/null', "sh", str(path)], s.runs_long)
    rr = timed(ckpt(tree), s.runs_long, env=env, before=lambda _: remove(store))
    remove(store)
    restic = restic_backup(tree, base, s.runs_huge)
    mb = s.big_file / 1e6
    if zstd is not None:
        part.add(Row(f"{size_text(s.big_file)} file: cold checkpoint speed (wall)",
                     f"{mb / rr.wall_s:.0f} MB/s ({rr.wall_s:.1f} s wall, {rr.cpu_s:.1f} s CPU)",
                     f"`zstd -3 -T0` {mb / zstd.wall_s:.0f} MB/s ({zstd.wall_s:.1f} s wall, {zstd.cpu_s:.1f} s CPU)",
                     zstd.wall_s / rr.wall_s, "≥ 0.9× zstd's speed", 0.9, higher_is_better=True,
                     data={"rrstore": rr.as_json(), "peer": zstd.as_json()}))
    else:
        part.notes.append("zstd not found: no throughput comparison")
    part.add(time_row(f"{size_text(s.big_file)} file: cold checkpoint", rr, restic, "restic backup", ctx.basis,
                      None))
    part.add(rss_row(f"{size_text(s.big_file)} file: cold checkpoint", rr, restic))
    drop_tree(ctx, "big-one")

    # two 1 GB files: peak RSS under 150 MB (and beside restic's)
    tree = big_tree(ctx, "big-two", {"a.bin": s.two_files, "b.bin": s.two_files}, 51)
    rr = timed(ckpt(tree), s.runs_huge, env=env, before=lambda _: remove(store))
    remove(store)
    restic = restic_backup(tree, base, s.runs_huge)
    label = f"two {size_text(s.two_files)} files: cold checkpoint"
    part.add(Row(f"{label}: peak RSS (absolute)", f"{rr.rss_mib:.0f} MB", "-", rr.rss_mib / 150, "≤ 150 MB", 1.0,
                 data={"rrstore": rr.as_json()}))
    part.add(rss_row(label, rr, restic))
    drop_tree(ctx, "big-two")

    # restore of one 1.5 GB file (deleted from the tree), rrstore against restic
    tree = big_tree(ctx, "big-restore", {"f.bin": s.restore_file}, 61)
    m = measure.run(ckpt(tree), env=env)
    ref = checkpoint_id(m)
    restic_restore = None
    if restic_available():
        peer = Restic(tree, base / "restic")
        peer.init()
        measure.run(peer.backup_argv(), cwd=tree, env=peer.env)
        restic_restore = peer.restore(s.runs_huge, base / "restic-target")
        remove(peer.base, base / "restic-target")
    restore = timed(ctx.cli(store, tree, "restore", "--checkpoint-id", ref), s.runs_huge, env=env,
                    before=lambda _: remove(tree / "f.bin"))
    if not (tree / "f.bin").is_file() or (tree / "f.bin").stat().st_size != s.restore_file:
        part.notes.append("rrstore's restore did not bring back f.bin whole")
    label = f"restore of one {size_text(s.restore_file)} file"
    part.add(time_row(label, restore, restic_restore, "restic restore", ctx.basis, None))
    part.add(rss_row(label, restore, restic_restore))
    drop_tree(ctx, "big-restore")
    remove(base)
    part.notes.append("Files of alternating 1 MiB blocks, random and low-entropy (each unique); zstd reads the "
                      "file from the page cache into /dev/null; speed = size ÷ wall time, median of "
                      f"{s.runs_long}. Each rrstore checkpoint starts from no store.")
    return part


# --- churn: the standard library in a git repository ---------------------------------------------

def stdlib_tree(ctx: Context) -> tuple[Path, trees.Manifest]:
    source = trees.stdlib_dir()
    keep = trees.stdlib_filter(ctx.quick)
    tree = ctx.work / "trees" / ("stdlib-quick" if ctx.quick else "stdlib")
    expected = trees.manifest(source, skip_top=(), keep=keep)
    log(f"preparing the standard library tree: {len(expected):,} paths from {source}")
    trees.sync(source, tree, expected)
    commit_all(tree)
    refresh_index(tree)
    return tree, expected


def importtime(ctx: Context) -> dict[str, object]:
    proc = measure.run([ctx.python, "-X", "importtime", "-c", "import rrstore.cli.main"], env=ctx.env(),
                       cwd=ctx.work, check=False)
    if proc.exit_code != 0:
        raise RuntimeError(f"python -X importtime -c 'import rrstore.cli.main' failed: {proc.stderr[-300:]}")
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line.split(":", 1)[1].split("|")
        if len(fields) != 3:
            continue
        try:
            rows.append((int(fields[0]), int(fields[1]), fields[2].rstrip()))
        except ValueError:
            continue
    top = sorted(rows, key=lambda r: -r[1])[:20]
    top_self = sorted(rows, key=lambda r: -r[0])[:15]
    total = max((r[1] for r in rows), default=0)
    return {"command": "python -X importtime -c 'import rrstore.cli.main'", "modules": len(rows),
            "total_us": total,
            "top_cumulative": [{"self_us": a, "cumulative_us": b, "module": c} for a, b, c in top],
            "top_self": [{"self_us": a, "cumulative_us": b, "module": c.strip()} for a, b, c in top_self]}


def part_churn(ctx: Context) -> Part:
    s = ctx.sizes
    tree, expected = stdlib_tree(ctx)
    files = sum(1 for e in expected.values() if e[0] == "f")
    part = Part("churn", f"The standard library in a git repository ({files:,} files): recovery path and "
                         "start-up")
    base = fresh(ctx.work / "stores" / "stdlib")
    store = base / "rr"
    env = ctx.env()
    ckpt = ctx.cli(store, tree, "checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "c")
    cold = timed(ckpt, s.runs_long, env=env, before=lambda _: remove(store))
    ref0 = checkpoint_id_text(cold)
    restic = Restic(tree, base / "restic", exclude_git=True) if restic_available() else None
    restic_cold = restic.backup(s.runs_long) if restic else None
    part.add(time_row("cold checkpoint", cold, restic_cold, "restic backup", ctx.basis, None))
    part.add(rss_row("cold checkpoint", cold, restic_cold))

    unchanged = timed(ckpt, s.runs_short, env=env)
    refresh_index(tree)
    git_status = timed(["git", "status", "--porcelain"], s.runs_short, env=git_env(), cwd=tree)
    part.add(time_row("unchanged re-checkpoint", unchanged, git_status, "`git status`", ctx.basis, 4))

    paths = trees.churn_paths(expected, 0.01, 3)

    def churn(_: int) -> None:
        trees.apply_churn(tree, paths, expected, 3)

    def verify(i: int, _: measure.Measurement) -> None:
        if i == 0:
            problems = trees.compare(expected, trees.manifest(tree))
            if problems:
                part.notes.append(f"restore after churn: the tree differs: {'; '.join(problems)}")

    restore_churn = timed(ctx.cli(store, tree, "restore", "--checkpoint-id", ref0), s.runs_short, env=env,
                          before=churn, after=verify)

    def churn_git(i: int) -> None:
        refresh_index(tree)
        churn(i)

    git_checkout = timed(["git", "checkout", "-q", "-f"], s.runs_short, env=git_env(), cwd=tree, before=churn_git)
    part.add(time_row(f"restore after 1% churn ({len(paths)} files)", restore_churn, git_checkout,
                      "`git checkout -f`", ctx.basis, 5))

    restore_full = timed(ctx.cli(store, tree, "restore", "--checkpoint-id", ref0), s.runs_long, env=env,
                         before=lambda _: trees.wipe(tree))
    restic_restore = restic.restore(s.runs_long, base / "restic-target") if restic else None
    part.add(time_row("full restore (wiped tree)", restore_full, restic_restore, "restic restore", ctx.basis, None))
    part.add(rss_row("full restore", restore_full, restic_restore))
    refresh_index(tree)

    version = timed([*ctx.rrstore, "--version"], s.runs_short, env=env, sync=False)
    python = timed([ctx.python, "-c", "pass"], s.runs_short, env=env, sync=False)
    part.add(time_row("`rrstore --version`", version, python, "`python -c pass`", ctx.basis, 4))
    part.extra["importtime"] = importtime(ctx)
    remove(base)
    part.notes.append(f"Churn: a line inserted in the middle of {len(paths)} files (seed 3), restored to the "
                      "checkpoint before; `git checkout -f` restores the same edits from the tree's own HEAD. "
                      f"`python` is the interpreter rrstore runs in ({ctx.python}).")
    return part


def checkpoint_id_text(fig: Figure) -> str:
    lines = fig.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("rrstore checkpoint printed no id")
    return lines[-1].strip()


def restic_backup(tree: Path, base: Path, runs: int) -> Figure | None:
    """``restic backup`` of ``tree`` timed in a fresh repository under ``base`` (removed after);
    None when restic is not installed."""
    if not restic_available():
        return None
    peer = Restic(tree, base / "restic")
    timing = peer.backup(runs)
    remove(peer.base)
    return timing
