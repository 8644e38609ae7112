#!/usr/bin/env python3
"""Benchmark rrstore against git, restic, borg, tar | zstd and cp -a on the same trees, in one run.

    python benchmarks/run.py                 # full run (~25 min on 2 cores), results in benchmarks/results/
    python benchmarks/run.py --quick         # ~1 min smoke run on scaled-down trees
    python benchmarks/run.py --trees stdlib --runs 5 --repo ~/src/project

It installs what it needs unless told not to (--no-install): the peers from
Debian packages (``apt-get install -y restic borgbackup zstd``, skipped when
the binaries exist) and a dedicated venv under benchmarks/work/ with rrstore
installed non-editable (compiled .pyc, no editable finder) plus matplotlib.
See docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rrbench import bench, measure, report, trees
from rrbench.tools import RRStore, Tool, all_tools, base_env

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
ALL_TREES = ("generated", "stdlib", "history", "sitepackages")
PEER_PACKAGES = {"restic": "restic", "borg": "borgbackup", "zstd": "zstd", "/usr/bin/time": "time"}
SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "rrstore", "cli")
log = bench.log


# --- installing --------------------------------------------------------------------

def install_peers(packages: dict[str, str] | None = None) -> list[str]:
    """apt-get install the peers whose binaries are missing (binary -> Debian package); returns notes."""
    missing = [pkg for binary, pkg in (packages or PEER_PACKAGES).items() if not shutil.which(binary)]
    if not missing:
        return []
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        return [f"could not install {', '.join(missing)} (no apt-get or not root): those peers are skipped"]
    log(f"installing peers: apt-get install -y {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, check=False, stdout=subprocess.DEVNULL)
    proc = subprocess.run([*prefix, "apt-get", "install", "-y", "-q", *missing], env=env, check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return [f"apt-get install {' '.join(missing)} failed: {proc.stderr.strip()[-300:]}"]
    return [f"installed with apt-get: {', '.join(missing)}"]


def source_fingerprint(src: Path) -> str:
    h = hashlib.sha1()
    for part in SOURCE_PARTS:
        base = src / part
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) \
            if base.is_dir() else []
        for p in paths:
            if "__pycache__" in p.parts or p.suffix == ".pyc" or ".egg-info" in str(p):
                continue
            h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def source_description(src: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "rrstore", "cli",
                                "pyproject.toml"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError):
        return f"{src}, tree {source_fingerprint(src)}"
    return f"commit {commit}{' + uncommitted changes' if dirty else ''}, tree {source_fingerprint(src)}"


def venv_paths(work: Path) -> tuple[Path, Path]:
    venv = work / "venv"
    return venv / "bin" / "python", venv / "bin" / "rrstore"


def ensure_venv(work: Path, src: Path) -> list[str]:
    """A venv with rrstore installed non-editable from a snapshot of ``src``, plus matplotlib."""
    python, _ = venv_paths(work)
    stamp = work / "venv" / "rrstore-bench.stamp"
    fingerprint = source_fingerprint(src)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return []
    env = base_env()
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if not python.exists():
        log(f"creating venv {work / 'venv'}")
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    snapshot = work / "src"
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    for part in SOURCE_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, snapshot / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (src / part).is_file():
            shutil.copy2(src / part, snapshot / part)
    log(f"installing rrstore (non-editable) from {src} into the venv")
    pip = [str(python), "-m", "pip", "install", "-q"]

    def quiet_pip(*args: str, check: bool = True) -> None:
        proc = subprocess.run([*pip, *args], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 and check:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"run.py: pip install {' '.join(args)} failed")

    quiet_pip(f"{snapshot}[bench]")
    quiet_pip("--force-reinstall", "--no-deps", str(snapshot))
    if subprocess.run([str(python), "-c", "import matplotlib"], env=env, check=False).returncode != 0:
        quiet_pip("matplotlib>=3.7", check=False)
    stamp.write_text(fingerprint + "\n")
    return [f"rrstore installed into {work / 'venv'} from a snapshot of {src}"]


def rrstore_command(args: argparse.Namespace, notes: list[str]) -> list[str]:
    if args.rrstore_cmd:
        return shlex.split(args.rrstore_cmd)
    work = HERE / "work"
    _, script = venv_paths(work)
    if not args.no_install:
        notes += ensure_venv(work, args.rrstore_src)
        return [str(script)]
    stamp = work / "venv" / "rrstore-bench.stamp"
    if script.exists() and stamp.exists() and stamp.read_text().strip() == source_fingerprint(args.rrstore_src):
        return [str(script)]
    notes.append("rrstore ran as `python -m rrstore` of the running interpreter (--no-install and no fresh "
                 "venv): its start-up includes this interpreter's site, so timings are not representative")
    return [sys.executable, "-m", "rrstore"]


# --- the machine -----------------------------------------------------------------------

def machine_info(work: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    with contextlib.suppress(AttributeError):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    df = subprocess.run(["df", "-PT", str(work)], capture_output=True, text=True, check=False).stdout.splitlines()
    if len(df) >= 2:
        dev, fstype, size_kib = df[1].split()[:3]
        info["disk"] = {"device": dev, "fstype": fstype, "size_gb": round(int(size_kib) * 1024 / 1e9)}
        name = Path(dev).name
        for candidate in (name, name.rstrip("0123456789"), name.split("p")[0]):
            rot = Path(f"/sys/block/{candidate}/queue/rotational")
            if rot.exists():
                info["disk"]["rotational"] = rot.read_text().strip() == "1"
                break
    disk = info.get("disk", {})
    kind = "" if "rotational" not in disk else f" (rotational={int(disk['rotational'])})"
    info["summary"] = (f"{info.get('usable_cpus', info['nproc'])} CPUs ({info.get('cpu', '?')}), "
                       f"{info.get('memory_gib', '?')} GiB RAM, {disk.get('fstype', '?')} on "
                       f"{disk.get('device', '?')}{kind}")
    return info


# --- trees ---------------------------------------------------------------------------------

def describe(expected: trees.Manifest) -> dict[str, Any]:
    files = [e for e in expected.values() if e[0] == "f"]
    return {"files": len(files), "symlinks": sum(1 for e in expected.values() if e[0] == "l"),
            "bytes": sum(e[1] for e in files), "largest": max((e[1] for e in files), default=0)}


def _size_text(info: dict[str, Any]) -> str:
    return f"{info['files']:,} files, {info['bytes'] / 1e6:.0f} MB"


def prepare_generated(args: argparse.Namespace, root: Path) -> bench.TreeCase:
    spec = trees.SMOKE_GENERATED if args.smoke else trees.QUICK_GENERATED if args.quick else trees.FULL_GENERATED
    name = "generated-smoke" if args.smoke else "generated-quick" if args.quick else "generated"
    source = root / f"{name}.src"
    key_file = root / f"{name}.src.key"
    if not (source.is_dir() and key_file.exists() and key_file.read_text().strip() == spec.key):
        log(f"generating {name} (seed {spec.seed})")
        if source.exists():
            shutil.rmtree(source)
        trees.generate(source, spec)
        key_file.write_text(spec.key + "\n")
    expected = trees.manifest(source)
    info = describe(expected)
    case = bench.TreeCase(
        name="generated", title=f"Generated tree ({_size_text(info)})", tree=root / name, source=source,
        expected=expected, has_git=False, scenarios=bench.SCENARIOS, churn_big_threshold=1 << 20, info=info)
    if args.smoke:
        case.peer_scenarios = ("cold", "unchanged", "churn", "restore_full")
    case.info["description"] = (
        f"Seed {spec.seed}: {spec.small_files:,} small source-like text files in nested directories, "
        f"{spec.binaries} binaries of {spec.binary_min >> 10} KiB–{spec.binary_max >> 10} KiB (half random, half "
        f"compressible), {spec.large_files} files of {spec.large_size >> 20} MiB (40% random 1 MiB blocks, 60% "
        "compressible), 3 scripts and a symlink; a plain directory (rrstore walks it). The 1% churn always "
        "includes one file over 1 MiB (4 KiB overwritten in its middle); smaller files get a line inserted.")
    return case


def _git(tree: Path, *a: str) -> str:
    return measure.quiet(["git", "-C", str(tree), *a], env={**os.environ, **trees.GIT_ENV})


def commit_all(tree: Path) -> None:
    """The tree is a git repository whose HEAD holds every file (rrstore's scope is git's)."""
    if not (tree / ".git").exists():
        _git(tree, "init", "-q")
        _git(tree, "config", "gc.auto", "0")
    if _git(tree, "status", "--porcelain", "--ignored"):
        _git(tree, "add", "-A", "-f")
        _git(tree, "commit", "-q", "--allow-empty", "-m", "benchmark tree")


def prepare_real(args: argparse.Namespace, root: Path, which: str) -> bench.TreeCase:
    quick = args.quick
    if which == "stdlib":
        source = trees.stdlib_dir()
        keep = trees.stdlib_filter(quick)
    else:
        source = trees.site_packages_dir()
        keep = trees.sitepackages_filter(quick, source)
    name = f"{which}-quick" if quick else which
    expected = trees.manifest(source, skip_top=(), keep=keep)
    info = describe(expected)
    case = bench.TreeCase(name=which, title="", tree=root / name, source=source, expected=expected,
                          has_git=which == "stdlib", scenarios=bench.SCENARIOS, keep=keep, info=info)
    log(f"preparing {which}: {_size_text(info)} from {source}")
    fixed = trees.sync(source, case.tree, expected)
    if which == "stdlib":
        commit_all(case.tree)
        case.title = f"Standard library in a git repository ({_size_text(info)})"
        case.info["description"] = (
            f"{source} without site-packages, with __pycache__, copied into a git repository whose HEAD "
            "holds every file (rrstore's scope is git's; the peers exclude .git; the git peer uses its own "
            "separate git dir). The 1% churn inserts a line in the middle of each chosen file.")
    else:
        case.title = f"site-packages ({_size_text(info)})"
        case.scenarios = ("cold", "restore_full")
        case.tool_names = ("rrstore", "restic")
        case.info["description"] = f"A copy of {source} (a plain directory); rrstore against restic only."
    if fixed:
        log(f"  {fixed} paths copied")
    return case


def history_commits(repo: Path, count: int) -> list[str]:
    out = measure.quiet(["git", "-C", str(repo), "rev-list", "--first-parent", f"--max-count={count}", "HEAD"])
    return list(reversed(out.split()))


# --- main ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="scaled-down trees, 1 run: a ~1 minute smoke test")
    p.add_argument("--smoke", action="store_true", help="like --quick with an even smaller generated tree (the "
                                                        "test suite's smoke test)")
    p.add_argument("--runs", type=int, default=None, help="runs per figure, the median is reported (default 3, "
                                                          "1 with --quick)")
    p.add_argument("--trees", default=",".join(ALL_TREES), help=f"comma-separated subset of {','.join(ALL_TREES)}")
    p.add_argument("--tools", default="", help="comma-separated subset of rrstore,git,restic,borg,tar-zstd,cp-a")
    p.add_argument("--repo", type=Path, default=PROJECT, help="git repository whose history is replayed "
                                                             "(default: this repository)")
    p.add_argument("--commits", type=int, default=None, help="history length (default 20, 5 with --quick)")
    p.add_argument("--output", type=Path, default=HERE / "results", help="where results.md/.json and "
                                                                         "chart.png go")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rrstore-bench",
                   help="trees and stores (outside any git work tree; kept between runs to save set-up)")
    p.add_argument("--no-install", action="store_true", help="install nothing (no apt-get, no venv); missing "
                                                             "peers are skipped")
    p.add_argument("--rrstore-src", type=Path, default=PROJECT, help="rrstore source to install in the venv")
    p.add_argument("--rrstore-cmd", default="", help="run rrstore as this command instead (e.g. 'rrstore')")
    p.add_argument("--no-verify", action="store_true", help="do not check restored trees against the manifest")
    p.add_argument("--seed", type=int, default=3, help="seed of the 1%% churn choice")
    p.add_argument("--report-only", action="store_true", help="only redraw results.md and chart.png from the "
                                                              "results.json in --output")
    args = p.parse_args(argv)
    args.quick = args.quick or args.smoke
    args.runs = args.runs or (1 if args.quick else 3)
    args.commits = args.commits or (5 if args.quick else 20)
    args.tree_list = [t.strip() for t in args.trees.split(",") if t.strip()]
    bad = [t for t in args.tree_list if t not in ALL_TREES]
    if bad:
        p.error(f"unknown tree(s) {', '.join(bad)}; choose from {', '.join(ALL_TREES)}")
    args.rrstore_src = args.rrstore_src.resolve()
    return args


def inside_git_work_tree(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if (folder / ".git").exists():
            return folder
    return None


def render_chart(results: dict[str, Any], json_path: Path, out: Path, notes: list[str]) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python, _ = venv_paths(HERE / "work")
        if python.exists():
            proc = subprocess.run([str(python), "-m", "rrbench.chart", str(json_path), str(out)],
                                  env={**base_env(), "PYTHONPATH": str(HERE)}, capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                notes.append(f"chart not drawn: {proc.stderr.strip()[-300:]}")
        else:
            notes.append("chart not drawn: matplotlib is not installed (pip install '.[bench]')")
        return
    from rrbench import chart

    chart.render(results, out)


def write_report(results: dict[str, Any], output: Path, notes: list[str]) -> None:
    report.add_medians(results)
    results["targets"] = report.evaluate_targets(results)
    output.mkdir(parents=True, exist_ok=True)
    json_path = output / "results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render_chart(results, json_path, output / "chart.png", notes)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (output / "results.md").write_text(report.markdown(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        results = json.loads((args.output / "results.json").read_text())
        write_report(results, args.output, results["meta"]["notes"])
        return 0
    started = time.time()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    enclosing = inside_git_work_tree(work)
    if enclosing is not None:
        print(f"run.py: --workdir {work} is inside the git work tree {enclosing}; rrstore would take that "
              "repository's scope. Choose a directory outside any repository.", file=sys.stderr)
        return 2
    notes: list[str] = []
    if not args.no_install:
        notes += install_peers()
    rr = RRStore(rrstore_command(args, notes))
    if not rr.available():
        print(f"run.py: rrstore does not run as {' '.join(rr.command)}", file=sys.stderr)
        return 2
    tools: list[Tool] = []
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    for tool in all_tools(rr):
        if wanted and tool.name not in wanted:
            continue
        if tool.available():
            tools.append(tool)
        else:
            notes.append(f"{tool.name} skipped: {', '.join(tool.binaries)} not found")
    log(f"tools: {', '.join(t.name for t in tools)}; rrstore = {' '.join(rr.command)} ({rr.version()})")
    root = work / "trees"
    stores = work / "stores"
    root.mkdir(exist_ok=True)
    if stores.exists():
        shutil.rmtree(stores)
    stores.mkdir()
    results: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "quick": args.quick, "runs": args.runs, "argv": sys.argv[1:], "workdir": str(work),
        "machine": machine_info(work), "loadavg_start": os.getloadavg(),
        "rrstore": {"version": rr.version(), "command": " ".join(rr.command),
                    "source": source_description(args.rrstore_src)},
        "peers": {t.name: t.version() for t in tools if t.name != "rrstore"},
        "notes": notes,
    }, "trees": {}}

    for which in args.tree_list:
        t0 = time.perf_counter()
        if which == "history":
            repo = args.repo.resolve()
            commits = history_commits(repo, args.commits)
            work_tree = root / "history"
            if work_tree.exists():
                shutil.rmtree(work_tree)
            measure.quiet(["git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(work_tree)])
            log(f"history: {len(commits)} commits of {repo}")
            if len(commits) < args.commits:
                notes.append(f"history: {repo} has only {len(commits)} commit(s) on its first-parent line, "
                             f"not {args.commits}: all of them were replayed")
            runs = bench.run_history(work_tree, commits, tools, args.runs, stores)
            results["trees"]["history"] = {
                "kind": "history", "title": f"History: the last {len(commits)} commits of {repo.name}",
                "description": (f"{repo} ({', '.join(c[:8] for c in commits[:1])}…{commits[-1][:8]}), first-"
                                "parent line, each commit checked out in turn into one clone's work tree and "
                                "checkpointed by every tool into its own store (peers exclude .git)."),
                "commits": len(commits), "repo": str(repo), "scenarios": ["history"],
                "tool_order": [t.name for t in tools], "runs_done": args.runs, "runs": runs}
        else:
            case = prepare_generated(args, root) if which == "generated" else prepare_real(args, root, which)
            case_tools = [t for t in tools if case.tool_names is None or t.name in case.tool_names]
            runs = bench.run_case(case, case_tools, args.runs, stores, args.seed, verify=not args.no_verify,
                                  metrics=not args.smoke)
            results["trees"][which] = {
                "kind": "tree", "title": case.title, "cpus": results["meta"]["machine"].get("usable_cpus"),
                "description": case.info.pop("description", ""),
                "info": case.info, "scenarios": list(case.scenarios), "tool_order": [t.name for t in case_tools],
                "runs_done": args.runs, "runs": runs}
        log(f"{which} done in {time.perf_counter() - t0:.0f}s")

    results["meta"]["duration_s"] = time.time() - started
    results["meta"]["loadavg_end"] = os.getloadavg()
    write_report(results, args.output, notes)
    log(f"wrote {args.output / 'results.md'}, results.json, chart.png in {results['meta']['duration_s']:.0f}s")
    for row in results["targets"]:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        log(f"  {row['result']:4}  {ratio:>7} (limit {row['limit']:g}x)  {row['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
