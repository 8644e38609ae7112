"""The C heap for bulk work (foundations): keep glibc's malloc from holding freed memory.

Checkpoint and restore move data through many threads in blocks of up to a
few MiB. Left alone, glibc gives each thread its own heap (arena), and
blocks freed there stay as dead pages: a cold checkpoint of 52.9k files
peaked at 161-176 MB against 140 MB with one arena. The setting is
process-wide and harmless elsewhere; where ``mallopt`` is missing (not
glibc) nothing changes. (Mapping every block of 256 KiB or more, glibc's
``M_MMAP_THRESHOLD``, saves another ~10-30 MB but costs a page fault per
4 KiB of each block: +1 s of CPU per GB, and far more system time under
load, so it is not used.)
"""

from __future__ import annotations

import functools

M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache
def _mallopt() -> object:
    import ctypes

    try:
        return ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return None


@functools.cache
def one_arena() -> None:
    """All threads allocate from one heap, so what one frees another reuses (no measurable cost:
    the threads allocate under the GIL, or once per compression context)."""
    mallopt = _mallopt()
    if callable(mallopt):
        mallopt(M_ARENA_MAX, 1)
