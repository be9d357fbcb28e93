"""Crash-safe JSON files: write to a temporary file in the same directory, fsync, ``os.replace``.

A reader therefore sees either the old or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.files import write_bytes_atomic

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON file read (bytes): the longest run's report or ledger (2,001 mechanisms,
:data:`~fedstyle_secure.privacy.mechanisms.MAX_MECHANISMS`) is 0.37 MB as written here."""


MAX_JSON_NESTING = 32
"""Deepest nesting of lists and objects accepted in a report, manifest or ledger (an honest report
nests 4 levels). Python's parser refuses ~1,000 levels itself, but a document just under that
overflowed the recursion limit later, when the signature check re-serialised it (an UNKNOWN status
and a traceback on the server; red-team review, 2026-12-01)."""


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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted UTF-8 JSON to ``path`` atomically (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), mode=0o600)


def read_json(path: Path) -> Any:
    """Parse the JSON file at ``path``; raises :class:`PrivacyError` naming the file if unusable.

    Threat model: the files (reports, manifests, ledgers) may come from whoever writes the folder,
    so a file over :data:`MAX_JSON_BYTES`, nesting deeper than Python's recursion limit or an
    integer over its digit limit (``sys.get_int_max_str_digits``) is refused like malformed JSON,
    and so is anything but a regular file: it is opened without blocking and checked before it is
    read (a FIFO named like a report hung the audit, waiting for a writer; red-team review,
    2026-12-01)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise PrivacyError(f"{path} is not a regular file: not a report, manifest or ledger")
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise PrivacyError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_JSON_BYTES:
        raise PrivacyError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not a report, manifest or ledger")
    try:
        return loads_bounded(data)
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digits, recursion, nesting
        raise PrivacyError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
