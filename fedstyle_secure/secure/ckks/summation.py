"""``--secure ckks``: in-process driver of the CKKS summation (artists encrypt, the server checks and
keeps the ciphertexts, a committee of two contributors sums them itself and decrypts).

The driver plays every role in one process but keeps them honest: the server half only ever
touches serialised ciphertexts, checked against the public context (no secret key); the
committee is chosen by the transport's public rule
(:func:`~fedstyle_secure.secure.ckks.decryption.decryption_committee`) and sums with the same
:class:`~fedstyle_secure.secure.ckks.primitives.CkksSum`; the byte counts reported are the serialised
message sizes the gRPC transport sends (a committee member downloads every other contributor's
ciphertext; the others receive nothing from the summation).  In one process nobody can lie, so
the signatures and commitments of :mod:`~fedstyle_secure.secure.ckks.decryption` are left out.

Dropouts (phase names of :class:`~fedstyle_secure.secure.api.DropoutSchedule`):
``upload`` -- the artist never sends its ciphertext and is not in the sum;
``download`` -- it sent its ciphertext (counted) but is not available to decrypt (the committee
is chosen among the others; the transport would retry the attempt if a member vanished).
CKKS needs no recovery step: the sum is over whatever arrived.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.randomness import CsprngNoise
from fedstyle_secure.secure.api import AggregationResult, DropoutSchedule
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE, Attempt, decryption_committee
from fedstyle_secure.secure.ckks.primitives import (
    CkksContext,
    CkksParams,
    CkksSum,
    EncryptedVector,
    encrypt,
    released_plaintext,
    require_public,
)

CKKS_DROPOUT_PHASES: tuple[str, ...] = ("upload", "download")


@dataclass(frozen=True)
class RoundTimings:
    """Wall-clock compute of the last round, in seconds, split by role (excludes transport)."""

    artist_seconds: Mapping[str, float] = field(default_factory=dict)
    server_seconds: float = 0.0


def _value_bound(clip_range: tuple[float, float] | None, max_clients: int, params: CkksParams) -> float | None:
    """Largest |sum| of ``max_clients`` in-range inputs; ConfigError if it exceeds the CKKS headroom."""
    if clip_range is None:
        return None
    low, high = (float(v) for v in clip_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"clip range must be finite with low < high, got {clip_range}")
    bound = max(1, max_clients) * max(abs(low), abs(high))
    if bound > params.max_abs_value:
        raise ConfigError(
            f"{max_clients} inputs in {clip_range} can sum to {bound:.4g}, beyond the CKKS headroom "
            f"{params.max_abs_value:.4g} of {params.to_json()}"
        )
    return bound


class CkksSummation:
    """Sum artists' vectors under CKKS; the server half holds only the public context.

    ``secret_context`` is the artists' shared secret context and ``server_context`` the server's
    public one (both from ``fedstyle keys``); when omitted a fresh key set with ``params`` is made
    (in-process simulation).  ``weights`` in :meth:`sum` are public plaintext multipliers the
    committee applies homomorphically (weighted sums; put a count entry in the vector for weighted means).

    CKKS wraps around silently when a value exceeds the modulus headroom
    (:attr:`CkksParams.max_abs_value`).  Given ``clip_range`` and ``max_clients``, the constructor
    checks that ``max_clients`` in-range inputs cannot overflow and :meth:`sum` refuses inputs
    outside the range (and weights whose total magnitude would overflow).
    """

    mode = "ckks"

    def __init__(
        self,
        artist_ids: Sequence[str] | None = None,
        *,
        params: CkksParams | None = None,
        secret_context: CkksContext | None = None,
        server_context: CkksContext | None = None,
        clip_range: tuple[float, float] | None = None,
        max_clients: int | None = None,
    ) -> None:
        self.artist_ids = tuple(artist_ids) if artist_ids is not None else None
        self._secret = secret_context or CkksContext.generate(params)
        self._noise = CsprngNoise()  # floods the released decryption, as a committee member's does
        if not self._secret.has_secret_key:
            raise SecureAggregationError("the artists' CKKS context has no secret key")
        if params is not None and params != self._secret.params:
            raise ConfigError(f"CKKS params {params} differ from the given secret context's {self._secret.params}")
        self._server_context = require_public(server_context or self._secret.public())
        if self._server_context.fingerprint != self._secret.fingerprint:
            raise SecureAggregationError("server and artist CKKS contexts come from different key sets")
        self.value_bound = _value_bound(clip_range, max_clients or len(self.artist_ids or ()), self.params)
        self.clip_range = clip_range
        self.last_timings = RoundTimings()

    @property
    def params(self) -> CkksParams:
        return self._secret.params

    def sum(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        round_id: int,
        dropouts: DropoutSchedule | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> AggregationResult:
        drops = self._check_dropouts(dropouts, round_id)
        uploaders = [a for a in sorted(inputs) if drops.get(a) != "upload"]
        receivers = [a for a in uploaders if drops.get(a) != "download"]
        if not uploaders:
            raise SecureAggregationError(f"round {round_id}: no artist contributed")
        if not receivers:
            raise SecureAggregationError(f"round {round_id}: every contributor dropped before receiving the aggregate")
        self._check_roster(inputs, round_id)
        self._check_ranges({a: inputs[a] for a in uploaders}, weights, round_id)
        length = int(np.asarray(inputs[uploaders[0]]).size)
        committee = decryption_committee(Attempt(round_id, 0, self._secret.fingerprint, COMMITTEE_SIZE), receivers)

        total, bytes_up, artist_seconds, server_seconds, sum_seconds = self._encrypt_and_sum(
            {a: inputs[a] for a in uploaders}, length, weights, round_id
        )

        # Every committee member sums the same ciphertexts and decrypts; the simulation does it
        # once and charges its time to each member.
        started = time.perf_counter()
        plaintext = released_plaintext(total.result(), self._noise)
        for artist in committee:
            artist_seconds[artist] += sum_seconds + time.perf_counter() - started
        self.last_timings = RoundTimings(artist_seconds=artist_seconds, server_seconds=server_seconds)
        everyone = sum(bytes_up.values())
        return AggregationResult(
            total=plaintext,
            contributors=tuple(uploaders),
            dropped=tuple(sorted(drops)),
            bytes_up=bytes_up,
            bytes_down={a: everyone - bytes_up[a] if a in committee else 0 for a in receivers},
        )

    def _encrypt_and_sum(
        self, inputs: Mapping[str, np.ndarray], length: int, weights: Mapping[str, float] | None, round_id: int
    ) -> tuple[CkksSum, dict[str, int], dict[str, float], float, float]:
        """Artists encrypt, the server checks each upload against its public context, the committee
        adds it to its own sum; returns that sum, bytes sent per artist, artist seconds, server
        seconds and the committee's summing seconds."""
        if weights is not None and set(inputs) - set(weights):
            raise SecureAggregationError(f"round {round_id}: no weight for {sorted(set(inputs) - set(weights))}")
        total = CkksSum(self._secret, length)
        artist_seconds: dict[str, float] = {}
        bytes_up: dict[str, int] = {}
        server_seconds = sum_seconds = 0.0
        for artist, vector in inputs.items():
            started = time.perf_counter()
            upload = encrypt(self._secret, vector).serialize()
            artist_seconds[artist] = time.perf_counter() - started
            bytes_up[artist] = len(upload)
            what = f"round {round_id} ciphertext of {artist!r}"
            started = time.perf_counter()
            EncryptedVector.load(self._server_context, upload, length=length, what=what, fresh=True)
            server_seconds += time.perf_counter() - started
            started = time.perf_counter()
            total.add(upload, what=what, weight=None if weights is None else weights[artist])
            sum_seconds += time.perf_counter() - started
        return total, bytes_up, artist_seconds, server_seconds, sum_seconds

    def _check_dropouts(self, dropouts: DropoutSchedule | None, round_id: int) -> dict[str, str]:
        drops = dict(dropouts.drops) if dropouts else {}
        unknown = {phase for phase in drops.values() if phase not in CKKS_DROPOUT_PHASES}
        if unknown:
            raise ConfigError(f"round {round_id}: CKKS dropout phases are {CKKS_DROPOUT_PHASES}, got {sorted(unknown)}")
        return drops

    def _check_ranges(
        self, inputs: Mapping[str, np.ndarray], weights: Mapping[str, float] | None, round_id: int
    ) -> None:
        if self.clip_range is None:
            return
        low, high = self.clip_range
        for artist, vector in inputs.items():
            values = np.asarray(vector, dtype=np.float64)
            if values.size and not (values.min() >= low and values.max() <= high):
                raise SecureAggregationError(
                    f"round {round_id}: input of {artist!r} leaves the clip range [{low}, {high}] "
                    f"(min {values.min():.4g}, max {values.max():.4g})"
                )
        scale = sum(abs(weights.get(a, 0.0)) for a in inputs) if weights is not None else len(inputs)
        if scale * max(abs(low), abs(high)) > self.params.max_abs_value:
            raise SecureAggregationError(
                f"round {round_id}: a sum of {len(inputs)} inputs in [{low}, {high}] with total weight {scale:.4g} "
                f"may exceed the CKKS headroom {self.params.max_abs_value:.4g}"
            )

    def _check_roster(self, inputs: Mapping[str, np.ndarray], round_id: int) -> None:
        if self.artist_ids is None:
            return
        strangers = sorted(set(inputs) - set(self.artist_ids))
        if strangers:
            raise SecureAggregationError(f"round {round_id}: artists {strangers} are not in the key set's roster")
