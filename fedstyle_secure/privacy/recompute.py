"""Independent recomputation of epsilon with Google's ``dp_accounting`` (used by the audit).

This module deliberately shares NO accounting code with
:mod:`fedstyle_secure.privacy.accounting` (which is built on Opacus), so a bug or a
tampered number there cannot hide from the audit. Only the parsed mechanism records are
shared. Each record becomes a ``dp_accounting`` event, one to one:

- DP-SGD group  -> ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(nm)), steps)``
- Gaussian release -> ``GaussianDpEvent(sigma / sensitivity)``

Neighbouring relation: add/remove one artwork (the Opacus convention). Both results are
sound upper bounds: RDP (improved conversion, dp_accounting's default orders) and PLD
(pessimistic discretisation, interval :data:`PLD_DISCRETIZATION`); PLD is the tighter one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import dp_accounting
from dp_accounting import pld, rdp

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.mechanisms import (
    DpSgdSteps,
    GaussianRelease,
    History,
    Mechanism,
    non_poisson_groups,
)

NEIGHBORING_RELATION = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

#: Privacy-loss discretisation of the PLD accountant (dp_accounting's default; pessimistic rounding).
PLD_DISCRETIZATION = 1e-4

_CACHE_SIZE = 1024


def mechanism_event(mechanism: Mechanism) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of one (Poisson-sampled) mechanism record."""
    if isinstance(mechanism, GaussianRelease):
        return dp_accounting.GaussianDpEvent(mechanism.sigma / mechanism.sensitivity)
    if isinstance(mechanism, DpSgdSteps):
        step = dp_accounting.PoissonSampledDpEvent(
            mechanism.sample_rate, dp_accounting.GaussianDpEvent(mechanism.noise_multiplier)
        )
        return dp_accounting.SelfComposedDpEvent(step, mechanism.steps)
    raise PrivacyError(f"no dp_accounting event for mechanism {mechanism!r}")


def history_event(history: Iterable[Mechanism]) -> dp_accounting.ComposedDpEvent:
    """The composed event of a whole history; refuses non-Poisson DP-SGD groups."""
    history = tuple(history)
    unsupported = non_poisson_groups(history)
    if unsupported:
        raise PrivacyError(
            f"cannot recompute epsilon: DP-SGD rounds {[m.round_id for m in unsupported]} used sampler(s) "
            f"{sorted({m.sampler for m in unsupported})}, but only Poisson sampling has a sound accounting"
        )
    # Identical events are composed as one self-composition (composition is commutative);
    # this keeps PLD convolutions few when many rounds repeat the same parameters.
    counts = Counter(mechanism_event(m) for m in history)
    return dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(event, count) for event, count in counts.items()]
    )


def _epsilon(accountant: dp_accounting.PrivacyAccountant, history: History, delta: float) -> float:
    if not (0.0 < delta < 1.0):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    accountant.compose(history_event(history))
    return float(accountant.get_epsilon(delta))


def recompute_epsilon_rdp(history: Iterable[Mechanism], delta: float) -> float:
    """Epsilon at ``delta`` from ``dp_accounting.rdp.RdpAccountant`` (sound, looser than PLD)."""
    return _rdp_epsilon(tuple(history), delta)


def recompute_epsilon_pld(history: Iterable[Mechanism], delta: float) -> float:
    """Epsilon at ``delta`` from ``dp_accounting.pld.PLDAccountant`` (sound, tight)."""
    return _pld_epsilon(tuple(history), delta)


# Pure functions of immutable records: memoised, since an audit of many reports (and repeated
# audits of one directory) recomputes the same histories; PLD costs ~0.1-0.3 s per event type.
@lru_cache(maxsize=_CACHE_SIZE)
def _rdp_epsilon(history: History, delta: float) -> float:
    return _epsilon(rdp.RdpAccountant(neighboring_relation=NEIGHBORING_RELATION), history, delta)


@lru_cache(maxsize=_CACHE_SIZE)
def _pld_epsilon(history: History, delta: float) -> float:
    accountant = pld.PLDAccountant(
        neighboring_relation=NEIGHBORING_RELATION, value_discretization_interval=PLD_DISCRETIZATION
    )
    return _epsilon(accountant, history, delta)
