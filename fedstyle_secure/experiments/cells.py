"""The real cell runner of ``fedstyle sweep``: one in-process federated simulation per cell."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from fedstyle_secure.experiments.arguments import dp_config_from_args, federation_from_args, simulation_config_from_args
from fedstyle_secure.experiments.sweep import CellResult, CellRunner, CellSpec
from fedstyle_secure.federation.simulator import run_simulation
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.references import frozen_dp_prototypes
from fedstyle_secure.training.dataset import FederationData

REFERENCE = "frozen + DP prototypes"
"""The no-training reference row of every sweep: frozen statistics standardised and PCA-projected
with public images only, one Gaussian release of each artist's prototype sum spending the whole
epsilon (exact prototypes at epsilon = inf); the mean of :data:`REFERENCE_DRAWS` release draws."""
REFERENCE_DRAWS = 10


def _dp_config_for(epsilon: float, args: argparse.Namespace) -> DpConfig | None:
    """DP-SGD configuration of a cell at total budget ``epsilon`` (``None`` = non-private, epsilon = inf)."""
    dp = dp_config_from_args(args, epsilon)
    if dp is not None:
        dp.validate()
    return dp


def prepare_cells(
    args: argparse.Namespace, progress: bool = False
) -> tuple[dict[float, DpConfig | None], FederationData]:
    """Validate the DP configuration of every epsilon of the sweep, then build its federation (split
    fixed by ``--seed``; style features come from, or go into, the feature cache)."""
    dp_by_epsilon = {e: _dp_config_for(e, args) for e in args.epsilon_list}
    return dp_by_epsilon, federation_from_args(args, progress=progress)


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
            return CellResult(metrics=frozen_dp_prototypes(data, eps, noise, draws=REFERENCE_DRAWS).as_dict())
        dp = dp_by_epsilon[spec.epsilon]
        config = replace(
            simulation_config_from_args(args, spec.algorithm),
            seed=spec.seed,
            dp=dp,
            encoder=encoder_config_for(dp, args.backbone),
        )
        result = run_simulation(config, data)
        spent = {a: info.get("epsilon_spent") for a, info in result.privacy.items()}
        extra = {"wall_time_s": result.wall_time_s, "epsilon_spent": spent, "retired": dict(result.state.retired)}
        return CellResult(metrics=result.metrics.as_dict(), extra=extra)

    return run_cell
