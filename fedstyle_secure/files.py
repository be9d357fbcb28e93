"""Atomic file writes, the one way this package replaces a file it owns.

The content goes to a fresh temporary file beside the target (created with ``O_EXCL`` by
:func:`tempfile.mkstemp`, never through a link), is flushed to disk, then renamed over the target.
A reader sees the old or the new complete file, never a torn one; and no earlier file at that name,
no link planted there and no descriptor another process holds on the old file receives the new
content (it is a new inode)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``, whatever the umask) atomically."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
