"""The masks' pseudorandom generator and the fixed-point encoding and range check, all computed block
by block: every length gives exactly the one-shot AES-256-CTR keystream, the one-shot encoding and
the one-shot check's error."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.masking import fixedpoint, prg
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking.prg import MaskGenerator

BLOCK = 8  # words (two AES blocks): small blocks put many boundaries into short masks


def _keystream_words(seed: bytes, length: int) -> np.ndarray:
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * length)), dtype="<u4").astype(np.uint32)


@pytest.mark.parametrize("length", [1, 3, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5])
def test_masks_made_block_by_block_are_the_one_shot_keystream(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    monkeypatch.setattr(prg, "BLOCK_WORDS", BLOCK)
    seed, start = os.urandom(prg.SEED_BYTES), np.arange(length, dtype=np.uint32)
    masks, expected = MaskGenerator(length), _keystream_words(seed, length)
    added, subtracted = start.copy(), start.copy()

    masks.add_into(added, seed, +1)
    masks.add_into(subtracted, seed, -1)

    assert np.array_equal(masks.words(seed), expected)
    assert np.array_equal(added, start + expected) and np.array_equal(subtracted, start - expected)
    with pytest.raises(SecureAggregationError, match="sign"):
        masks.add_into(added, seed, 2)
    with pytest.raises(SecureAggregationError, match="accumulator of shape"):  # never a masked prefix only
        masks.add_into(np.zeros(length + 1, dtype=np.uint32), seed, +1)


@pytest.mark.parametrize("length", [1, BLOCK, 3 * BLOCK + 5])
def test_encoding_block_by_block_equals_the_levels_modulo_2_32(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    monkeypatch.setattr(fixedpoint, "ENCODE_BLOCK_VALUES", BLOCK)
    codec = FixedPointCodec((-8.0, 8.0), max_clients=64)
    values = np.random.default_rng(length).uniform(-8.0, 8.0, length)

    assert np.array_equal(codec.encode(values), codec.quantize(values).astype(np.uint32))
    assert np.array_equal(
        codec.encode(values.astype(np.float32)), codec.encode(values.astype(np.float32).astype(float))
    )
    with pytest.raises(SecureAggregationError, match=f"index {length - 1}"):
        codec.encode(np.append(values[:-1], 9.0))


def test_the_range_check_names_the_first_offender_and_counts_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float32 vector (what an artist keeps of its contribution when that is lossless) is checked
    in float64 block by block; the error still names the first offending index and the total count."""
    monkeypatch.setattr(fixedpoint, "ENCODE_BLOCK_VALUES", BLOCK)
    codec = FixedPointCodec((-8.0, 8.0), max_clients=64)
    values = np.zeros(4 * BLOCK, dtype=np.float32)
    values[[BLOCK + 3, 2 * BLOCK, 4 * BLOCK - 1]] = [np.inf, -9.0, 8.5]

    with pytest.raises(SecureAggregationError, match=rf"inf at index {BLOCK + 3} .*\(3 offending entries\)"):
        codec.check_in_range(values, owner="artist")
