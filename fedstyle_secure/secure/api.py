"""The one interface every aggregation protection implements.

A *summation* turns each participating artist's float vector into whatever its protection
sends (the vector itself, CKKS ciphertexts, or masked fixed-point words), lets the server
combine them, and returns the **sum of the surviving artists' vectors** -- never any single
one.  The FedStyle server only ever needs sums (and counts, which are summed as ordinary
vector entries), so every algorithm runs unchanged on ``none``, ``ckks`` and ``secagg``.

Implementations are pure state machines plus an in-process driver (``sum``); the gRPC
transport drives the same state machines over the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from fedstyle_secure.errors import SecureAggregationError

SECURE_MODES: tuple[str, ...] = ("none", "ckks", "secagg", "secagg+")
DEFAULT_MIN_QUORUM = 2
"""An artist's default floor (``client.min_quorum``) on the inputs of a sum it helps reveal, whatever
quorum or participant list a server announces: a masking artist joins no session that could reveal a
smaller sum that holds its input; under CKKS the artist signs only when the announced committee size
is at least its floor, and the committee size bounds every combination of a round's decrypted sums
(nested sets with disjoint committees included; ``secure/ckks/decryption.py``), as long as one
committee member is honest -- the CKKS threat model already gives a curious member every
contribution.  The floor is also signed into the contribution, and no committee member decrypts a
set smaller than the largest floor in it.  2 keeps every single input from
the server; 3 also keeps it from the one other artist of a two-input sum (who learns the sum from
the next broadcast), in the masking modes."""


@dataclass(frozen=True)
class DropoutSchedule:
    """Which artists vanish, and at which protocol phase (names are protocol specific).

    ``drops`` maps artist id -> phase name at whose start the artist stops answering.
    Used by tests, benchmarks and the simulator to exercise dropout recovery.
    """

    drops: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregationResult:
    """Outcome of one secure summation.

    ``total`` is the float64 sum of the contributors' input vectors (exact up to the
    protection's encoding precision).  ``bytes_up``/``bytes_down`` count the bytes each
    artist sent to / received from the server in this summation (payload bytes of the
    serialised messages, excluding TLS/gRPC framing).
    """

    total: np.ndarray
    contributors: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    bytes_up: Mapping[str, int] = field(default_factory=dict)
    bytes_down: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class SecureSummation(Protocol):
    """Sum float vectors of several artists without revealing any single one to the server."""

    mode: str

    def sum(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        round_id: int,
        dropouts: DropoutSchedule | None = None,
    ) -> AggregationResult:
        """Return the sum of the surviving artists' 1-D float vectors (all the same length).

        Raises :class:`fedstyle_secure.errors.SecureAggregationError` when the round
        cannot complete (e.g. fewer survivors than the threshold); never returns a partial
        or unprotected result.
        """
        ...


class PlainSummation:
    """``--secure none``: the server sees every vector (the baseline the others are measured against)."""

    mode = "none"

    def sum(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        round_id: int,
        dropouts: DropoutSchedule | None = None,
    ) -> AggregationResult:
        dropped = tuple(sorted(dropouts.drops)) if dropouts else ()
        survivors = [a for a in sorted(inputs) if a not in dropped]
        if not survivors:
            raise SecureAggregationError(f"round {round_id}: no artist contributed")
        dims = {np.shape(inputs[a]) for a in survivors}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise SecureAggregationError(
                f"round {round_id}: inputs must be 1-D vectors of one length, got {sorted(dims)}"
            )
        total = np.zeros(next(iter(dims)), dtype=np.float64)
        for a in survivors:  # one at a time, in order: no (artists x length) stack in memory
            total += np.asarray(inputs[a], dtype=np.float64)
        nbytes = {a: int(np.asarray(inputs[a], dtype=np.float32).nbytes) for a in survivors}
        return AggregationResult(
            total=total,
            contributors=tuple(survivors),
            dropped=dropped,
            bytes_up=nbytes,
            bytes_down={a: int(total.astype(np.float32).nbytes) for a in survivors},
        )
