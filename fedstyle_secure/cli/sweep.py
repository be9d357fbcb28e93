"""``fedstyle sweep``: retrieval quality against the privacy budget epsilon, over algorithms and seeds."""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedstyle_secure.data.images import data_folder_fingerprint
from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.arguments import add_data_arguments, add_privacy_arguments, add_training_arguments
from fedstyle_secure.experiments.cell_backends import (
    CellBackend,
    CellJob,
    ProcessPoolBackend,
    RayBackend,
    SerialBackend,
)
from fedstyle_secure.experiments.cells import REFERENCE, make_cell_runner, prepare_cells, validate_cells
from fedstyle_secure.experiments.sweep import (
    CellSpec,
    enumerate_cells,
    parse_algorithms,
    parse_epsilons,
    parse_seeds,
    summarize,
)
from fedstyle_secure.experiments.sweep_outputs import markdown_table, write_outputs
from fedstyle_secure.experiments.sweep_store import DEFAULT_MAX_ATTEMPTS, CellStore, run_cells
from fedstyle_secure.federation.strategy import ALGORITHMS
from fedstyle_secure.files import require_writable_target

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
    "public_pretrain_steps",
)
# The subset of them that only training cells read: the reference row (experiments.cells.REFERENCE)
# is keyed without them, so changing ``--lr`` does not recompute it.
_TRAINING_ONLY_KEYS = frozenset(
    {
        "rounds",
        "local_epochs",
        "batch_size",
        "lr",
        "tau",
        "clip_norm",
        "noise_multiplier",
        "private_layers",
        "public_pretrain_steps",
        "insecure_seeded_noise",
    }
)
MAX_SWEEP_CELLS = 100_000  # a grid is enumerated in memory: `--seeds 1000000` took 5.6 GB before any cell ran


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
    _sweep_seed_help(p)
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
    where = p.add_argument_group("where cells run (default: one after another in this process)")
    where.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run cells in N local worker processes, one compute thread each (default %(default)s: in this process)",
    )
    where.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run cells as Ray tasks on the cluster at ADDRESS, or on a local Ray started here when no ADDRESS "
        'is given (needs the optional extra: pip install -e ".[ray]")',
    )
    where.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        metavar="K",
        help="attempts per cell when its worker process dies (default %(default)s); a cell that raises is not retried",
    )
    p.set_defaults(func=run)


def _sweep_seed_help(parser: argparse.ArgumentParser) -> None:
    """In a sweep --seed fixes the split only; each cell's seed (--seeds) drives the rest."""
    for action in parser._actions:
        if "--seed" in action.option_strings:
            action.help = (
                "seed of the split, shared by every cell; --seeds drives each cell's initialisation and "
                "sampling (default %(default)s)"
            )


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
    if args.public is None:  # resolved: $FEDSTYLE_PUBLIC_SET changes what every cell computes
        config["public"] = public_set_name(default_public_set())
    if args.insecure_seeded_noise:  # only when set, so cells finished before the flag existed keep their keys
        config["insecure_seeded_noise"] = True
    if args.data is not None:  # the folder's content, not only its path: an artwork added or removed is another sweep
        config["data_fingerprint"] = data_folder_fingerprint(args.data)
    return config


def run(args: argparse.Namespace) -> int:
    _reject_single_run_options(args)
    require_writable_target(args.out, folder=True, what="--out")
    args.epsilon_list = parse_epsilons(args.epsilons)
    algorithms = parse_algorithms(args.algorithms, tuple(ALGORITHMS))
    validate_cells(args, algorithms)  # every cell's DP and training options: one error before any cell
    seeds = parse_seeds(args.seeds)
    source = f"dir:{args.data.resolve()}" if args.data else "synthetic"
    size = (len(algorithms) + 1) * len(args.epsilon_list) * len(seeds)
    if size > MAX_SWEEP_CELLS:
        raise ConfigError(f"the sweep would have {size} cells (at most {MAX_SWEEP_CELLS}); fewer --seeds or --epsilons")
    # every sweep also measures the no-training reference row (see experiments.cells.REFERENCE)
    config = _cell_config(args)
    reference_config = {k: v for k, v in config.items() if k not in _TRAINING_ONLY_KEYS}
    cells = [
        *enumerate_cells(source, algorithms, args.epsilon_list, seeds, config),
        *enumerate_cells(source, [REFERENCE], args.epsilon_list, seeds, reference_config),
    ]
    store = CellStore(args.out)
    backend = _backend(args, [c for c in cells if store.load(c) is None])
    with tqdm(total=len(cells), desc="sweep cells", unit="cell") as bar:
        sweep = run_cells(cells, store, backend, on_done=lambda _spec: bar.update(), max_attempts=args.max_attempts)
    for failure in sweep.failed:
        print(
            f"cell failed after {failure.attempts} attempt(s): {failure.spec.as_dict()}: {failure.reason}",
            file=sys.stderr,
        )
    if sweep.done:
        summary = summarize(sweep.done)
        paths = write_outputs(args.out, sweep.done, summary)
        print(markdown_table(summary))
        written = ", ".join(str(p) for p in paths)
        print(f"\n{len(sweep.done)} of {len(cells)} cells ({sweep.computed} computed now); wrote {written}")
    if sweep.failed:
        print(
            f"{len(sweep.failed)} cell(s) failed; rerun the same command to retry them (finished cells are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


def _backend(args: argparse.Namespace, pending: list[CellSpec]) -> CellBackend:
    """Serial, pool or Ray backend for the ``pending`` cells.  Before workers start, the federation is
    built once here (validating every DP configuration and filling the feature cache that workers load)."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    if args.ray is not None and args.workers != 1:
        raise ConfigError("give --workers N (local processes) or --ray [ADDRESS] (Ray tasks), not both")
    make_runner = functools.partial(make_cell_runner, args)
    if not pending or (args.workers == 1 and args.ray is None):
        return SerialBackend(CellJob(make_runner), prepare=bool(pending))
    prepare_cells(args, progress=True)
    job = CellJob(make_runner, threads=1)
    if args.ray is not None:
        return RayBackend(job, address=args.ray or None)
    return ProcessPoolBackend(job, workers=min(args.workers, len(pending)))
