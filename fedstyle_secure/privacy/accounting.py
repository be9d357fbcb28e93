"""The project's privacy accountant: epsilon of a mechanism history at a given delta.

Backed by Opacus's analyses (this is what the training loop reports and the budget
enforces). The audit never trusts these numbers: it recomputes them with Google's
``dp_accounting`` in :mod:`fedstyle_secure.privacy.recompute`, which shares no code with
this module.

Accountants (all assume Poisson-subsampled Gaussian steps, add/remove-one-artwork
neighbouring datasets):

- ``"prv"`` (default) -- numerical composition of privacy loss random variables
  (Gopi et al. 2021). A sound upper bound, tight to about ``PRV_EPS_ERROR`` in epsilon.
- ``"rdp"`` -- Renyi DP over :data:`RDP_ORDERS` with the improved RDP -> (epsilon, delta)
  conversion of Balle et al. 2020 (Thm. 21), the same conversion and order grid as
  ``dp_accounting``'s ``RdpAccountant``; so both agree to floating-point precision.
  Sound but looser than PRV (about 10-15 % for typical DP-SGD).
- ``"gdp"`` -- Gaussian DP via the central limit theorem (Dong et al. 2019). An
  APPROXIMATION that can UNDERESTIMATE epsilon (11 % too low at q=0.01, sigma=1,
  1000 steps); kept for comparison with the literature, never recommended for budgets.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.mechanisms import Mechanism, SampledGaussian, non_poisson_groups

ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp", "gdp")
BUDGET_ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")
"""The accountants a budget is enforced with: sound upper bounds only.  ``gdp`` computes epsilon for
comparison (reports may list it) but never decides what an artist may spend: a server announcing it
would otherwise have artists spend past their budgets (red-team review, 2026-11-30: an artist with
a budget of 8 spent 9.0 by PRV, 10.2 by RDP)."""
DEFAULT_ACCOUNTANT = "prv"

#: RDP orders: 1.1 ... 10.9 in steps of 0.1, 11 ... 63, and 128 ... 1024 (large orders
#: matter for tiny epsilons, e.g. heavily noised releases).
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
)

#: Additive epsilon accuracy requested from the PRV accountant (its result is an upper bound).
PRV_EPS_ERROR = 0.01

_GDP_MAX_EPSILON = 500.0


def require_known_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"unknown accountant {accountant!r}; expected one of {list(ACCOUNTANTS)}")


def require_budget_accountant(accountant: str) -> None:
    """Raise :class:`PrivacyError` unless ``accountant`` may enforce a budget (:data:`BUDGET_ACCOUNTANTS`)."""
    if accountant not in BUDGET_ACCOUNTANTS:
        raise PrivacyError(
            f"accountant {accountant!r} cannot enforce a privacy budget; use one of {list(BUDGET_ACCOUNTANTS)}"
            + (" (gdp is a central-limit approximation that can underestimate epsilon)" if accountant == "gdp" else "")
        )


def require_valid_delta(delta: float) -> None:
    if not (0.0 < delta < 1.0):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


def sampled_gaussians(history: Iterable[Mechanism]) -> list[SampledGaussian]:
    """The accounting view of ``history``, refusing batches that were not Poisson-sampled.

    Steps with identical (sample rate, noise multiplier) are merged: composition is
    commutative, and fewer groups make PRV composition faster.
    """
    history = tuple(history)
    unsupported = non_poisson_groups(history)
    if unsupported:
        samplers = sorted({m.sampler for m in unsupported})
        raise PrivacyError(
            f"DP-SGD with sampler(s) {samplers} cannot be accounted: every accountant here assumes "
            "Poisson sampling (use Opacus's Poisson sampler, i.e. DPDataLoader)"
        )
    steps: Counter[tuple[float, float]] = Counter()
    for mechanism in history:
        group = mechanism.as_sampled_gaussian()
        steps[(group.sample_rate, group.noise_multiplier)] += group.steps
    return [SampledGaussian(q, sigma, count) for (q, sigma), count in steps.items()]


def epsilon_of_groups(groups: Sequence[SampledGaussian], delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Epsilon (at ``delta``) of composing ``groups`` under ``accountant``; 0.0 for no groups.

    A pure function of its arguments, so each value is computed once per process (the costliest
    step of calibration: 0.1-0.5 s per PRV composition) and may be handed in from another process
    running this code (:func:`remember_epsilons`)."""
    require_known_accountant(accountant)
    require_valid_delta(delta)
    if not groups:
        return 0.0
    key: EpsilonKey = (accountant, tuple(groups), float(delta))
    known = _KNOWN_EPSILONS.get(key)
    if known is None:
        if len(_KNOWN_EPSILONS) >= _MAX_KNOWN_EPSILONS:
            _KNOWN_EPSILONS.clear()
        known = _KNOWN_EPSILONS[key] = _evaluator(*key)
    return known


#: (accountant, groups, delta): the arguments of one epsilon evaluation.
EpsilonKey = tuple[str, tuple[SampledGaussian, ...], float]
EpsilonEvaluator = Callable[[str, tuple[SampledGaussian, ...], float], float]
_KNOWN_EPSILONS: dict[EpsilonKey, float] = {}
_MAX_KNOWN_EPSILONS = 65_536  # a long sweep's calibrations stay bounded


def evaluate_epsilon(accountant: str, groups: tuple[SampledGaussian, ...], delta: float) -> float:
    """Epsilon of ``groups`` at ``delta`` under ``accountant``, computed here with Opacus (unremembered)."""
    with warnings.catch_warnings():
        # Opacus's RDP analysis (also used by PRV to size its domain) warns "Optimal order is
        # the smallest/largest alpha": the bound is still valid, only possibly looser.
        warnings.filterwarnings("ignore", message="Optimal order is the")
        try:
            return _EPSILON_FUNCTIONS[accountant](groups, delta)
        except (ArithmeticError, MemoryError, ValueError) as exc:  # fail closed, as one error a plan can handle
            raise PrivacyError(f"the {accountant} accountant cannot evaluate this history: {exc!r}") from exc


_evaluator: EpsilonEvaluator = evaluate_epsilon


def evaluate_epsilons_with(evaluator: EpsilonEvaluator) -> None:
    """Compute this process's epsilon values not yet known with ``evaluator`` (e.g.
    :func:`evaluate_epsilon` in a child process, so this one never imports Opacus); it must return
    exactly what :func:`evaluate_epsilon` returns."""
    global _evaluator
    _evaluator = evaluator


def known_epsilons() -> dict[EpsilonKey, float]:
    """The epsilon values this process has computed (or been handed), by evaluation arguments."""
    return dict(_KNOWN_EPSILONS)


def remember_epsilons(values: dict[EpsilonKey, float]) -> None:
    """Take epsilon values computed by :func:`evaluate_epsilon` in another process of this code."""
    _KNOWN_EPSILONS.update(values)


def compute_epsilon(history: Iterable[Mechanism], delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Epsilon spent by a mechanism history at ``delta``, per the project's ``accountant``."""
    return epsilon_of_groups(sampled_gaussians(history), delta, accountant)


# Opacus is imported on first use in the three functions below: importing it pulls in about 120 MB
# (its whole package, scipy.stats, sympy) that a process without DP never needs (measured RSS of
# `import torch` 225 MB, `import torch, opacus` 342 MB).


def _prv_epsilon(groups: Sequence[SampledGaussian], delta: float) -> float:
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(g.noise_multiplier, g.sample_rate, g.steps) for g in groups]
    # Sample rate 1.0 (a plain Gaussian release) makes Opacus evaluate log(1 - q) = -inf in a
    # branch it then discards; the result is correct, only the numpy warning is spurious.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        try:
            return float(accountant.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR))
        except (RuntimeError, ValueError, OverflowError) as exc:  # Opacus's PRV domain breaks down
            smallest = min(groups, key=lambda g: g.noise_multiplier)
            raise PrivacyError(
                f"the prv accountant cannot evaluate noise multiplier {smallest.noise_multiplier:.3g} at sample rate "
                f"{smallest.sample_rate:.3g} (Opacus: {exc}); such a small noise means an epsilon far beyond any "
                "meaningful budget: use a smaller --epsilon, or --accountant rdp"
            ) from exc


def _rdp_epsilon(groups: Sequence[SampledGaussian], delta: float) -> float:
    from opacus.accountants.analysis import rdp as opacus_rdp

    rdp = sum(
        opacus_rdp.compute_rdp(q=g.sample_rate, noise_multiplier=g.noise_multiplier, steps=g.steps, orders=RDP_ORDERS)
        for g in groups
    )
    epsilon, _ = opacus_rdp.get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=delta)
    # The improved conversion can go negative for negligible RDP; epsilon is never below 0.
    return max(0.0, float(epsilon))


def _gdp_mu(group: SampledGaussian) -> float:
    """mu of ``group``: exact for plain Gaussian releases, CLT approximation for subsampled steps."""
    from opacus.accountants.analysis import gdp as opacus_gdp

    if group.sample_rate == 1.0:
        return math.sqrt(group.steps) / group.noise_multiplier
    return float(
        opacus_gdp.compute_mu_poisson(
            steps=group.steps, noise_multiplier=group.noise_multiplier, sample_rate=group.sample_rate
        )
    )


def _gdp_epsilon(groups: Sequence[SampledGaussian], delta: float) -> float:
    from opacus.accountants.analysis import gdp as opacus_gdp

    mu = math.sqrt(sum(_gdp_mu(g) ** 2 for g in groups))  # mu-GDP composes in quadrature
    if opacus_gdp.delta_eps_mu(eps=_GDP_MAX_EPSILON, mu=mu) > delta:
        return math.inf  # beyond Opacus's root bracket [0, 500]: no meaningful guarantee
    return float(opacus_gdp.eps_from_mu(mu=mu, delta=delta))


_EPSILON_FUNCTIONS: dict[str, Callable[[Sequence[SampledGaussian], float], float]] = {
    "prv": _prv_epsilon,
    "rdp": _rdp_epsilon,
    "gdp": _gdp_epsilon,
}
