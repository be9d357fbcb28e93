"""Resident memory of long-running processes (artists, server): hand freed heap back to the OS.

glibc keeps freed heap for reuse, so without these a process stays near the high-water mark of what
it ever held (feature extraction's backbone and image batches, a round's autograd buffers).
Measured with ``scripts/bench_scale.py --artist-process`` (12 artworks, cold feature cache): 627 MB
resident after extraction without :func:`return_freed_memory`, 458 MB with it; with
:func:`keep_large_allocations_returnable` too (opt-in), 317 MB after building and 330 MB after a
round (334 / 367 MB without it).  No-ops where there is no glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

#: Allocations at least this large (bytes) are mmap'ed and unmapped on free (glibc's initial value).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number, <malloc.h>


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def return_freed_memory() -> None:
    """Collect garbage and ask glibc to hand freed heap pages back to the OS."""
    gc.collect()
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.malloc_trim(0)


def keep_large_allocations_returnable() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` for this process.

    By default glibc raises the threshold to the largest block freed so far (up to 32 MB), after
    which tensors of a few MB come from the heap, fragment it and are never returned.  Call once,
    early, in a process that keeps running after a memory-heavy phase and whose memory matters more
    than its allocation speed: every large tensor is then a fresh mapping (a local round's fit on one
    core took 58 ms instead of 39 ms, for 302 MB resident instead of 334 MB; the demo's networked
    federation of 8 artists 52.6 s instead of 42.6 s).  So it is opt-in, ``[client] compact_memory``,
    for many artists on one machine (the benchmarks set it)."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
