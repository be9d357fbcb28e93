"""Resident memory of long-running processes (artists, server): measure it, hand freed heap back to the OS.

glibc keeps freed heap for reuse, so without these a process stays near the high-water mark of what
it ever held (feature extraction's backbone and image batches, a round's autograd buffers).
Measured with ``scripts/bench_scale.py --artist-process`` (12 artworks, cold feature cache): 627 MB
resident after extraction without :func:`return_freed_memory`, 458 MB with it; with
:func:`keep_large_allocations_returnable` too (opt-in), 315 MB after building and 331 MB after a
round, against 317 / 357 MB without it (``--default-malloc``).  No-ops where there is no glibc.
"""

from __future__ import annotations

import ctypes
import functools
import gc

#: Allocations at least this large (bytes) are mmap'ed and unmapped on free (glibc's initial value).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number, <malloc.h>


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where there is none (then every function here is a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def return_freed_memory() -> None:
    """Collect garbage and ask glibc to hand freed heap pages back to the OS."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_large_allocations_returnable() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` for this process.

    By default glibc raises the threshold to the largest block freed so far (up to 32 MB), after
    which tensors of a few MB come from the heap, fragment it and are never returned.  Call once,
    early, in a process that keeps running after a memory-heavy phase and whose memory matters more
    than its allocation speed: every large tensor is then a fresh mapping, so local rounds cost more
    CPU (``scripts/bench_scale.py --artist-process`` with and without ``--default-malloc`` prints
    both).  So it is opt-in, ``[client] compact_memory``, for many artists on one machine (the
    benchmarks set it)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def memory_use_mb() -> dict[str, float]:
    """This process's memory in MB (``/proc/self/status``; empty off Linux): ``peak_resident_mb``
    (VmHWM), ``resident_mb`` (VmRSS) and ``anonymous_mb`` (RssAnon: heap and tensors, what each
    further process on a machine adds; shared library pages count in every process's resident
    figure but are held once).  Artists and the server log it when they finish, so a deployment can
    size its machines."""
    fields = {"VmHWM": "peak_resident_mb", "VmRSS": "resident_mb", "RssAnon": "anonymous_mb"}
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in fields:
                    out[fields[name]] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        return {}
    return out
