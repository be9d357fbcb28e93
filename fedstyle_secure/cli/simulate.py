"""``fedstyle simulate``: one in-process federated run, evaluated on held-out queries."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.arguments import (
    add_data_arguments,
    add_privacy_arguments,
    add_training_arguments,
    federation_from_args,
    result_payload,
    simulation_config_from_args,
)
from fedstyle_secure.experiments.cells import REFERENCE, REFERENCE_DRAWS
from fedstyle_secure.experiments.output import METRIC_COLUMNS, print_privacy_table, render_table, write_json
from fedstyle_secure.federation.publish import index_from_result
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.federation.strategy import ALGORITHMS, algorithm_spec
from fedstyle_secure.files import require_writable_target
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features
from fedstyle_secure.retrieval.metrics import RetrievalMetrics
from fedstyle_secure.retrieval.references import frozen_dp_prototypes
from fedstyle_secure.secure.api import SECURE_MODES
from fedstyle_secure.training.dataset import FederationData


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run one federated training in-process and measure retrieval quality",
        description="Train a style encoder with one algorithm over a simulated federation "
        "(one client per artist by default) and evaluate artist accuracy, macro-F1, mAP and "
        "top-5 accuracy on held-out query images.",
    )
    add_data_arguments(p)
    add_training_arguments(p)
    add_privacy_arguments(p)
    p.add_argument(
        "--algorithm", choices=tuple(ALGORITHMS), default="fedstyle", help="training algorithm (default %(default)s)"
    )
    p.add_argument(
        "--secure", choices=SECURE_MODES, default="none", help="protection of aggregated sums (default %(default)s)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results.json"), metavar="FILE", help="results JSON (default %(default)s)"
    )
    p.add_argument(
        "--index-out",
        type=Path,
        metavar="DIR",
        help="also save the trained encoder and artist prototypes as a style index",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check_outputs(args: argparse.Namespace) -> None:
    """The output paths, checked before any image is read or any round trained."""
    require_writable_target(args.out, folder=False, what="--out")
    if args.index_out is not None:
        require_writable_target(args.index_out, folder=True, what="--index-out")
        if not algorithm_spec(args.algorithm).has_global_model:
            raise ConfigError(
                f"--index-out: algorithm {args.algorithm!r} trains one model per client and has no shared encoder "
                "to build an index with; use fedstyle, fedavg, fedprox or central"
            )


def _reference_rows(
    args: argparse.Namespace, config: SimulationConfig, data: FederationData
) -> dict[str, tuple[str, RetrievalMetrics]]:
    """The no-training references printed beside the run (frozen EfficientNet statistics only): the
    frozen features and, under DP, the frozen + DP prototypes reference at the run's epsilon and delta
    (a measurement: the mean of its seeded release draws, as in ``fedstyle sweep``)."""
    if args.backbone != "efficientnet-lite0":
        return {}
    rows = {"frozen_feature_reference": ("frozen features", evaluate_frozen_features(data))}
    if config.dp is not None:
        dp, noise = config.dp, SeededNoise([config.seed, 0xD9F])
        reference = frozen_dp_prototypes(
            data, dp.epsilon, noise, draws=REFERENCE_DRAWS, delta=dp.delta, accountant=dp.accountant
        )
        rows["frozen_dp_reference"] = (f"{REFERENCE}, ε = {dp.epsilon:g}", reference)
    return rows


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    data = federation_from_args(args, progress=not args.no_progress)
    config = simulation_config_from_args(args, args.algorithm)
    result = run_simulation(config, data, progress=not args.no_progress, reports_dir=args.reports_dir)
    references = _reference_rows(args, config, data)
    payload = result_payload(result, config, data, {key: m.as_dict() for key, (_, m) in references.items()})
    write_json(args.out, payload)
    rows = [[result.algorithm, *(payload["metrics"][k] for k, _ in METRIC_COLUMNS)]]
    rows += [[label, *(m.as_dict()[k] for k, _ in METRIC_COLUMNS)] for label, m in references.values()]
    print(render_table(["algorithm", *(label for _, label in METRIC_COLUMNS)], rows))
    print(
        f"\n{len(data.artists)} artists, {len(data.clients)} clients, {len(data.split.query)} query images; "
        f"{config.rounds} rounds x {config.local.epochs} local epochs in {result.wall_time_s:.1f} s; wrote {args.out}"
    )
    if result.privacy:
        print_privacy_table(result.privacy)
    if result.state.retired:
        for client, reason in result.state.retired.items():
            print(f"retired {client}: {reason}")
    if config.dp is not None and config.insecure_seeded_noise:
        print(
            "WARNING: --insecure-seeded-noise: the DP noise came from a seeded generator; epsilon does NOT hold "
            "against anyone who knows --seed (research only)"
        )
    if args.reports_dir and config.dp is not None:
        print(
            f"signed epsilon reports in {args.reports_dir} (check them with "
            f"`fedstyle audit {args.reports_dir} --trust-manifest`: a simulation's keys exist only in its manifest)"
        )
    if args.index_out:
        index_from_result(result, config, data).save(args.index_out)
        print(f"saved style index to {args.index_out}")
    return 0
