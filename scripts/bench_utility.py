#!/usr/bin/env python
"""Retrieval quality of FedStyle, every baseline and the reference rows, side by side, in one run.

For each data set (the synthetic artists; ../shared/datasets/wikiart-dev and painters-dev when
present) and each seed, every algorithm trains with the same rounds and local epochs on the same
split, one artist per client, README defaults.  Reference rows: ``frozen features`` (standardised
style statistics, nearest prototype), ``central linear probe`` (logistic regression on the frozen
statistics of all portfolios pooled) and, for every epsilon, ``frozen + DP prototypes`` (frozen
statistics standardised and PCA-projected to 32 dims with public images only, one Gaussian release
of each artist's prototype sum spending the whole epsilon; mean of 10 release draws).  DP rows run
FedStyle under each epsilon with its default privacy plan and are scored, like the reference, as the
mean of 10 draws of the final release with the final model (the run's own single release is kept in
the cell as ``single_release``): one draw's spread (0.02-0.03 accuracy on painters-dev) otherwise
dominates a 3-seed mean.

Prints one table per data set: mean ± std over seeds, the share of central's gain over the frozen
features that each algorithm keeps (``gap closed``, accuracy and mAP; ratios of the means), and under
DP the difference to the reference row and the share of non-private FedStyle's accuracy.  Finished
cells are kept under ``--out/cells`` (a rerun resumes); writes ``bench_utility.md`` / ``.json`` and
the accuracy-against-rounds plot of FedStyle, FedAvg and central.

    python scripts/bench_utility.py --seeds 3 --rounds 20 --out runs/bench_utility
    python scripts/bench_utility.py --datasets painters-dev --max-per-artist 14   # smaller portfolios
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedstyle_secure.experiments.arguments import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS
from fedstyle_secure.experiments.output import write_json
from fedstyle_secure.experiments.sweep import CellResult, CellSpec
from fedstyle_secure.experiments.sweep_store import CellStore
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.federation.strategy import ALGORITHMS, ServerOptimizer
from fedstyle_secure.models.embed import embed_views
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features
from fedstyle_secure.retrieval.references import central_linear_probe, frozen_dp_prototypes, release_draw_metrics
from fedstyle_secure.training.dataset import FederationData, load_artworks, prepare_federation
from fedstyle_secure.training.local import LocalConfig

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
REFERENCE_DRAWS = 10
FROZEN, PROBE, DP_REFERENCE = "frozen features", "central linear probe", "frozen + DP prototypes"
PLOTTED = ("fedstyle", "fedavg", "central")


def _datasets(names: list[str]) -> list[tuple[str, Path | None]]:
    out: list[tuple[str, Path | None]] = []
    for name in names:
        if name == "synthetic":
            out.append((name, None))
        elif (DATASETS / name).is_dir():
            out.append((name, DATASETS / name))
        else:
            print(f"note: {DATASETS / name} not found; {name} skipped", file=sys.stderr)
    return out


def _dp_reference(data: FederationData, epsilon: float, seed: int) -> dict[str, float]:
    noise = SeededNoise([seed, 0xD9F])  # a measurement, not a deployment: reproducible noise is fine
    return frozen_dp_prototypes(data, epsilon, noise, draws=REFERENCE_DRAWS).as_dict()


def _run(spec: CellSpec, data: FederationData, rounds: int, local: LocalConfig) -> CellResult:
    """One cell: an algorithm (non-private or at ``spec.epsilon``) or a reference row."""
    started = time.perf_counter()
    if spec.algorithm == FROZEN:
        return CellResult(evaluate_frozen_features(data).as_dict())
    if spec.algorithm == PROBE:
        return CellResult(central_linear_probe(data).as_dict())
    if spec.algorithm == DP_REFERENCE:
        return CellResult(_dp_reference(data, spec.epsilon, spec.seed))
    dp = None if np.isinf(spec.epsilon) else DpConfig(epsilon=spec.epsilon)
    config = SimulationConfig(
        algorithm=spec.algorithm,
        rounds=rounds,
        seed=spec.seed,
        local=local,
        dp=dp,
        encoder=encoder_config_for(dp),
    )
    result = run_simulation(config, data)
    history = [h.metrics["artist_accuracy"] for h in result.history]
    extra: dict[str, Any] = {"history_accuracy": history, "wall_time_s": time.perf_counter() - started}
    metrics = result.metrics.as_dict()
    if dp is not None and result.global_model is not None:  # expected quality of one release: 10 draws
        sigmas = np.array([result.privacy[a]["final_release_sigma"] for a in data.artists])
        noise = SeededNoise([spec.seed, 0xD9E])
        extra["single_release"] = metrics
        metrics = release_draw_metrics(
            embed_views(result.global_model, data.bank), data, sigmas, noise, REFERENCE_DRAWS
        ).as_dict()
    return CellResult(metrics, extra)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _share(value: float, low: float, high: float) -> str:
    return f"{(value - low) / (high - low):.0%}" if abs(high - low) > 1e-9 else "-"


def _table(name: str, rows: dict[tuple[str, float], list[dict[str, float]]], epsilons: list[float]) -> list[str]:
    """Markdown lines of one data set's table."""
    mean = {key: {m: float(np.mean([r[m] for r in runs])) for m in runs[0]} for key, runs in rows.items()}
    inf = float("inf")
    frozen, central = mean[(FROZEN, inf)], mean.get(("central", inf))
    lines = [
        f"\n**{name}**\n",
        "| run | artist acc | mAP | macro-F1 | NN P@1 | gap closed (acc / mAP) |",
        "|---|---|---|---|---|---|",
    ]
    for (algorithm, eps), runs in rows.items():
        if not np.isinf(eps):
            continue
        cols = [_mean_std([r[m] for r in runs]) for m in ("artist_accuracy", "map", "macro_f1", "nn_precision_at_1")]
        gap = "-"
        if central is not None and algorithm not in (FROZEN, "central"):
            m = mean[(algorithm, eps)]
            gap = (
                f"{_share(m['artist_accuracy'], frozen['artist_accuracy'], central['artist_accuracy'])} / "
                f"{_share(m['map'], frozen['map'], central['map'])}"
            )
        lines.append(f"| {algorithm} | {' | '.join(cols)} | {gap} |")
    if epsilons:
        lines += [
            "",
            "| under DP | artist acc | mAP | vs reference (acc) | of non-private FedStyle (acc) |",
            "|---|---|---|---|---|",
        ]
        for eps in epsilons:
            ref = mean.get((DP_REFERENCE, eps))
            for algorithm in sorted({a for a, e in rows if e == eps}, key=lambda a: a == DP_REFERENCE):
                runs, m = rows[(algorithm, eps)], mean[(algorithm, eps)]
                diff = (
                    f"{m['artist_accuracy'] - ref['artist_accuracy']:+.3f}"
                    if ref and algorithm != DP_REFERENCE
                    else "-"
                )
                kept = (
                    f"{m['artist_accuracy'] / mean[('fedstyle', inf)]['artist_accuracy']:.0%}"
                    if ("fedstyle", inf) in mean
                    else "-"
                )
                lines.append(
                    f"| {algorithm}, ε = {eps:g} | {_mean_std([r['artist_accuracy'] for r in runs])} | "
                    f"{_mean_std([r['map'] for r in runs])} | {diff} | {kept} |"
                )
    return lines


def _plot(histories: dict[str, dict[str, list[list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), squeeze=False)
    for ax, (name, per_alg) in zip(axes[0], histories.items()):
        for algorithm in PLOTTED:
            runs = per_alg.get(algorithm)
            if not runs:
                continue
            curve = np.mean(np.array(runs), axis=0)
            ax.plot(np.arange(1, len(curve) + 1), curve, label=algorithm)
        ax.set_title(name)
        ax.set_xlabel("round")
        ax.set_ylabel("artist accuracy (held-out)")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--local-epochs", type=int, default=DEFAULT_LOCAL_EPOCHS)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--datasets", default="synthetic,wikiart-dev,painters-dev")
    parser.add_argument("--epsilons", default="8,2", help="DP budgets of FedStyle and the DP reference ('' for none)")
    parser.add_argument(
        "--max-per-artist",
        type=int,
        help="keep only each artist's first N artworks (file-name order): the same artists with smaller portfolios",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_utility"))
    parser.add_argument(
        "--plot",
        type=Path,
        help="where the accuracy-against-rounds plot goes (default OUT/utility_rounds.png; the README's figure "
        "is docs/figures/utility_rounds.png, written only when asked for)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine more threads than free cores made "
        "a 20-round run ~25x slower)",
    )
    args = parser.parse_args()
    args.plot = args.plot or args.out / "utility_rounds.png"
    torch.set_num_threads(args.threads)
    algorithms = [a for a in args.algorithms.split(",") if a]
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    store = CellStore(args.out)
    started = time.perf_counter()
    markdown = [
        f"Measured by `python scripts/bench_utility.py --seeds {args.seeds} --rounds {args.rounds} "
        f"--local-epochs {args.local_epochs} --epsilons {args.epsilons}`; mean ± std over {args.seeds} seeds."
    ]
    payload: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}, "results": {}}
    histories: dict[str, dict[str, list[list[float]]]] = {}
    # Every default a cell depends on is part of its key: a changed default must not reuse an old cell.
    local = replace(LocalConfig(), epochs=args.local_epochs)
    settings = {"rounds": args.rounds, "local": asdict(local), "server": asdict(ServerOptimizer())}
    for data_set, folder in _datasets(args.datasets.split(",")):
        name = data_set if args.max_per_artist is None else f"{data_set}, first {args.max_per_artist} per artist"
        rows: dict[tuple[str, float], list[dict[str, float]]] = {}
        for seed in range(args.seeds):
            artworks, source = load_artworks(folder, folder is None, 8, 24, seed)
            if args.max_per_artist is not None:
                artworks = artworks.first_per_artist(args.max_per_artist)
            data = prepare_federation(artworks, source, seed=seed)
            cells = [(a, float("inf")) for a in [*algorithms, FROZEN, PROBE]]
            cells += [(a, e) for e in epsilons for a in ("fedstyle", DP_REFERENCE)]
            for algorithm, eps in cells:
                spec = CellSpec(name, algorithm, eps, seed, settings)
                result = store.load(spec)
                if result is None:
                    result = _run(spec, data, args.rounds, local)
                    store.save(spec, result)
                    print(
                        f"{name} seed {seed} {algorithm} eps={eps:g}: acc {result.metrics['artist_accuracy']:.3f} "
                        f"mAP {result.metrics['map']:.3f}",
                        flush=True,
                    )
                rows.setdefault((algorithm, eps), []).append(result.metrics)
                if "history_accuracy" in result.extra and np.isinf(eps):
                    histories.setdefault(name, {}).setdefault(algorithm, []).append(result.extra["history_accuracy"])
        lines = _table(name, rows, epsilons)
        print("\n".join(lines), flush=True)
        markdown += lines
        payload["results"][name] = {f"{a}@{e:g}": runs for (a, e), runs in rows.items()}
    markdown[0] += f" ({time.perf_counter() - started:.0f} s with the cells computed in this run)"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_utility.md").write_text("\n".join(markdown) + "\n")
    write_json(args.out / "bench_utility.json", payload)
    if histories:
        _plot(histories, args.plot)
    print(f"\nwrote {args.out}/bench_utility.md, .json and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
