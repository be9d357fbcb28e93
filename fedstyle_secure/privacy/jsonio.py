"""Crash-safe JSON files: write to a temporary file in the same directory, fsync, ``os.replace``.

A reader therefore sees either the old or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from fedstyle_secure.errors import PrivacyError

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON file read (bytes): the longest run's report or ledger (2,001 mechanisms,
:data:`~fedstyle_secure.privacy.mechanisms.MAX_MECHANISMS`) is 0.37 MB as written here."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted UTF-8 JSON to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


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
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, int digits
        raise PrivacyError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
