"""The real cell runner of ``fedstyle sweep``: one in-process federated simulation per cell."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import replace

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.arguments import dp_config_from_args, federation_from_args, simulation_config
from fedstyle_secure.experiments.sweep import CellResult, CellRunner, CellSpec
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.references import frozen_dp_prototypes
from fedstyle_secure.training.dataset import FederationData

REFERENCE = "frozen + DP prototypes"
"""The no-training reference row of every sweep: frozen statistics standardised and PCA-projected
with public images only, one Gaussian release of each artist's prototype sum spending the whole
epsilon (exact prototypes at epsilon = inf); the mean of :data:`REFERENCE_DRAWS` release draws."""
REFERENCE_DRAWS = 10


def _dp_configs(args: argparse.Namespace) -> dict[float, DpConfig | None]:
    """The validated DP configuration of every epsilon of the sweep."""
    return {e: _dp_config_for(e, args) for e in args.epsilon_list}


def _dp_config_for(epsilon: float, args: argparse.Namespace) -> DpConfig | None:
    """DP-SGD configuration of a cell at total budget ``epsilon`` (``None`` = non-private, epsilon = inf)."""
    dp = dp_config_from_args(args, epsilon)
    if dp is not None:
        dp.validate()
    return dp


def validate_cells(args: argparse.Namespace, algorithms: Sequence[str]) -> dict[float, DpConfig | None]:
    """The DP configuration of every epsilon of the sweep, each validated, and the simulation of every
    training cell of ``algorithms`` validated (rounds, local epochs, warm-start steps): a bad option is
    one error before any cell runs, not one failure per cell."""
    dp_by_epsilon = _dp_configs(args)
    unused = [flag for flag, value in (("--delta", args.delta), ("--noise-multiplier", args.noise_multiplier)) if value]
    if unused and all(dp is None for dp in dp_by_epsilon.values()):
        raise ConfigError(f"{' and '.join(unused)} apply to finite --epsilons only; this sweep has none")
    for algorithm in algorithms:
        for dp in dp_by_epsilon.values():
            cell_config(args, algorithm, dp, args.seed).validate()
    return dp_by_epsilon


def prepare_cells(
    args: argparse.Namespace, progress: bool = False
) -> tuple[dict[float, DpConfig | None], FederationData]:
    """Validate the DP configuration of every epsilon of the sweep, then build its federation (split
    fixed by ``--seed``; style features come from, or go into, the feature cache)."""
    return _dp_configs(args), federation_from_args(args, progress=progress)


def cell_config(args: argparse.Namespace, algorithm: str, dp: DpConfig | None, seed: int) -> SimulationConfig:
    """The simulation of one training cell: the sweep's options under the cell's own DP configuration
    (``--delta``, ``--noise-multiplier`` and the other DP options apply to its finite epsilons only)."""
    return replace(simulation_config(args, algorithm, dp), seed=seed)


def make_cell_runner(args: argparse.Namespace) -> CellRunner:
    """Prepare the sweep ONCE (:func:`prepare_cells`), then train one simulation per cell.

    DP configurations of every finite epsilon are validated here, before any cell runs.  Picklable as
    ``functools.partial(make_cell_runner, args)``: each pool or Ray worker builds its own runner.
    """
    dp_by_epsilon, data = prepare_cells(args)

    def run_cell(spec: CellSpec) -> CellResult:
        if spec.algorithm == REFERENCE:
            noise = SeededNoise([spec.seed, 0xD9F])  # a measurement, not a deployment: reproducible noise is fine
            eps = None if math.isinf(spec.epsilon) else spec.epsilon
            metrics = frozen_dp_prototypes(
                data, eps, noise, draws=REFERENCE_DRAWS, delta=args.delta, accountant=args.accountant
            )
            return CellResult(metrics=metrics.as_dict())
        result = run_simulation(cell_config(args, spec.algorithm, dp_by_epsilon[spec.epsilon], spec.seed), data)
        spent = {a: info.get("epsilon_spent") for a, info in result.privacy.items()}
        extra = {"wall_time_s": result.wall_time_s, "epsilon_spent": spent, "retired": dict(result.state.retired)}
        return CellResult(metrics=result.metrics.as_dict(), extra=extra)

    return run_cell
