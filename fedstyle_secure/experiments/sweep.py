"""Pure grid logic of a privacy-budget sweep: parse the grid, enumerate cells, aggregate results.

No file I/O here; persistence is in :mod:`sweep_store`, rendering in :mod:`sweep_outputs`.
Epsilon is each artist's total record-level budget; ``inf`` means non-private training.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.randomness import MAX_SEED

METRICS: tuple[str, ...] = ("artist_accuracy", "macro_f1", "map", "top5_accuracy", "nn_precision_at_1")


@dataclass(frozen=True)
class CellSpec:
    """One run of the grid: ``algorithm`` trained at total budget ``epsilon`` with ``seed`` on ``source``."""

    source: str
    algorithm: str
    epsilon: float
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "algorithm": self.algorithm,
            "epsilon": format_epsilon(self.epsilon),
            "seed": self.seed,
            "config": dict(self.config),
        }


@dataclass(frozen=True)
class CellResult:
    """Metrics of one cell plus free-form extras (epsilon spent per artist, wall time in seconds)."""

    metrics: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


CellRunner = Callable[[CellSpec], CellResult]


@dataclass(frozen=True)
class SummaryRow:
    """Mean and sample std over seeds of every metric of one (algorithm, epsilon) group."""

    algorithm: str
    epsilon: float
    n_seeds: int
    mean: dict[str, float]
    std: dict[str, float]
    kept_fraction: float | None  # mean artist accuracy relative to the same algorithm at epsilon = inf


def parse_epsilon(text: str) -> float:
    """A positive epsilon, or ``inf`` (non-private)."""
    value = text.strip().lower()
    try:
        eps = math.inf if value in ("inf", "infinity") else float(value)
    except ValueError:
        raise ConfigError(f"epsilon {text!r} is not a number or 'inf'") from None
    if math.isnan(eps) or eps <= 0:
        raise ConfigError(f"epsilon {text!r} must be > 0 (or 'inf' for no DP)")
    if math.isinf(eps) and value not in ("inf", "infinity"):  # 1e400 overflows: a typo, not a request for no DP
        raise ConfigError(f"epsilon {text!r} is too large to be a budget; write 'inf' for no DP")
    return eps


def _split_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{what} {text!r} lists a value twice")
    return items


def parse_epsilons(text: str) -> list[float]:
    """``"0.5,1,inf"`` -> ``[0.5, 1.0, inf]`` (order kept, duplicates rejected)."""
    values = [parse_epsilon(t) for t in _split_list(text, "epsilons")]
    if len(set(values)) != len(values):
        raise ConfigError(f"--epsilons {text!r} lists a value twice")
    return values


def parse_algorithms(text: str, known: Sequence[str]) -> list[str]:
    names = _split_list(text, "algorithms")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


MAX_SEED_COUNT = 10_000
"""Most seeds a count may ask for: the list is built before the sweep's cell count is checked."""


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,7"`` -> that explicit list."""
    items = _split_list(text, "seeds")
    try:
        numbers = [int(t) for t in items]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be a count or a comma-separated list of integers") from None
    if len(items) == 1 and "," not in text:
        if not 1 <= numbers[0] <= MAX_SEED_COUNT:
            raise ConfigError(f"--seeds {text!r} must be a count in 1..{MAX_SEED_COUNT}")
        return list(range(numbers[0]))
    if any(not 0 <= n <= MAX_SEED for n in numbers):
        raise ConfigError(f"--seeds {text!r} holds a seed outside 0..{MAX_SEED}")
    return numbers


def format_epsilon(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def enumerate_cells(
    source: str, algorithms: Sequence[str], epsilons: Sequence[float], seeds: Sequence[int], config: Mapping[str, Any]
) -> list[CellSpec]:
    """Every (algorithm, epsilon, seed) cell, algorithm-major, in the given orders."""
    return [CellSpec(source, a, e, s, dict(config)) for a in algorithms for e in epsilons for s in seeds]


def summarize(cells: Sequence[tuple[CellSpec, CellResult]]) -> list[SummaryRow]:
    """Group by (algorithm, epsilon); mean and sample std (0 for one seed) of each metric over seeds."""
    groups: dict[tuple[str, float], list[CellResult]] = {}
    for spec, result in cells:
        groups.setdefault((spec.algorithm, spec.epsilon), []).append(result)
    rows = []
    for (algorithm, eps), results in groups.items():
        mean = {m: statistics.fmean(r.metrics[m] for r in results) for m in METRICS}
        std = {m: statistics.stdev([r.metrics[m] for r in results]) if len(results) > 1 else 0.0 for m in METRICS}
        rows.append(SummaryRow(algorithm, eps, len(results), mean, std, None))
    return _with_kept_fraction(rows)


def _with_kept_fraction(rows: list[SummaryRow]) -> list[SummaryRow]:
    baseline = {r.algorithm: r.mean["artist_accuracy"] for r in rows if math.isinf(r.epsilon)}
    out = []
    for r in rows:
        base = baseline.get(r.algorithm)
        kept = r.mean["artist_accuracy"] / base if base else None
        out.append(SummaryRow(r.algorithm, r.epsilon, r.n_seeds, r.mean, r.std, kept))
    return out
