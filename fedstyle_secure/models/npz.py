"""Read ``.npz`` archives written by this package, bounded before anything is decompressed.

An index or encoder folder may come from elsewhere (``fedstyle query --index DIR``).  NumPy's own
reader allocates whatever an array header announces, so a few MB of archive can ask for GiBs; here
every member's header is read first and the archive is refused, naming the member, unless each is a
plain numeric array and their total stays within ``max_bytes``.  No pickle, ever.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from fedstyle_secure.errors import ModelError
from fedstyle_secure.files import open_regular_file

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def read_npz(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of ``path`` by name; :class:`ModelError` if the archive is unreadable, holds a
    non-numeric array, or its arrays would take more than ``max_bytes`` (bytes) once loaded."""
    try:
        with open_regular_file(path) as handle:  # a FIFO would block, a device never end
            return _read_npz(handle, path, max_bytes)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _read_npz(archive_file: BinaryIO, path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """:func:`read_npz` of the opened ``archive_file``: every header checked before any array is loaded."""
    with zipfile.ZipFile(archive_file) as archive:
        total = 0
        for member in archive.namelist():
            with archive.open(member) as handle:
                shape, dtype = _array_header(handle, f"{path}: array {member!r}")
            if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
                raise ModelError(f"{path}: array {member!r} has dtype {dtype}, not a plain numeric type")
            total += math.prod(shape) * dtype.itemsize
            if total > max_bytes:
                raise ModelError(f"{path}: array {member!r} takes the arrays past {max_bytes:,} bytes")
    archive_file.seek(0)
    with np.load(archive_file, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _array_header(handle: IO[bytes], what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, reading nothing of the data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ModelError(f"{what}: unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), dtype


def require_finite(array: np.ndarray, what: str) -> None:
    """:class:`ModelError` naming ``what`` unless every entry of the float array is finite."""
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ModelError(f"{what} holds NaN or infinite values")
