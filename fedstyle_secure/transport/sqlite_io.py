"""What the server's and the artists' durable SQLite state share: arrays as ``.npy`` bytes (no
pickle), a durable connection, and an all-or-nothing transaction."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fedstyle_secure.errors import ConfigError

log = logging.getLogger(__name__)
SQLITE_SIDE_FILES: tuple[str, ...] = ("-wal", "-shm", "-journal")


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
        db.execute("BEGIN IMMEDIATE")  # may fail (e.g. "database is locked"): then there is nothing to roll back
    except BaseException:
        db.close()
        raise
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def restrict_mode(path: Path, mode: int) -> None:
    """Make ``path`` accessible to its owner only (``mode``, e.g. 0o600), tightening -- with a
    warning -- whatever looser permissions it has; :class:`ConfigError` if that is impossible."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            log.warning("%s was mode %o (readable by others); tightening to %o", path, current, mode)
            os.chmod(path, mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot restrict its permissions to {mode:o}: {exc.strerror or exc}") from exc


def private_database(path: Path) -> None:
    """Create (or keep) the SQLite file ``path`` readable by its owner only: folder 0700, file
    and its WAL/shared-memory/journal files 0600.  SQLite creates those side files with the
    database file's mode, so a 0600 database keeps them 0600 too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    restrict_mode(path.parent, 0o700)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the state database: {exc.strerror or exc}") from exc
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        if candidate.exists():
            restrict_mode(candidate, 0o600)
