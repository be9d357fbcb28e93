"""Immutable records of the differentially private mechanisms an artist has run.

The privacy unit is ONE ARTWORK (record-level DP): every mechanism below bounds the
influence of adding or removing a single artwork of one artist's local dataset. Nothing
here protects an artist's participation as a whole (artist-level DP).

Two kinds of mechanism make up a history:

- :class:`DpSgdSteps` -- a group of ``steps`` DP-SGD steps with the same sample rate
  and noise multiplier (Opacus: per-sample clipping to ``clip_norm``, Gaussian noise of
  std ``noise_multiplier * clip_norm``, batches drawn by ``sampler``).
- :class:`GaussianRelease` -- one Gaussian-mechanism release of a statistic with L2
  sensitivity ``sensitivity`` and noise std ``sigma`` (e.g. a style prototype).

Accountants only need each record's :class:`SampledGaussian` view: a Gaussian release is
a single step with sample rate 1.0 and noise multiplier ``sigma / sensitivity``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from fedstyle_secure.errors import PrivacyError

POISSON_SAMPLER = "poisson"

# Bounds of an auditable history: the server's intake refuses a report beyond them and the audit
# flags it (``report_schema.report_schema_errors``), because ``dp_accounting``'s PLD recomputation
# grows with them: 10**18 steps asked for 2 EiB, 10**8 steps at sample rate 1e-6 took 185 s, 200
# distinct releases 23 s, one release at noise multiplier 0.03 39 s and 2.8 GB.  Threat model: a
# roster artist signing a hostile history with its own key.  An honest run stays far inside (its
# recomputation: under 1 s); the worst history found within them took 20 s and 0.9 GB.
MAX_RUN_ROUNDS = 1_000
"""Plan rounds of a run under DP (``plan_dp`` refuses more): the defaults are 3 (server) and 20
(simulator), and a round of a networked run takes minutes."""
MAX_MECHANISMS = 2 * MAX_RUN_ROUNDS + 2
"""Mechanism records of one history: a plan charges its planning size's count
(:meth:`~fedstyle_secure.privacy.plan.DpPlan.setup_mechanisms`), at most a DP-SGD group and a refresh per
training round, and the final publication (:meth:`~fedstyle_secure.privacy.plan.DpPlan.round_mechanisms`)."""
MAX_DP_SGD_STEPS = 1_000_000
"""DP-SGD steps of a whole history (so of each group): ``rounds * epochs * ceil(n / batch_size)``,
640 for 500 artworks at the simulator's defaults, 625,000 for 100 rounds of 10 epochs of 10,000
artworks (``plan_dp`` refuses more).  Its PLD recomputation took at most 2.4 s (any sample rate)."""
MAX_DISTINCT_MECHANISMS = 5
"""Distinct accounting parameter sets in one history (``dp_accounting`` builds a PLD for each, up
to 3.6 s at the noise floor below): one plan gives four (its planning size's count, its DP-SGD
group, its refreshes and its final publication), and an artist retires when the server changes the
plan; one spare."""
MIN_NOISE_MULTIPLIER = 0.2
"""Smallest noise std per unit of sensitivity (DP-SGD ``noise_multiplier``, a release's ``sigma /
sensitivity``): one release at 0.2 alone spends epsilon 33 at delta 1e-5, so an honest plan comes
near it only at budgets above 30 (the project runs at most 8: 0.60 for a release-only artist)."""


class SampledGaussian(NamedTuple):
    """``steps`` compositions of a Poisson-subsampled Gaussian mechanism (unit sensitivity)."""

    sample_rate: float
    noise_multiplier: float
    steps: int


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PrivacyError(message)


def _require_positive(what: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0, f"{what} must be a positive finite number, got {value!r}")


def _require_integer(what: str, value: int, minimum: int) -> None:
    _require(isinstance(value, int) and value >= minimum, f"{what} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class DpSgdSteps:
    """``steps`` DP-SGD steps of one round sharing sample rate and noise multiplier.

    ``sample_rate`` is the per-artwork inclusion probability of each batch (batch size /
    dataset size); ``clip_norm`` is the per-sample L2 clipping bound; ``sampler`` names
    how batches were drawn -- every accountant here assumes ``"poisson"``.
    """

    sample_rate: float
    noise_multiplier: float
    steps: int
    clip_norm: float
    round_id: int
    sampler: str = POISSON_SAMPLER

    kind: ClassVar[str] = "dp_sgd"

    def __post_init__(self) -> None:
        _require(0.0 < self.sample_rate <= 1.0, f"DP-SGD sample_rate must be in (0, 1], got {self.sample_rate!r}")
        _require_positive("DP-SGD noise_multiplier", self.noise_multiplier)
        _require_integer("DP-SGD steps", self.steps, 1)
        _require_positive("DP-SGD clip_norm", self.clip_norm)
        _require_integer("round_id", self.round_id, 0)
        _require(bool(self.sampler), "DP-SGD sampler name must not be empty")

    def as_sampled_gaussian(self) -> SampledGaussian:
        return SampledGaussian(self.sample_rate, self.noise_multiplier, self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "steps": self.steps,
            "clip_norm": self.clip_norm,
            "sampler": self.sampler,
            "round_id": self.round_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DpSgdSteps:
        return cls(
            sample_rate=float(data["sample_rate"]),
            noise_multiplier=float(data["noise_multiplier"]),
            steps=int(data["steps"]),
            clip_norm=float(data["clip_norm"]),
            round_id=int(data["round_id"]),
            sampler=str(data["sampler"]),
        )


@dataclass(frozen=True)
class GaussianRelease:
    """One release of a statistic with L2 ``sensitivity`` plus Gaussian noise of std ``sigma``.

    ``what`` names the released quantity (e.g. ``"style-prototype"``) for the report reader.
    """

    sensitivity: float
    sigma: float
    round_id: int
    what: str

    kind: ClassVar[str] = "gaussian_release"

    def __post_init__(self) -> None:
        _require_positive("Gaussian release sensitivity", self.sensitivity)
        _require_positive("Gaussian release sigma", self.sigma)
        _require_integer("round_id", self.round_id, 0)
        _require(bool(self.what), "Gaussian release must name what it releases ('what' is empty)")

    @property
    def noise_multiplier(self) -> float:
        """Noise std in units of the L2 sensitivity."""
        return self.sigma / self.sensitivity

    def as_sampled_gaussian(self) -> SampledGaussian:
        return SampledGaussian(1.0, self.noise_multiplier, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sensitivity": self.sensitivity,
            "sigma": self.sigma,
            "round_id": self.round_id,
            "what": self.what,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GaussianRelease:
        return cls(
            sensitivity=float(data["sensitivity"]),
            sigma=float(data["sigma"]),
            round_id=int(data["round_id"]),
            what=str(data["what"]),
        )


Mechanism = DpSgdSteps | GaussianRelease
History = tuple[Mechanism, ...]

_KINDS: dict[str, type[DpSgdSteps] | type[GaussianRelease]] = {
    DpSgdSteps.kind: DpSgdSteps,
    GaussianRelease.kind: GaussianRelease,
}


def mechanism_from_dict(data: Mapping[str, Any]) -> Mechanism:
    """Parse one mechanism record; raises :class:`PrivacyError` naming what is malformed."""
    kind = data.get("kind")
    if kind not in _KINDS:
        raise PrivacyError(f"unknown mechanism kind {kind!r}; expected one of {sorted(_KINDS)}")
    try:
        return _KINDS[kind].from_dict(data)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # Overflow: an integer beyond floats
        raise PrivacyError(f"malformed {kind} mechanism record {dict(data)!r}: {exc!r}") from exc


def history_to_list(history: Iterable[Mechanism]) -> list[dict[str, Any]]:
    return [mechanism.to_dict() for mechanism in history]


def history_from_list(records: Iterable[Mapping[str, Any]]) -> History:
    return tuple(mechanism_from_dict(record) for record in records)


def non_poisson_groups(history: Iterable[Mechanism]) -> list[DpSgdSteps]:
    """DP-SGD groups whose batches were NOT Poisson-sampled (no accountant here covers them)."""
    return [m for m in history if isinstance(m, DpSgdSteps) and m.sampler != POISSON_SAMPLER]
