"""Shamir secret sharing over GF(2^256 + 297): threshold property and input validation."""

from __future__ import annotations

import os
import random

import pytest
from fedstyle_secure.secure.masking.shamir import (
    PRIME,
    SHARE_VALUE_BYTES,
    Share,
    field_element,
    interpolate,
    reconstruct_secret,
    split_secret,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstyle_secure.errors import SecureAggregationError


def test_prime_is_the_smallest_above_2_pow_256() -> None:
    assert PRIME == 2**256 + 297
    assert all(pow(a, PRIME - 1, PRIME) == 1 for a in (2, 3, 5, 7, 11, 13))  # Fermat witnesses


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n), st.randoms())))
def test_any_t_shares_reconstruct(params: tuple[int, int, random.Random]) -> None:
    n, t, rnd = params
    secret = os.urandom(32)
    shares = split_secret(secret, t, range(1, n + 1))
    assert reconstruct_secret(rnd.sample(shares, t), t) == secret


def test_fewer_than_t_shares_are_consistent_with_every_secret() -> None:
    secret, t = os.urandom(32), 5
    shares = split_secret(secret, t, range(1, 9))
    known = shares[: t - 1]
    # Interpolating t-1 shares as if they were enough gives a wrong value ...
    assert reconstruct_secret(known, t - 1) != secret
    with pytest.raises(SecureAggregationError, match="need 5 shares"):
        reconstruct_secret(known, t)
    # ... and for ANY candidate secret there is a degree-(t-1) polynomial through the known
    # shares with that constant term, so t-1 shares carry no information about the secret.
    for candidate in (bytes(32), b"\xff" * 32, os.urandom(32)):
        dealer = known + [Share(0, int.from_bytes(candidate, "big"))]
        completion = Share(8, interpolate(dealer, at=8))
        assert reconstruct_secret(known + [completion], t) == candidate


def test_share_values_round_trip_through_fixed_width_bytes() -> None:
    share = split_secret(os.urandom(32), 2, [1, 2])[0]
    assert len(share.value_bytes()) == SHARE_VALUE_BYTES
    assert field_element(share.value_bytes()) == share.y


@pytest.mark.parametrize(
    "secret, threshold, xs, message",
    [
        (bytes(31), 2, [1, 2], "32 bytes"),
        (bytes(32), 3, [1, 2], "threshold 3"),
        (bytes(32), 2, [1, 1, 2], "distinct"),
        (bytes(32), 2, [0, 1], "non-zero"),
    ],
)
def test_split_rejects_bad_parameters(secret: bytes, threshold: int, xs: list[int], message: str) -> None:
    with pytest.raises(SecureAggregationError, match=message):
        split_secret(secret, threshold, xs)


def test_field_element_rejects_out_of_field_and_wrong_width() -> None:
    with pytest.raises(SecureAggregationError, match="not a field element"):
        field_element(PRIME.to_bytes(SHARE_VALUE_BYTES, "big"))
    with pytest.raises(SecureAggregationError, match="33 bytes"):
        field_element(bytes(32))


def test_duplicate_x_coordinates_are_refused() -> None:
    shares = split_secret(os.urandom(32), 2, [1, 2])
    with pytest.raises(SecureAggregationError, match="duplicate"):
        reconstruct_secret([shares[0], shares[0]], 2)
