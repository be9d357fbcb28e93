"""Pseudorandom generator expanding a 32-byte seed into uint32 mask words.

The PRG is the AES-256-CTR keystream under key ``seed`` with an all-zero initial counter
block, read as little-endian uint32 words.  Each seed keys exactly one expansion (seeds are
fresh per round and per pair), so the fixed counter block is safe; both ends of a pair
derive the same seed and hence the same mask.  AES-CTR is used rather than ChaCha20 because
OpenSSL's AES-NI path is ~3x faster here, and masking is the protocol's dominant cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedstyle_secure.errors import SecureAggregationError

SEED_BYTES = 32
WORD_BYTES = 4
#: Words of keystream generated at a time (1 MB; a multiple of the 4-word AES block).
BLOCK_WORDS = 1 << 18
_ZERO_COUNTER = bytes(16)


class MaskGenerator:
    """Expands seeds into ``length`` uint32 words, :data:`BLOCK_WORDS` at a time through one reused
    scratch buffer (a mask is as long as a model update: no full-length keystream copy)."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise SecureAggregationError(f"mask length must be >= 1 word, got {length}")
        self.length = length
        block_bytes = WORD_BYTES * min(length, BLOCK_WORDS)
        self._zeros = memoryview(bytes(block_bytes))
        self._keystream = bytearray(block_bytes + 15)  # update_into may need a block of slack

    def _blocks(self, seed: bytes) -> Iterator[tuple[slice, np.ndarray]]:
        """``(positions, words)`` of ``PRG(seed)``, block after block (``words`` is reused scratch)."""
        if len(seed) != SEED_BYTES:
            raise SecureAggregationError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        for start in range(0, self.length, BLOCK_WORDS):  # the CTR keystream continues across calls
            count = min(BLOCK_WORDS, self.length - start)
            encryptor.update_into(self._zeros[: WORD_BYTES * count], self._keystream)
            yield slice(start, start + count), np.frombuffer(self._keystream, dtype="<u4", count=count)

    def words(self, seed: bytes) -> np.ndarray:
        """A fresh array of the ``length`` mask words of ``seed``."""
        words = np.zeros(self.length, dtype=np.uint32)
        self.add_into(words, seed, +1)
        return words

    def add_into(self, accumulator: np.ndarray, seed: bytes, sign: int) -> None:
        """``accumulator += sign * PRG(seed)`` in place, modulo 2^32 (``sign`` is +1 or -1)."""
        if sign not in (1, -1):
            raise SecureAggregationError(f"mask sign must be +1 or -1, got {sign}")
        if accumulator.shape != (self.length,):  # masking only a prefix would leave the rest in clear
            raise SecureAggregationError(f"mask of {self.length} words for an accumulator of shape {accumulator.shape}")
        combine = np.add if sign == 1 else np.subtract
        for positions, words in self._blocks(seed):
            part = accumulator[positions]
            combine(part, words, out=part)
