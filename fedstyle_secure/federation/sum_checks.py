"""Is a decoded round sum possible at all?  The server's checks before any state changes (pure NumPy).

Threat model: a malicious artist uploads crafted values.  With ``secure_mode = "none"`` the server
sees every vector and checks each one as a sum of one contribution; with ``ckks``/``secagg``/
``secagg+`` it sees only the sum, so these checks on the sum are the defence.  Every bound is
derived from the plan, never from an upload: the round's layout (:func:`round_layout`), the
number of contributors ``n`` the protocol reports, and the value range every entry of one
artist's contribution lies in.  What one artist adds:

* ``clients`` = 1 and ``weight`` = :data:`~.strategy.CLIENT_WEIGHT`, so the sums equal ``n`` and
  ``n * CLIENT_WEIGHT``;
* every entry within ``value_range = (lo, hi)``, so every summed entry lies in ``[n lo, n hi]``;
* ``public_embeddings``: rows of unit L2 norm, so every summed row has norm <= ``n``;
* ``feature_mean`` m and ``feature_sq_mean`` q of its artworks: q >= m^2 >= 0 per feature, so
  the sums satisfy ``S_q >= 0`` and, by Cauchy-Schwarz, ``S_q >= S_m^2 / n`` (the mixture's
  mean square is at least its squared mean: its variance is non-negative).

Residual (not detectable from a sum): a malicious artist can still shift the sum anywhere these
bounds allow.  Under ``ckks``/``secagg``/``secagg+`` nobody sees its own entries, which may lie
outside ``value_range`` (masked words or a ciphertext can encode any value), so one artist can put
each summed entry anywhere in ``[n lo, n hi]`` (e.g. choose the averaged parameters outright); with
``none`` its upload is checked alone and it shifts each entry by at most ``hi - lo``.  It only
cannot make the result impossible (a wrong count, a NaN, a negative variance, an infinite
standardisation).

Decoded sums carry encoding error (fixed-point masking: ``n / (2 scale)`` per entry; CKKS: about
1e-8), so every comparison allows :func:`decode_tolerance`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstyle_secure.federation.round_layout import FederationShape, round_layout, round_value_range
from fedstyle_secure.federation.strategy import (
    CLIENT_WEIGHT,
    AlgorithmSpec,
    ServerOptimizer,
    ServerState,
    aggregate,
    standardisation_from_sums,
)
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec

FLOAT_TOLERANCE = 1e-6  # absolute slack on top of the codec's: CKKS decryption error and float rounding


class InvalidSum(ValueError):
    """A round sum (or one plain contribution) that no honest set of contributors can produce."""


def decode_tolerance(value_range: tuple[float, float], contributors: int, max_clients: int) -> float:
    """Largest absolute per-entry error of a decoded sum of ``contributors`` values: the fixed-point
    codec's worst case for a session of ``max_clients`` (pairwise masking), plus
    :data:`FLOAT_TOLERANCE` (covers CKKS and float64 rounding)."""
    codec = FixedPointCodec(value_range, max(max_clients, contributors, 1))
    return codec.sum_error_bound(contributors) + FLOAT_TOLERANCE


def check_round_sum(
    spec: AlgorithmSpec,
    shape: FederationShape,
    kind: str,
    sums: Mapping[str, np.ndarray],
    contributors: int,
    value_range: tuple[float, float],
    tolerance: float = FLOAT_TOLERANCE,
) -> None:
    """Raise :class:`InvalidSum` naming the first violated rule if ``sums`` (unpacked by the
    plan's layout) cannot be the sum of ``contributors`` honest contributions of a ``kind``
    round; ``tolerance`` is the absolute decode error allowed per entry."""
    n = contributors
    if n < 1:
        raise InvalidSum(f"a round sum needs at least one contributor, got {n}")
    layout = round_layout(spec, shape, kind)
    expected = {} if layout is None else dict(layout.fields)
    got = {name: tuple(np.shape(value)) for name, value in sums.items()}
    if got != expected:
        raise InvalidSum(f"arrays {sorted(got.items())} differ from the plan's layout {sorted(expected.items())}")
    for name, value in sums.items():
        if not np.all(np.isfinite(value)):
            raise InvalidSum(f"{name!r} contains NaN or infinite values")
    _check_count(sums, "clients", n, 1.0, tolerance)
    _check_count(sums, "weight", n, CLIENT_WEIGHT, tolerance)
    lo, hi = value_range
    for name, value in sums.items():
        scale = CLIENT_WEIGHT if name == "weighted_params" else 1.0
        low, high = n * scale * lo - tolerance, n * scale * hi + tolerance
        if value.size and (float(value.min()) < low or float(value.max()) > high):
            raise InvalidSum(
                f"{name!r} has entries in [{float(value.min()):.6g}, {float(value.max()):.6g}], outside "
                f"[{low:.6g}, {high:.6g}] that {n} contribution(s) within {value_range} allow"
            )
    if "public_embeddings" in sums:
        _check_embedding_norms(sums["public_embeddings"], n, tolerance)
    if "feature_sq_mean" in sums:
        _check_moments(sums["feature_mean"], sums["feature_sq_mean"], n, tolerance)


def _check_count(sums: Mapping[str, np.ndarray], name: str, n: int, each: float, tolerance: float) -> None:
    if name not in sums:
        return
    value = float(sums[name][0])
    if abs(value - n * each) > tolerance:
        raise InvalidSum(
            f"{name!r} sums to {value:.6g}, but {n} artist(s) contributed ({each:g} each: expected {n * each:g})"
        )


def _check_embedding_norms(embeddings: np.ndarray, n: int, tolerance: float) -> None:
    """Each of ``n`` contributors adds a unit vector per public image: row norms <= n."""
    norms = np.linalg.norm(embeddings, axis=1)
    limit = n + tolerance * np.sqrt(embeddings.shape[1])
    if norms.size and float(norms.max()) > limit:
        row = int(np.argmax(norms))
        raise InvalidSum(
            f"'public_embeddings' row {row} has norm {float(norms[row]):.6g} > {limit:.6g}: "
            f"{n} unit-norm embedding(s) cannot sum to it"
        )


def _check_moments(mean_sum: np.ndarray, sq_sum: np.ndarray, n: int, tolerance: float) -> None:
    """Mean squares are non-negative and the mixture's variance ``S_q / n - (S_m / n)^2`` too."""
    if float(sq_sum.min(initial=0.0)) < -tolerance:
        raise InvalidSum(f"'feature_sq_mean' has a negative sum {float(sq_sum.min()):.6g}: mean squares are >= 0")
    gap = sq_sum - mean_sum * mean_sum / n
    rounding = 1e-12 * (np.abs(sq_sum) + mean_sum * mean_sum / n)  # float64 rounding of honest values
    slack = tolerance + (2 * np.abs(mean_sum) * tolerance + tolerance * tolerance) / n + rounding
    bad = gap < -slack
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        mean_square, squared_mean = float(sq_sum[j]) / n, (float(mean_sum[j]) / n) ** 2
        raise InvalidSum(
            f"feature {j}: mean square {mean_square:.6g} < squared mean {squared_mean:.6g} "
            f"(a negative variance) in {int(bad.sum())} feature(s)"
        )


def checked_standardisation(
    spec: AlgorithmSpec, shape: FederationShape, sums: Mapping[str, np.ndarray], contributors: int, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """The set-up round's input standardisation from a sum that passed :func:`check_round_sum`
    (raises :class:`InvalidSum` otherwise; the caller changes no state)."""
    check_round_sum(spec, shape, "setup", sums, contributors, round_value_range("setup"), tolerance)
    mean, std = standardisation_from_sums(dict(sums))
    _require_finite({"feature mean": mean, "feature std": std})
    return mean, std


def checked_aggregate(
    spec: AlgorithmSpec,
    shape: FederationShape,
    state: ServerState,
    sums: Mapping[str, np.ndarray],
    contributors: int,
    tolerance: float,
    optimizer: ServerOptimizer | None = None,
) -> ServerState:
    """The next server state from a training round's sum that passed :func:`check_round_sum`
    (raises :class:`InvalidSum` otherwise; ``state`` is never modified)."""
    check_round_sum(spec, shape, "train", sums, contributors, round_value_range("train"), tolerance)
    new = aggregate(spec, state, dict(sums), shape.model, optimizer, contributors)
    _require_finite({"parameters": new.params, "consensus": new.consensus})
    return new


def _require_finite(arrays: Mapping[str, np.ndarray | None]) -> None:
    for name, array in arrays.items():
        if array is not None and not np.all(np.isfinite(array)):
            raise InvalidSum(f"the aggregated {name} would contain NaN or infinite values")
