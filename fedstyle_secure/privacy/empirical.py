"""Empirical lower bound on epsilon from one training run (pure math, no I/O).

Steinke, Nasr & Jagielski, *Privacy auditing with one (1) training run*, NeurIPS 2023
(arXiv:2305.08846): ``m`` canaries are each included in the training set independently with
probability 1/2; after training, an auditor guesses "in" or "out" for ``r`` of them (abstaining
on the rest) and is right ``v`` times.  If training is epsilon-DP, the number of correct guesses
is stochastically dominated by ``Binomial(r, e^eps / (1 + e^eps))``; for (epsilon, delta)-DP
their Corollary 5.4 bounds the p-value of ``v`` correct guesses by

    P[Binomial(r, q) >= v] + 2 m delta * max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i,
    q = e^eps / (1 + e^eps).

Every epsilon whose p-value is below ``beta = 1 - confidence`` is refuted, and the largest of
them is a lower bound on the true epsilon that holds with probability ``>= confidence`` (over
the canary coins and the training randomness).

Assumptions (what makes the bound valid):

- canary inclusion is an independent fair coin per canary, drawn before training and unknown
  to the guesser except through the trained model;
- ``r`` (how many guesses, and the rule choosing them) is fixed before looking at the outcome;
  choosing the best of several ``r`` after the fact needs a union bound over them;
- delta is the claim's delta; ``delta = 0`` gives the pure-epsilon test (slightly larger bounds,
  i.e. optimistic for the auditor when the mechanism is only (epsilon, delta)-DP).

The bound cannot exceed :func:`max_lower_bound` (all ``r`` guesses correct): about 3.5 for
r = 100 and 5.8 for r = 1000 at 95 % confidence and delta = 0.  A one-run audit therefore
cannot refute claims above roughly ``ln(r)``, however broken the training is.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from fedstyle_secure.errors import PrivacyError

DEFAULT_CONFIDENCE = 0.95
_BISECTION_STEPS = 50  # epsilon brackets are O(10), so the result is exact to ~1e-14


def _require_valid(guesses: int, correct: int, canaries: int, delta: float) -> None:
    if guesses < 0 or not 0 <= correct <= guesses:
        raise PrivacyError(f"need 0 <= correct <= guesses, got correct={correct}, guesses={guesses}")
    if not 0.0 <= delta < 1.0:
        raise PrivacyError(f"delta must be in [0, 1), got {delta}")
    if delta and canaries < guesses:
        raise PrivacyError(f"need canaries >= guesses to account for delta, got canaries={canaries}, guesses={guesses}")


def _pure_epsilon_bound(guesses: int, correct: int, beta: float) -> float:
    """Closed form for delta = 0: ``P[Binomial(r, p) >= v] = I_p(v, r - v + 1)`` (regularised
    incomplete beta), so the boundary ``p*`` is the one-sided Clopper-Pearson lower limit
    ``Beta(v, r - v + 1).ppf(beta)`` and the bound is ``logit(p*)`` clipped at 0.  ``1 - p*`` comes
    from the mirrored Beta distribution so the logit stays accurate when ``p*`` is close to 1."""
    if correct == 0:
        return 0.0
    p = stats.beta.ppf(beta, correct, guesses - correct + 1)
    one_minus_p = stats.beta.isf(beta, guesses - correct + 1, correct)
    return 0.0 if p <= one_minus_p else float(math.log(p) - math.log(one_minus_p))


def guess_p_value(guesses: int, correct: int, epsilon: float, *, canaries: int = 0, delta: float = 0.0) -> float:
    """Corollary 5.4's p-value of ``correct`` right guesses out of ``guesses`` among ``canaries``
    canaries, if training were (``epsilon``, ``delta``)-DP (``delta = 0``: the binomial tail)."""
    _require_valid(guesses, correct, canaries, delta)
    q = float(special.expit(epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0.0 or correct == 0:
        return tail
    shortfalls = np.arange(1, correct + 1)
    below = stats.binom.sf(correct - shortfalls - 1, guesses, q) - tail  # P[v - i <= Bin < v]
    alpha = float(np.max(below / shortfalls))
    return min(1.0, tail + 2.0 * canaries * delta * alpha)


def epsilon_lower_bound(
    guesses: int,
    correct: int,
    confidence: float = DEFAULT_CONFIDENCE,
    *,
    canaries: int = 0,
    delta: float = 0.0,
) -> float:
    """Largest epsilon refuted at ``confidence`` by ``correct`` right guesses out of ``guesses``
    (natural-log units; 0 when nothing is refuted).  With ``delta > 0``, ``canaries`` (the total
    ``m``) is required and the claim tested is (epsilon, ``delta``)-DP; the p-value is increasing
    in epsilon, so the boundary is found by bracketing and bisection, keeping the refuted end."""
    _require_valid(guesses, correct, canaries, delta)
    if not 0.0 < confidence < 1.0:
        raise PrivacyError(f"confidence must be in (0, 1), got {confidence}")
    beta = 1.0 - confidence
    if delta == 0.0:
        return _pure_epsilon_bound(guesses, correct, beta)

    def refuted(eps: float) -> bool:
        return guess_p_value(guesses, correct, eps, canaries=canaries, delta=delta) < beta

    if not refuted(0.0):
        return 0.0
    low, high = 0.0, max(1.0, 2.0 * _pure_epsilon_bound(guesses, correct, beta))
    while refuted(high):
        low, high = high, 2.0 * high
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if refuted(middle) else (low, middle)
    return low


def max_lower_bound(
    guesses: int, confidence: float = DEFAULT_CONFIDENCE, *, canaries: int = 0, delta: float = 0.0
) -> float:
    """The largest bound ``guesses`` guesses can ever certify (all correct); for delta = 0,
    ``logit(beta ** (1 / r))``, roughly ``ln(r / ln(1 / beta))``."""
    return epsilon_lower_bound(guesses, guesses, confidence, canaries=canaries, delta=delta)
