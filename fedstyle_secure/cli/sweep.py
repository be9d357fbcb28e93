"""``fedstyle sweep``: retrieval quality against the privacy budget epsilon, over algorithms and seeds."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.arguments import add_data_arguments, add_privacy_arguments, add_training_arguments
from fedstyle_secure.experiments.cells import REFERENCE, make_cell_runner
from fedstyle_secure.experiments.sweep import enumerate_cells, parse_algorithms, parse_epsilons, parse_seeds, summarize
from fedstyle_secure.experiments.sweep_outputs import markdown_table, write_outputs
from fedstyle_secure.experiments.sweep_store import CellStore, run_cells
from fedstyle_secure.federation.strategy import ALGORITHMS

# Arguments that change what a cell computes; they key the resumable cell cache.
_CONFIG_KEYS = (
    "artists",
    "per_artist",
    "query_fraction",
    "public",
    "artists_per_client",
    "rounds",
    "local_epochs",
    "seed",
    "backbone",
    "batch_size",
    "lr",
    "tau",
    "delta",
    "clip_norm",
    "noise_multiplier",
    "accountant",
    "private_layers",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="measure retrieval quality against the privacy budget epsilon (resumable grid)",
        description="Run every (algorithm, epsilon, seed) cell on one federation, one JSON file per finished "
        "cell under OUT/cells (rerunning skips finished cells), and write sweep.csv/json/md/png with "
        "mean ± std over seeds.",
    )
    add_data_arguments(p)
    add_training_arguments(p)
    add_privacy_arguments(p)
    _hide_single_run_options(p, ("--epsilon", "--reports-dir"))
    p.add_argument(
        "--epsilons",
        default="1,4,inf",
        metavar="LIST",
        help="comma-separated budgets per artist; inf = no DP (default %(default)s)",
    )
    p.add_argument(
        "--algorithms",
        default="fedstyle,fedavg",
        metavar="LIST",
        help=f"comma-separated, from {', '.join(ALGORITHMS)} (default %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default="3",
        metavar="N|LIST",
        help="training seeds: a count N (0..N-1) or a list (default %(default)s)",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (also holds the resumable cell cache)"
    )
    p.set_defaults(func=run)


def _hide_single_run_options(parser: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    """Options of the shared privacy group that a sweep replaces (--epsilons) or does not support."""
    for action in parser._actions:
        if set(action.option_strings) & set(flags):
            action.help = argparse.SUPPRESS


def _reject_single_run_options(args: argparse.Namespace) -> None:
    if args.epsilon != math.inf:
        raise ConfigError("fedstyle sweep takes --epsilons LIST, not --epsilon")
    if args.reports_dir is not None:
        raise ConfigError("fedstyle sweep does not write per-round epsilon reports; drop --reports-dir")


def _cell_config(args: argparse.Namespace) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in ((k, getattr(args, k)) for k in _CONFIG_KEYS)}
    if args.insecure_seeded_noise:  # only when set, so cells finished before the flag existed keep their keys
        config["insecure_seeded_noise"] = True
    return config


def run(args: argparse.Namespace) -> int:
    _reject_single_run_options(args)
    args.epsilon_list = parse_epsilons(args.epsilons)
    algorithms = parse_algorithms(args.algorithms, tuple(ALGORITHMS))
    seeds = parse_seeds(args.seeds)
    source = f"dir:{args.data.resolve()}" if args.data else "synthetic"
    # every sweep also measures the no-training reference row (see experiments.cells.REFERENCE)
    cells = enumerate_cells(source, [*algorithms, REFERENCE], args.epsilon_list, seeds, _cell_config(args))
    runner = make_cell_runner(args)
    with tqdm(total=len(cells), desc="sweep cells", unit="cell") as bar:
        results = run_cells(cells, runner, CellStore(args.out), on_done=lambda _spec: bar.update())
    summary = summarize(results)
    paths = write_outputs(args.out, results, summary)
    print(markdown_table(summary))
    print(f"\n{len(cells)} cells; wrote {', '.join(str(p) for p in paths)}")
    return 0
