"""Pseudorandom generator expanding a 32-byte seed into uint32 mask words.

The PRG is the AES-256-CTR keystream under key ``seed`` with an all-zero initial counter
block, read as little-endian uint32 words.  Each seed keys exactly one expansion (seeds are
fresh per round and per pair), so the fixed counter block is safe; both ends of a pair
derive the same seed and hence the same mask.  AES-CTR is used rather than ChaCha20 because
OpenSSL's AES-NI path is ~3x faster here, and masking is the protocol's dominant cost.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedstyle_secure.errors import SecureAggregationError

SEED_BYTES = 32
WORD_BYTES = 4
_ZERO_COUNTER = bytes(16)


class MaskGenerator:
    """Expands seeds into ``length`` uint32 words, reusing one scratch buffer across calls."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise SecureAggregationError(f"mask length must be >= 1 word, got {length}")
        self.length = length
        self._zeros = bytes(WORD_BYTES * length)
        self._keystream = bytearray(WORD_BYTES * length + 15)  # update_into may need a block of slack

    def _expand(self, seed: bytes) -> np.ndarray:
        if len(seed) != SEED_BYTES:
            raise SecureAggregationError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        encryptor.update_into(self._zeros, self._keystream)
        return np.frombuffer(self._keystream, dtype="<u4", count=self.length)

    def words(self, seed: bytes) -> np.ndarray:
        """A fresh array of the ``length`` mask words of ``seed``."""
        return self._expand(seed).astype(np.uint32)

    def add_into(self, accumulator: np.ndarray, seed: bytes, sign: int) -> None:
        """``accumulator += sign * PRG(seed)`` in place, modulo 2^32 (``sign`` is +1 or -1)."""
        if sign == 1:
            np.add(accumulator, self._expand(seed), out=accumulator)
        elif sign == -1:
            np.subtract(accumulator, self._expand(seed), out=accumulator)
        else:
            raise SecureAggregationError(f"mask sign must be +1 or -1, got {sign}")
