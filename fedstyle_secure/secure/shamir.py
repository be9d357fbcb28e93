"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^256 + 297).

``2^256 + 297`` is the smallest prime above ``2^256``, so every 32-byte secret (an X25519
private key or a mask seed) is a single field element and no chunking is needed.  Any
``t - 1`` shares are statistically independent of the secret (every secret is consistent
with them); any ``t`` shares determine it by Lagrange interpolation at 0.

Share x-coordinates are the holders' 1-based positions in the round roster, so they are
public, distinct and non-zero.  Coefficients come from :mod:`secrets` (the OS CSPRNG).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fedstyle_secure.errors import SecureAggregationError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_VALUE_BYTES = 33  # a field element, big-endian


@dataclass(frozen=True)
class Share:
    """One point ``(x, y)`` of the sharing polynomial."""

    x: int
    y: int

    def value_bytes(self) -> bytes:
        """``y`` as a fixed-width big-endian field element."""
        return self.y.to_bytes(SHARE_VALUE_BYTES, "big")


def field_element(data: bytes) -> int:
    """Parse a fixed-width share value, rejecting wrong lengths and values outside the field."""
    if len(data) != SHARE_VALUE_BYTES:
        raise SecureAggregationError(f"share value must be {SHARE_VALUE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecureAggregationError("share value is not a field element (>= prime)")
    return value


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % PRIME
    return acc


def split_secret(secret: bytes, threshold: int, xs: Iterable[int]) -> list[Share]:
    """Share a 32-byte secret so that any ``threshold`` of the returned shares recover it."""
    points = list(xs)
    if len(secret) != SECRET_BYTES:
        raise SecureAggregationError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(points):
        raise SecureAggregationError(f"threshold {threshold} must be between 1 and the {len(points)} share holders")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise SecureAggregationError("share x-coordinates must be distinct non-zero field elements")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in points]


@lru_cache(maxsize=64)
def _lagrange_weights(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Weights ``l_i`` with ``f(at) = sum l_i f(x_i)`` for any polynomial of degree < len(xs)."""
    weights = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (at - xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)


def interpolate(shares: Sequence[Share], at: int = 0) -> int:
    """``f(at)`` for the unique polynomial ``f`` of degree < len(shares) through the shares."""
    xs = tuple(s.x for s in shares)
    if len(set(xs)) != len(xs):
        raise SecureAggregationError(f"duplicate share x-coordinates {sorted(xs)}")
    weights = _lagrange_weights(xs, at % PRIME)
    return sum(w * s.y for w, s in zip(weights, shares)) % PRIME


def reconstruct_secret(shares: Sequence[Share], threshold: int) -> bytes:
    """Recover a 32-byte secret from at least ``threshold`` shares (the first ``threshold`` are used)."""
    if len(shares) < threshold:
        raise SecureAggregationError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    value = interpolate(sorted(shares, key=lambda s: s.x)[:threshold])
    if value >= 2 ** (8 * SECRET_BYTES):
        raise SecureAggregationError("reconstructed value is not a 32-byte secret: shares are inconsistent")
    return value.to_bytes(SECRET_BYTES, "big")
