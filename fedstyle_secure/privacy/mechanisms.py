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
from typing import Any, ClassVar, NamedTuple, Union

from fedstyle_secure.errors import PrivacyError

POISSON_SAMPLER = "poisson"


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


Mechanism = Union[DpSgdSteps, GaussianRelease]
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
    except (KeyError, TypeError, ValueError) as exc:
        raise PrivacyError(f"malformed {kind} mechanism record {dict(data)!r}: {exc!r}") from exc


def history_to_list(history: Iterable[Mechanism]) -> list[dict[str, Any]]:
    return [mechanism.to_dict() for mechanism in history]


def history_from_list(records: Iterable[Mapping[str, Any]]) -> History:
    return tuple(mechanism_from_dict(record) for record in records)


def non_poisson_groups(history: Iterable[Mechanism]) -> list[DpSgdSteps]:
    """DP-SGD groups whose batches were NOT Poisson-sampled (no accountant here covers them)."""
    return [m for m in history if isinstance(m, DpSgdSteps) and m.sampler != POISSON_SAMPLER]
