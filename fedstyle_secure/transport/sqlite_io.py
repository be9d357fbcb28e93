"""What the server's and the artists' durable SQLite state share: arrays as ``.npy`` bytes (no
pickle), a durable connection, and an all-or-nothing transaction."""

from __future__ import annotations

import io
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` serialised as ``.npy`` (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with full fsync (a saved round survives a crash)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection inside ``BEGIN IMMEDIATE``: committed on success, rolled back on any error."""
    db = connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()
