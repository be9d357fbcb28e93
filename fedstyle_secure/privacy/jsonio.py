"""Crash-safe JSON files: write to a temporary file in the same directory, fsync, ``os.replace``.

A reader therefore sees either the old or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.files import loads_bounded, read_regular_file, write_bytes_atomic

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON file read (bytes): the longest run's report or ledger (2,001 mechanisms,
:data:`~fedstyle_secure.privacy.mechanisms.MAX_MECHANISMS`) is 0.37 MB as written here."""


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
        data = read_regular_file(path, MAX_JSON_BYTES)
    except OSError as exc:
        raise PrivacyError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # not a regular file, or too large
        raise PrivacyError(f"{exc}: not a report, manifest or ledger") from exc
    try:
        return loads_bounded(data)
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digits, recursion, nesting
        raise PrivacyError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
