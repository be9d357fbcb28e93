"""Fixed-point codec of the masking path: overflow safety, precision and range rejection."""

from __future__ import annotations

import numpy as np
import pytest
from fedstyle_secure.secure.masking.fixedpoint import SIGNED_MAX, FixedPointCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstyle_secure.errors import ConfigError, SecureAggregationError


def test_known_answer_two_complement_words() -> None:
    codec = FixedPointCodec((-1.0, 1.0), max_clients=1)
    assert codec.levels == SIGNED_MAX
    words = codec.encode(np.array([1.0, -1.0, 0.0]))
    assert words.dtype == np.uint32
    assert words.tolist() == [2**31 - 1, 2**31 + 1, 0]


@pytest.mark.parametrize("extreme", [-2.5, 2.5])
def test_sum_of_max_clients_extremes_does_not_wrap(extreme: float) -> None:
    codec = FixedPointCodec((-2.5, 2.5), max_clients=50)
    words = codec.encode(np.full(4, extreme))
    total = np.zeros(4, dtype=np.uint32)
    for _ in range(50):
        total += words  # wraps modulo 2^32, as on the wire
    np.testing.assert_allclose(codec.decode_sum(total, 50), 50 * extreme, atol=codec.sum_error_bound(50))


def test_asymmetric_range_uses_the_larger_bound() -> None:
    codec = FixedPointCodec((-0.5, 4.0), max_clients=10)
    assert codec.scale == codec.levels / 4.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=20), st.integers(1, 1000))
def test_quantisation_error_is_at_most_half_a_level(values: list[float], max_clients: int) -> None:
    codec = FixedPointCodec((-3.0, 3.0), max_clients=max_clients)
    x = np.array(values)
    assert np.all(np.abs(codec.dequantize(codec.quantize(x)) - x) <= codec.resolution / 2 + 1e-15)


@pytest.mark.parametrize("bad", [1.0001, -7.0, float("nan"), float("inf")])
def test_out_of_range_value_is_rejected_with_its_position(bad: float) -> None:
    codec = FixedPointCodec((-1.0, 1.0), max_clients=8)
    with pytest.raises(SecureAggregationError, match=r"artist 'x'.*index 2 is outside the clipping range"):
        codec.encode(np.array([0.0, 0.5, bad]), owner="artist 'x'")


def test_decoding_more_than_max_clients_is_refused() -> None:
    codec = FixedPointCodec((-1.0, 1.0), max_clients=3)
    with pytest.raises(SecureAggregationError, match="overflow-safe only up to 3"):
        codec.decode_sum(np.zeros(2, dtype=np.uint32), 4)


@pytest.mark.parametrize("clip, clients", [((1.0, -1.0), 2), ((0.0, float("inf")), 2), ((-1.0, 1.0), 0)])
def test_invalid_codec_parameters(clip: tuple[float, float], clients: int) -> None:
    with pytest.raises(ConfigError):
        FixedPointCodec(clip, max_clients=clients)
