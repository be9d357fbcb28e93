"""Atomic file writes and bounded reads: the one way this package replaces a file it owns and reads
a JSON file that may come from elsewhere.

The content goes to a fresh temporary file beside the target (created with ``O_EXCL`` by
:func:`tempfile.mkstemp`, never through a link), is flushed to disk, then renamed over the target.
A reader sees the old or the new complete file, never a torn one; and no earlier file at that name,
no link planted there and no descriptor another process holds on the old file receives the new
content (it is a new inode).

A bounded read opens without blocking, refuses anything but a regular file and reads at most one
byte over its cap; the JSON parsed from it nests at most :data:`MAX_JSON_NESTING` levels."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fedstyle_secure.errors import ConfigError

MAX_JSON_NESTING = 32
"""Deepest nesting of lists and objects accepted in a JSON document read here (an honest report,
manifest, index or encoder description nests at most 4 levels). Python's parser refuses ~1,000
levels itself, but a document just under that overflowed the recursion limit later, when the
signature check re-serialised it (an UNKNOWN status and a traceback on the server; red-team review,
2026-12-01)."""


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


def loads_bounded(data: bytes) -> Any:
    """Parse UTF-8 JSON nested at most :data:`MAX_JSON_NESTING` deep; :class:`ValueError` otherwise
    (also for the parser's own recursion and integer-digit limits)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError as exc:
        raise ValueError(str(exc)) from exc
    if _nesting_exceeds(value, MAX_JSON_NESTING):
        raise ValueError(f"nested more than {MAX_JSON_NESTING} levels deep")
    return value


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether parsed JSON ``value`` nests lists or objects deeper than ``limit`` (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, refused with :class:`ValueError` (naming it) unless it is a
    regular file: a FIFO would block the reader forever, waiting for a writer, and a device such as
    ``/dev/zero`` (or a link to one) never ends.  :class:`OSError` when it cannot be opened."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO does not wait for a writer
    handle = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        handle.close()
        raise ValueError(f"{path} is not a regular file")
    return handle


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The content of the regular file ``path`` (:func:`open_regular_file`), at most ``max_bytes``
    bytes; :class:`ValueError` (naming the file) when it is larger (a sparse file of gigabytes is
    not read whole)."""
    with open_regular_file(path) as handle:
        info = os.fstat(handle.fileno())
        data = b"" if info.st_size > max_bytes else handle.read(max_bytes + 1)  # the read: it may grow
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    return data


def read_json_bounded(path: Path, max_bytes: int) -> Any:
    """:func:`loads_bounded` of :func:`read_regular_file`; :class:`OSError` or :class:`ValueError`."""
    return loads_bounded(read_regular_file(path, max_bytes))


def require_writable_target(path: Path, *, folder: bool, what: str) -> None:
    """Refuse, before any long computation, an output ``path`` that could not be written later:
    :class:`ConfigError` naming ``what`` (e.g. ``--out``) when ``path`` exists as the wrong kind (a
    folder where a file goes, or the reverse) or its nearest existing ancestor is not a folder this
    process may create entries in.  Writes nothing."""
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise ConfigError(f"{what} {path} is {kind}; expected {'a folder' if folder else 'a file'}")
    target = path if folder and path.is_dir() else path.parent
    ancestor = target.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: no permission to write in {ancestor}")
