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

import math

from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.training.dp import DpConfig, DpPlan, plan_dp
from fedstyle_secure.training.local import LocalConfig


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


DP_EMBEDDING_DIM = 32
"""Embedding (= released prototype) dimension under DP.  The Gaussian release adds noise of norm
``sigma * sqrt(d)`` to a prototype sum of norm at most ``n``; with a dozen artworks, 32 dimensions
kept more of the public-whitened statistics' accuracy after the release than 16, 64 or 128 (measured
on painters-dev and wikiart-dev at epsilon 8 and 2; README, Differential privacy)."""
WHITENING_MIN_EPSILON = 2.0
"""Below this epsilon the head's public projection is plain PCA instead of PCA whitening: whitening
lifts low-variance directions, which carry mostly release noise when the noise is that strong
(measured on painters-dev at epsilon 1: whitened 0.15 against plain 0.17)."""
PLAIN_PCA_SHRINKAGE = math.inf


def encoder_config_for(dp: DpConfig | None, backbone: str = DEFAULT_BACKBONE) -> EncoderConfig:
    """The encoder of a run: the defaults without DP; under DP a :data:`DP_EMBEDDING_DIM`-dimensional
    embedding, PCA-whitened from public images at epsilon >= :data:`WHITENING_MIN_EPSILON`, plain
    PCA below.  A rule on the public epsilon only: every party (simulator, artists, the server's
    index) derives the same encoder from the announced plan."""
    if dp is None:
        return EncoderConfig(backbone=backbone)
    shrinkage = 0.0 if dp.epsilon >= WHITENING_MIN_EPSILON else PLAIN_PCA_SHRINKAGE
    return EncoderConfig(backbone=backbone, embedding_dim=DP_EMBEDDING_DIM, whitening_shrinkage=shrinkage)
