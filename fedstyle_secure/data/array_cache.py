"""A content-addressed on-disk cache of numpy arrays (no pickle), shared by everything that is
expensive to compute but derived only from public or local inputs: style features of images,
the public warm start of the encoder.

Writes are atomic (unique temporary name, then ``os.replace``), so several processes or threads
(artists sharing one machine's cache) may write the same key at once; :meth:`ArrayCache.get_or_compute`
also lets processes that start together compute an entry once (an advisory ``flock``) instead of
all at the same time.  A missing, truncated or
unreadable entry is a miss, never an error: the caller recomputes.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class ArrayCache:
    """One ``.npy`` per key under ``root / tag``; ``root=None`` disables caching."""

    def __init__(self, root: Path | None, tag: str) -> None:
        self.dir = None if root is None else root / tag

    def get(self, key: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        try:
            return np.load(self.dir / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy"  # unique per writer
        np.save(tmp, array)
        os.replace(tmp, self.dir / f"{key}.npy")

    def get_or_compute(
        self, key: str, compute: Callable[[], np.ndarray], valid: Callable[[np.ndarray], bool]
    ) -> np.ndarray:
        """The cached entry if ``valid``, else ``compute()`` (stored).  Concurrent callers on one
        machine wait for the first one instead of computing the same entry in parallel."""
        cached = self.get(key)
        if cached is not None and valid(cached):
            return cached
        with self._locked(key):
            cached = self.get(key)
            if cached is not None and valid(cached):
                return cached
            value = compute()
            self.put(key, value)
            return value

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the machine-wide advisory lock ``key`` of this cache (threads and processes)."""
        with self._locked(key):
            yield

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        if self.dir is None:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f".{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def one_of(self, name: str, slots: int, poll_seconds: float = 0.1) -> Iterator[None]:
        """Hold one of ``slots`` machine-wide locks ``name-<i>`` of this cache: a counting semaphore
        across threads and processes (e.g. at most one memory-hungry extraction per core)."""
        if self.dir is None:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            for slot in range(max(slots, 1)):
                with open(self.dir / f".{name}-{slot}.lock", "a") as handle:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    try:
                        yield
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    return
            time.sleep(poll_seconds)
