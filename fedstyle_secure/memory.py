"""Resident memory of long-running processes (artists, server): measure it, hand freed heap back to
the OS, or keep a memory-heavy step out of the process altogether.

glibc keeps freed heap for reuse, so without these a process stays near the high-water mark of what
it ever held (feature extraction's backbone and image batches, a round's autograd buffers).
Measured with ``scripts/bench_scale.py --artist-process`` (12 artworks, cold feature cache): 627 MB
resident after extraction without :func:`return_freed_memory`, 458 MB with it.  With ``[client]
compact_memory`` (the inputs built by :func:`call_in_fresh_process`, and
:func:`compact_this_process`): 268 MB after building, 284 MB after a round, peak 294 MB; without
(``--no-compact-memory``, an earlier run): 299 / 330 MB, peak 529 MB.  The glibc calls are no-ops where there is
no glibc.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Allocations at least this large (bytes) are mmap'ed and unmapped on free (glibc's initial value).
MMAP_THRESHOLD_BYTES = 128 * 1024
#: malloc arenas a process may create (glibc's default: 8 per core).
MALLOC_ARENAS = 2
_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, <malloc.h>
_M_ARENA_MAX = -8


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


def compact_this_process() -> None:
    """Everything ``[client] compact_memory`` sets for a whole process; call once, early.

    :func:`keep_large_allocations_returnable`, :func:`limit_malloc_arenas`, and PyTorch's oneDNN
    kernels off: a local round then runs torch's native kernels and touches less of
    ``libtorch_cpu.so``'s code (3.6 MB less resident at the end of a loopback run,
    ``scripts/bench_round.py``), at 10-25 % more CPU per local round (42-47 against 38 ms with
    oneDNN, 12 artworks)."""
    import torch  # here: this module is imported by processes that never load torch

    keep_large_allocations_returnable()
    limit_malloc_arenas()
    torch.backends.mkldnn.set_flags(False)


def keep_large_allocations_returnable() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` for this process.

    By default glibc raises the threshold to the largest block freed so far (up to 32 MB), after
    which tensors of a few MB come from the heap, fragment it and are never returned.  Call once,
    early, in a process that keeps running after a memory-heavy phase and whose memory matters more
    than its allocation speed: every large tensor is then a fresh mapping, so local rounds cost more
    CPU (``scripts/bench_scale.py --artist-process`` with and without ``--no-compact-memory`` prints
    both: 45 against 26 ms a further local round, :func:`compact_this_process`'s oneDNN switch
    included).  So it is opt-in, ``[client] compact_memory``, for many artists on one machine (the
    benchmarks set it)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def limit_malloc_arenas() -> None:
    """Let glibc's malloc use at most :data:`MALLOC_ARENAS` arenas in this process; call early,
    before threads start.

    By default every thread that allocates may get an arena of its own (up to 8 per core), and each
    keeps its freed blocks: a gRPC process whose calls run on a pool of threads holds the high-water
    mark of every thread's payloads.  Measured with ``scripts/bench_scale.py --loopback 16``
    (``MALLOC_ARENA_MAX=2`` for every process): the server's peak 774 -> 663 MB plain and 620 -> 513 MB
    with secagg+, an artist 2 MB less at the end; seconds per round within the run-to-run spread
    (threads then share arenas: no contention showed in those figures)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def memory_use_mb() -> dict[str, float]:
    """This process's memory in MB (``/proc/self``; empty off Linux): ``peak_resident_mb`` (VmHWM),
    ``resident_mb`` (VmRSS), ``anonymous_mb`` (RssAnon: heap and tensors, what each further process
    on a machine adds) and ``proportional_mb`` (Pss: resident pages, each shared page divided among
    the processes mapping it).  Shared library pages (torch's code: ~100 MB) count fully in every
    process's resident figure but are held once, so ``proportional_mb`` is what a process costs a
    machine running many like it.  Artists and the server log these when they finish."""
    fields = {"VmHWM": "peak_resident_mb", "VmRSS": "resident_mb", "RssAnon": "anonymous_mb", "Pss": "proportional_mb"}
    out: dict[str, float] = {}
    for source in ("/proc/self/status", "/proc/self/smaps_rollup"):
        try:
            with open(source) as lines:
                for line in lines:
                    name, _, rest = line.partition(":")
                    if name in fields:
                        out[fields[name]] = round(int(rest.split()[0]) / 1024, 1)
        except OSError:
            continue
    return out


def call_in_fresh_process(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a fresh Python process that exits afterwards, so everything the call touched
    (imports, heap, the pages of library code it ran) goes back to the OS with it.

    For a long-running process that needs only the result of a memory-heavy step (an artist process
    building its inputs: the backbone, decoded images).  ``fn`` must be importable by name and its
    arguments and result must pickle; the child inherits the environment, not the caller's memory,
    so nothing secret is handed over unless passed.  An exception ``fn`` raises is raised here; a
    child that dies without answering (killed, out of memory) raises :class:`ChildProcessError`.
    Costs a fresh interpreter's imports (~2.5 s of CPU with torch)."""
    request = pickle.dumps((fn, args))
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__} as m; m._answer_call({write_end})"],
            stdin=subprocess.PIPE,
            pass_fds=(write_end,),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},  # finds what we find
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        assert child.stdin is not None
        try:
            child.stdin.write(request)
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child died early; reported below
        reply = answer.read()
    status = child.wait()
    died = ChildProcessError(
        f"{fn.__qualname__} died in its child process (exit status {status}: killed or out of memory?)"
    )
    if not reply:
        raise died
    try:
        ok, value = pickle.loads(reply)  # our own child's answer
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:  # cut short as it died
        raise died from exc
    if not ok:
        raise value
    return value


def _answer_call(answer_fd: int) -> None:
    """The child of :func:`call_in_fresh_process`: read ``(fn, args)`` from stdin, write
    ``(True, result)`` or ``(False, exception)`` to ``answer_fd``."""
    fn, args = pickle.load(sys.stdin.buffer)
    try:
        reply = pickle.dumps((True, fn(*args)))
    except Exception as exc:  # handed to the caller, which raises it
        try:
            reply = pickle.dumps((False, exc))
        except Exception:  # one that does not pickle
            reply = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
    with os.fdopen(answer_fd, "wb") as answer:
        answer.write(reply)


def evict_cached_libraries(root: Path) -> tuple[int, int]:
    """Drop the page-cache pages of every shared library under ``root`` (e.g. a freshly installed
    virtualenv), after flushing them; returns (files, bytes).  Pages that a running process maps stay.

    Why: a library written through the page cache (``pip install``) stays there as large folios, and
    a process that touches one page of such a folio maps the whole folio, which its resident memory
    counts.  Measured (``scripts/bench_round.py --artists 4 --modes none,secagg+ --rounds 2 --epsilon
    inf`` in a fresh clone right after ``make setup``): artist peaks 373 / 377 MB, 167 MB anonymous;
    after this, read back in on demand, 293 / 298 MB, the same anonymous memory.  Only resident
    figures change (the folios are shared page cache, not per-process memory); nothing else does."""
    files = total = 0
    for path in sorted(root.rglob("*.so*")):
        if path.is_symlink() or not path.is_file() or not (path.suffix == ".so" or ".so." in path.name):
            continue  # links (their target is counted once) and names like ``x.sources.txt``
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped: write them back first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        files, total = files + 1, total + path.stat().st_size
    return files, total


if __name__ == "__main__":  # `python -m fedstyle_secure.memory DIR`: what `make setup` runs on its virtualenv
    count, size = evict_cached_libraries(Path(sys.argv[1]))
    print(f"dropped cached pages of {count} shared libraries ({size / 2**20:.0f} MB) under {sys.argv[1]}")
