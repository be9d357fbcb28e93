"""An artist's lifetime privacy spend: what every run (every per-run ledger) spent on each artwork.

A run's :class:`~fedstyle_secure.privacy.budget.BudgetLedger` composes the mechanisms of ONE run
exactly.  Runs on the same artworks compose too: an artwork that took part in runs spending
``(eps_1, delta_1)`` and ``(eps_2, delta_2)`` is ``(eps_1 + eps_2, delta_1 + delta_2)``-DP over both
(basic composition; each run keeps its own accountant and delta, so nothing tighter is claimed).
The lifetime spend of a portfolio is the largest such sum over its artworks, and the lifetime gate
refuses a charge that would take it above the artist's lifetime epsilon, or the summed delta above
the lifetime delta.

Pure: runs are passed in, nothing is read or written here (the SQLite store is
:mod:`fedstyle_secure.transport.artist.lifetime_ledger`).  Privacy unit: one artwork, as everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

EPSILON_SLACK = 1e-9
"""Relative slack of the lifetime gate (floating-point sums of the same epsilons in another order)."""


@dataclass(frozen=True)
class RunSpend:
    """What one run (``run_key``: one per-run ledger) spent on each of its ``artworks`` (content
    digests): ``epsilon`` at the run's ``delta``."""

    run_key: str
    epsilon: float
    delta: float
    artworks: frozenset[str]


@dataclass(frozen=True)
class PortfolioSpend:
    """The lifetime spend of a portfolio: the largest per-artwork sums of epsilon and of delta over the
    runs each artwork took part in (every artwork is (epsilon, delta)-DP over all of them), and how many
    runs touched the portfolio at all."""

    epsilon: float
    delta: float
    runs: int


@dataclass(frozen=True)
class LifetimeDecision:
    """Outcome of a lifetime check: ``others`` is what other runs spent on the portfolio, ``run_epsilon``
    what this run would have spent after the charge (its own ledger's epsilon)."""

    allowed: bool
    others: PortfolioSpend
    run_epsilon: float
    run_delta: float
    limit: float
    delta_limit: float

    @property
    def epsilon_after(self) -> float:
        return self.others.epsilon + self.run_epsilon

    @property
    def delta_after(self) -> float:
        return self.others.delta + self.run_delta

    @property
    def reason(self) -> str:
        verdict = "within" if self.allowed else "would exceed"
        return (
            f"{self.others.runs} earlier run(s) spent epsilon {self.others.epsilon:.4g} (delta "
            f"{self.others.delta:.3g}) on these artworks and this run would reach {self.run_epsilon:.4g} (delta "
            f"{self.run_delta:.3g}): {self.epsilon_after:.4g} ({self.delta_after:.3g}) in all, which {verdict} the "
            f"lifetime budget epsilon={self.limit:.4g}, delta={self.delta_limit:.3g}"
        )


def portfolio_spend(
    runs: Iterable[RunSpend], portfolio: frozenset[str], *, excluding: str | None = None
) -> PortfolioSpend:
    """The lifetime spend of ``portfolio`` (artwork keys) over ``runs``, leaving out run ``excluding``:
    for each artwork the sums of epsilon and delta over the runs that held it; the largest of each is
    the portfolio's."""
    epsilons: dict[str, float] = {}
    deltas: dict[str, float] = {}
    touching = 0
    for run in runs:
        if run.run_key == excluding:
            continue
        shared = run.artworks & portfolio
        touching += bool(shared)
        for artwork in shared:
            epsilons[artwork] = epsilons.get(artwork, 0.0) + run.epsilon
            deltas[artwork] = deltas.get(artwork, 0.0) + run.delta
    return PortfolioSpend(max(epsilons.values(), default=0.0), max(deltas.values(), default=0.0), touching)


def check_lifetime(
    runs: Iterable[RunSpend],
    portfolio: frozenset[str],
    run_key: str,
    run: tuple[float, float],
    limit: tuple[float, float],
) -> LifetimeDecision:
    """Whether run ``run_key`` may reach ``run = (epsilon, delta)`` (its own ledger's after the charge) on
    ``portfolio`` while every artwork's lifetime epsilon and delta stay within ``limit = (epsilon, delta)``
    (many runs' deltas add up: a sum near 1 would guarantee nothing)."""
    (run_epsilon, run_delta), (limit_epsilon, limit_delta) = run, limit
    if not (math.isfinite(limit_epsilon) and limit_epsilon > 0):
        raise ValueError(f"lifetime epsilon must be a positive finite number, got {limit_epsilon!r}")
    if not (0 < limit_delta < 1):
        raise ValueError(f"lifetime delta must be in (0, 1), got {limit_delta!r}")
    if not (math.isfinite(run_epsilon) and run_epsilon >= 0 and 0 <= run_delta < 1):
        raise ValueError(f"a run's epsilon must be finite >= 0 and its delta in [0, 1), got {run!r}")
    others = portfolio_spend(runs, portfolio, excluding=run_key)
    allowed = others.epsilon + run_epsilon <= limit_epsilon * (
        1 + EPSILON_SLACK
    ) and others.delta + run_delta <= limit_delta * (1 + EPSILON_SLACK)
    return LifetimeDecision(allowed, others, run_epsilon, run_delta, limit_epsilon, limit_delta)
