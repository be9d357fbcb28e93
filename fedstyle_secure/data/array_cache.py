"""A content-addressed on-disk cache of numpy arrays (no pickle), shared by everything that is
expensive to compute but derived only from public or local inputs: style features of images,
the public warm start of the encoder.

Writes are atomic (unique temporary name, then ``os.replace``), so several processes or threads
(artists sharing one machine's cache) may write the same key at once.  A missing, truncated or
unreadable entry is a miss, never an error: the caller recomputes.
"""

from __future__ import annotations

import os
import uuid
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
