"""One artist's DP plan and budget ledger, built the same way wherever the artist runs.

The in-process simulator (:func:`fedstyle_secure.federation.simulator.make_clients`) and the
gRPC artist process (:mod:`fedstyle_secure.transport.artist.privacy`) both call these two
functions, so a networked artist calibrates exactly like a simulated one: DP-SGD noise and
prototype-release noise from :func:`~fedstyle_secure.training.dp.plan_dp`, over the artist's
own (private) number of artworks ``n``, its local batch size and epochs, the run's rounds and
the rounds whose prototype publication is a Gaussian release.

Privacy unit: one artwork (record-level); epsilon and delta are per artwork, never per artist.
"""

from __future__ import annotations

from fedstyle_secure.federation.strategy import AlgorithmSpec
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.training.dp import DpConfig, DpPlan, plan_dp
from fedstyle_secure.training.local import LocalConfig


def training_release_rounds(spec: AlgorithmSpec, refreshes: frozenset[int]) -> frozenset[int]:
    """Training rounds ``r`` in which the artist releases its prototypes (none if the algorithm
    never publishes them during training); the final publication (round ``rounds``) comes on top."""
    return frozenset(refreshes) if spec.uses_prototypes else frozenset()


def plan_participation(
    dp: DpConfig, n_train: int, local: LocalConfig, rounds: int, release_rounds: frozenset[int]
) -> DpPlan:
    """The calibrated mechanisms of an artist with ``n_train`` artworks over ``rounds`` rounds:
    DP-SGD every round, a Gaussian prototype release in each of ``release_rounds`` and the final
    publication, together spending ``dp.epsilon`` at the plan's delta.  Raises PrivacyError
    (e.g. ``delta >= 1 / n_train``)."""
    return plan_dp(dp, n_train, local.batch_size, local.epochs, rounds, len(release_rounds), frozenset(release_rounds))


def new_ledger(plan: DpPlan, n_train: int, epsilon: float, delta: float | None = None) -> BudgetLedger:
    """An empty ledger enforcing ``(epsilon, delta)`` (``delta`` defaults to the plan's) under
    the plan's accountant.  Raises PrivacyError for a delta that is not below ``1 / n_train``."""
    return BudgetLedger(PrivacyBudget(epsilon, plan.delta if delta is None else delta), n_train, plan.accountant)
