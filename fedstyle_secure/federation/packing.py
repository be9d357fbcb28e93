"""Pack named arrays into one flat float vector and back (pure NumPy).

Secure summation sums flat vectors; a :class:`Layout` records which slice is which array so
the sum can be unpacked into the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Ordered ``(name, shape)`` pairs of a packed vector."""

    fields: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(shape)) for _, shape in self.fields))

    def describe(self, limit: int = 6) -> str:
        """``name(shape)`` of the first ``limit`` fields, for error messages (an upload may declare thousands)."""
        shown = ", ".join(f"{name}{tuple(shape)}" for name, shape in self.fields[:limit])
        return f"[{shown}{', ...' if len(self.fields) > limit else ''}]"


def pack(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """Concatenate ``arrays`` (in sorted name order) into one float64 vector."""
    names = sorted(arrays)
    layout = Layout(tuple((n, tuple(np.shape(arrays[n]))) for n in names))
    vector = np.empty(layout.size, dtype=np.float64)
    offset = 0
    for name in names:  # converted into place: no float64 copy of each array before the concatenation
        values = np.asarray(arrays[name]).reshape(-1)
        vector[offset : offset + values.size] = values
        offset += values.size
    return vector, layout


def unpack(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`; raises ``ValueError`` when the length does not match ``layout``."""
    if vector.shape != (layout.size,):
        raise ValueError(f"packed vector has shape {vector.shape}, layout expects ({layout.size},)")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in layout.fields:
        n = int(np.prod(shape))
        out[name] = vector[offset : offset + n].reshape(shape)
        offset += n
    return out


def pack_as(arrays: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """:func:`pack` ``arrays`` into the layout the plan prescribes; raises ``ValueError`` naming
    the difference when they do not have exactly its names and shapes."""
    vector, actual = pack(arrays)
    if actual != layout:
        raise ValueError(f"arrays {list(actual.fields)} do not match the round's layout {list(layout.fields)}")
    return vector


def compact_lossless(vector: np.ndarray) -> np.ndarray:
    """``vector`` as float32 when that loses nothing, else unchanged.  A round's contributions come
    from float32 models with weight 1, so this halves what is held of a packed contribution (the
    simulator's per artist while a round's sum forms, an artist's between masking phases); every
    summation reads its inputs as float64, so the sum is the same."""
    single = vector.astype(np.float32)
    return single if np.array_equal(single, vector) else vector
