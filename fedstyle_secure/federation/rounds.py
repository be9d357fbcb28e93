"""The rules of a run's rounds: one home, driven by the in-process simulator
(:func:`~fedstyle_secure.federation.simulator.run_simulation`) and the server's round engine
(:class:`~fedstyle_secure.federation.coordinator.Coordinator`) alike.  Pure: no I/O, no clock.

**Round ids** (one numbering, on the wire and in the engine): ``0`` is the set-up round (a
secure sum of feature moments; only when the run standardises its inputs), ``1..R`` are the
training rounds and ``R + 1`` is the final publication.  **Plan rounds** ``r`` are what the DP
plan, the budget ledger and the signed epsilon reports count: training round id ``i`` is
``r = i - 1`` and the final publication is ``r = R`` (:func:`plan_round`, :func:`round_id_of`).

**Refreshes**: the plan rounds ``r < R`` in which artists refresh their prototypes before
training (a Gaussian release under DP); the final publication always publishes.  Artists
*send* a refreshed prototype to the server only when the algorithm shares prototypes
(:meth:`RoundRules.sends_prototypes`); otherwise it is their own (``local``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedstyle_secure.federation.strategy import AlgorithmSpec

if TYPE_CHECKING:
    from fedstyle_secure.privacy.plan import DpConfig

SETUP, TRAIN, FINAL = "setup", "train", "final"
SETUP_ROUND_ID = 0


def refresh_rounds(rounds: int, max_refreshes: int | None) -> frozenset[int]:
    """Plan rounds at which artists refresh prototypes during training: all of them without a
    limit, else ``max_refreshes`` evenly spaced rounds starting with round 0."""
    if max_refreshes is None or max_refreshes >= rounds:
        return frozenset(range(rounds))
    return frozenset(int(i * rounds / max_refreshes) for i in range(max_refreshes))


def default_refresh_rounds(rounds: int, dp: DpConfig | None) -> frozenset[int]:
    """The refreshes of a federation that names none, the simulator's and the server's alike: every
    training round without DP; under DP ``dp.prototype_refreshes`` evenly spaced ones (each release
    splits the budget; 0: none, the final publication only)."""
    return refresh_rounds(rounds, None if dp is None else dp.prototype_refreshes)


def plan_round(round_id: int) -> int:
    """The plan round ``r`` of a training round or the final publication (``round_id >= 1``)."""
    if round_id < 1:
        raise ValueError(f"round id {round_id} is the set-up round; it has no plan round")
    return round_id - 1


def round_id_of(plan_round_index: int) -> int:
    """The round id of plan round ``r`` (training round ``r``, or the final publication ``R``)."""
    return plan_round_index + 1


def round_kind(round_id: int, rounds: int) -> str:
    """``setup`` (round 0), ``train`` (1..rounds) or ``final`` (rounds + 1, publication only)."""
    if round_id == SETUP_ROUND_ID:
        return SETUP
    return FINAL if round_id > rounds else TRAIN


@dataclass(frozen=True)
class RoundRules:
    """What happens in which round of one run of ``spec`` with ``rounds`` training rounds."""

    spec: AlgorithmSpec
    rounds: int
    refreshes: frozenset[int] = frozenset()  # plan rounds r < rounds

    @property
    def final_round_id(self) -> int:
        return self.rounds + 1

    def training_round_ids(self) -> range:
        return range(1, self.rounds + 1)

    def kind(self, round_id: int) -> str:
        return round_kind(round_id, self.rounds)

    def refreshes_prototypes(self, round_id: int) -> bool:
        """Whether artists (re)compute their prototypes at the start of ``round_id``: at every
        refresh of an algorithm that uses prototypes, and at the final publication."""
        kind = self.kind(round_id)
        if kind == FINAL:
            return True
        return kind == TRAIN and self.spec.uses_prototypes and plan_round(round_id) in self.refreshes

    def sends_prototypes(self, round_id: int) -> bool:
        """Whether the refreshed prototypes go to the server (a ``publish`` phase): at the final
        publication, and at refreshes of algorithms that share prototypes."""
        if not self.refreshes_prototypes(round_id):
            return False
        return self.kind(round_id) == FINAL or self.spec.shares_prototypes

    def release_plan_rounds(self) -> frozenset[int]:
        """Plan rounds ``r < R`` with a prototype refresh: the releases each artist's DP plan counts
        before the final publication (which comes on top)."""
        return frozenset(plan_round(i) for i in self.training_round_ids() if self.refreshes_prototypes(i))
