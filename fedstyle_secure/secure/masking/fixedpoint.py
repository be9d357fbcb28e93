"""Fixed-point encoding of float vectors into the ring Z_{2^32} used by pairwise masking.

A value ``x`` in the clipping range ``[low, high]`` becomes the integer level
``q = rint(x * scale)`` stored as a uint32 word (two's complement, i.e. ``q mod 2^32``).
Masks and sums are computed with wrapping uint32 arithmetic; the unmasked sum is read back
as a signed int32 and divided by ``scale``.

The scale is chosen so that the sum of ``max_clients`` clipped values can never wrap:
with ``bound = max(|low|, |high|)`` and ``levels = floor((2^31 - 1) / max_clients)``,
``scale = levels / bound`` and every ``|q| <= levels``, hence ``|sum q| <= 2^31 - 1``.
Each value is quantised with absolute error at most ``1 / (2 * scale)``, so a sum of ``n``
values is within ``n / (2 * scale)`` of the float sum (see :attr:`FixedPointCodec.resolution`).

Values outside the clipping range are *rejected*, never silently clipped: clipping changes
the statistic being computed, so the caller must do it deliberately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedstyle_secure.errors import ConfigError, SecureAggregationError

MODULUS_BITS = 32
SIGNED_MAX = 2 ** (MODULUS_BITS - 1) - 1
#: :meth:`FixedPointCodec.encode` converts this many values at a time (its float64 scratch: 2 MB).
ENCODE_BLOCK_VALUES = 1 << 18


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode float vectors as uint32 fixed-point words whose sum over ``max_clients`` cannot wrap."""

    clip_range: tuple[float, float]
    max_clients: int
    levels: int = field(init=False)
    scale: float = field(init=False)

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.clip_range)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ConfigError(f"clip range must be finite with low < high, got {self.clip_range}")
        if self.max_clients < 1:
            raise ConfigError(f"max_clients must be >= 1, got {self.max_clients}")
        levels = SIGNED_MAX // self.max_clients
        bound = max(abs(low), abs(high))
        object.__setattr__(self, "clip_range", (low, high))
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "scale", levels / bound)

    @property
    def resolution(self) -> float:
        """Value of one quantisation level (the worst-case per-value error is half of it)."""
        return 1.0 / self.scale

    def sum_error_bound(self, count: int) -> float:
        """Worst-case absolute error of a decoded sum of ``count`` values, per coordinate."""
        return count * 0.5 * self.resolution

    def check_in_range(self, values: np.ndarray, *, owner: str) -> None:
        """Raise naming ``owner``, the first offending index and value if any entry is non-finite or
        out of range; checked in float64, :data:`ENCODE_BLOCK_VALUES` at a time (no full-length copy
        of a float32 vector)."""
        flat = np.asarray(values).reshape(-1)
        for start in range(0, flat.size, ENCODE_BLOCK_VALUES):
            bad = self._out_of_range(flat[start : start + ENCODE_BLOCK_VALUES])
            if bad.any():
                index = start + int(np.flatnonzero(bad)[0])
                count = sum(
                    int(self._out_of_range(flat[s : s + ENCODE_BLOCK_VALUES]).sum())
                    for s in range(start, flat.size, ENCODE_BLOCK_VALUES)
                )
                low, high = self.clip_range
                raise SecureAggregationError(
                    f"{owner}: value {float(flat[index])!r} at index {index} is outside the clipping range "
                    f"[{low}, {high}] ({count} offending entries); clip it before aggregation"
                )

    def _out_of_range(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float64)
        low, high = self.clip_range
        return ~(np.isfinite(x) & (x >= low) & (x <= high))

    def quantize(self, values: np.ndarray, *, owner: str = "input") -> np.ndarray:
        """Signed integer levels (int64) of a 1-D float vector; rejects out-of-range values."""
        x = np.asarray(values, dtype=np.float64)
        self.check_in_range(x, owner=owner)
        return self._levels(x)

    def _levels(self, x: np.ndarray) -> np.ndarray:
        """Integer levels of float64 values ``x`` (checked in range)."""
        return np.rint(x * self.scale).astype(np.int64)

    def encode(self, values: np.ndarray, *, owner: str = "input") -> np.ndarray:
        """uint32 words ``quantize(values) mod 2^32``, converted :data:`ENCODE_BLOCK_VALUES` at a time
        (an artist's model update is millions of values: no full-length float64 and int64 copies)."""
        x = np.asarray(values)
        words = np.empty(x.shape, dtype=np.uint32)
        flat, out = x.reshape(-1), words.reshape(-1)
        for start in range(0, flat.size, ENCODE_BLOCK_VALUES):  # each block converted to float64 once
            block = np.asarray(flat[start : start + ENCODE_BLOCK_VALUES], dtype=np.float64)
            if self._out_of_range(block).any():
                self.check_in_range(x, owner=owner)  # raises, naming the first offender and the count
            out[start : start + block.size] = self._levels(block).astype(np.uint32)
        return words

    def dequantize(self, levels: np.ndarray) -> np.ndarray:
        """Float64 values of signed integer levels."""
        return np.asarray(levels, dtype=np.float64) / self.scale

    def decode_sum(self, words: np.ndarray, count: int) -> np.ndarray:
        """Float64 sum of ``count`` encoded vectors from their wrapped uint32 sum."""
        if not 0 <= count <= self.max_clients:
            raise SecureAggregationError(
                f"cannot decode a sum of {count} vectors: the codec is overflow-safe only up to "
                f"{self.max_clients} clients"
            )
        signed = np.asarray(words, dtype=np.uint32).view(np.int32)
        return self.dequantize(signed)
