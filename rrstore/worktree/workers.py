"""How rrstore spreads file work over threads (a helper beside snapshot and restore).

Per small file the work is mostly Python, and threads would only fight over
the GIL (measured on the standard library: 400k futex calls, 3x slower than
one thread). Large files are different: blake3, zstd and file I/O run
without the GIL there. So small items run in the calling thread and large
ones in a pool, at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# The callback every long operation takes (snapshot, restore, transfer, archives): ``progress(done, total)``
# in bytes (read, written or copied). ``total`` is known up front where it is cheap to know (an estimate
# for transfers and chunked exports) and 0 when unknown; the last call has ``done == total``, the bytes
# the operation really handled. Called per file or object, from pool threads too: keep it cheap.
Progress = Callable[[int, int], None]

# At this size a file's hashing and compression outweigh the thread hand-off.
PARALLEL_MIN_SIZE = 256 << 10


def default_workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 2))


def run_split(items: Iterable[T], large: Callable[[T], bool], work: Callable[[T], R],
              workers: int = 0) -> Iterator[R]:
    """``work`` over ``items``: large ones in a pool, the rest here; results as they are consumed."""
    items = list(items)
    big = [item for item in items if large(item)]
    if not big:
        for item in items:
            yield work(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(big), workers or default_workers()))) as pool:
        futures = [pool.submit(work, item) for item in big]
        try:
            for item in items:
                if not large(item):
                    yield work(item)
            for future in futures:
                yield future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
