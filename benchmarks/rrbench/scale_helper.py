"""Run by the benchmark's rrstore interpreter (not the harness's): builds stores fast and counts S3 requests.

    python scale_helper.py build TREE STORE FIRST COUNT   # COUNT checkpoints, one file changed each time
    python scale_helper.py count OUT.json -- ARGS...      # rrstore's CLI in-process, S3 requests counted

It imports only rrstore (and botocore for ``count``), never the harness, so it
runs against whatever rrstore the benchmark venv holds. ``build`` uses the
public Python API (``RollbackRecoverySystem.checkpoint``, the seed guide's),
so 2,000 checkpoints cost no interpreter start-up each.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

STEP_FILE = "bench-step.txt"


def touch_step(tree: Path, step: int) -> None:
    """Change one file: new content and an mtime of its own, far enough in the past not to be racy."""
    path = tree / STEP_FILE
    path.write_text(f"step {step}\n" + "x" * (step % 13) + "\n")
    stamp = 1_700_000_000 + step * 10
    os.utime(path, (stamp, stamp))


def build(tree: Path, store: Path, first: int, count: int) -> dict[str, Any]:
    from rrstore.system import RollbackRecoverySystem

    system = RollbackRecoverySystem(tree, store)
    start = time.perf_counter()
    cpu = time.process_time()
    for step in range(first, first + count):
        touch_step(tree, step)
        system.checkpoint("standard", step, f"step{step}")
    return {"checkpoints": count, "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


class Counter:
    """Every HTTP request a botocore client sends (retries included), by operation, and the bytes each way."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.calls = 0
        self.by_operation: dict[str, int] = {}
        self.bytes_sent = 0
        self.bytes_received = 0

    @staticmethod
    def _length(headers: Any, body: Any) -> int:
        value = headers.get("Content-Length") if headers is not None else None
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                pass
        if isinstance(body, (bytes, bytearray)):
            return len(body)
        return 0

    def before_send(self, request: Any, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self.lock:
            self.requests += 1
            self.by_operation[operation] = self.by_operation.get(operation, 0) + 1
            self.bytes_sent += self._length(request.headers, request.body)

    def after_call(self, http_response: Any = None, **_: Any) -> None:
        with self.lock:
            self.calls += 1
            if http_response is not None:
                self.bytes_received += self._length(http_response.headers, None)

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "api_calls": self.calls, "by_operation": self.by_operation,
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}


def count(out: Path, argv: list[str]) -> int:
    import botocore.session

    counter = Counter()
    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-send", counter.before_send)
        client.meta.events.register("after-call", counter.after_call)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    from rrstore.cli.main import main

    code: Any = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        out.write_text(json.dumps(counter.as_json()))
    return code if isinstance(code, int) else (0 if code is None else 1)


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "build":
        result = build(Path(argv[1]), Path(argv[2]), int(argv[3]), int(argv[4]))
        print(json.dumps(result))
        return 0
    if len(argv) >= 3 and argv[0] == "count" and argv[2] == "--":
        return count(Path(argv[1]), argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
