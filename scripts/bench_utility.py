#!/usr/bin/env python
"""Retrieval quality of FedStyle and every baseline, side by side, in one run.

For each data set (the synthetic default, and wikiart-dev when ../shared/datasets/wikiart-dev
exists) and each seed, every algorithm trains with the same rounds and local epochs on the
same split; prints mean +- std over seeds of every metric, plus the frozen-feature reference
(nearest prototype on standardised style statistics) and, on the query images, the
leave-one-out protocol of the wikiart-dev README.  Writes JSON and Markdown to --out.

    python scripts/bench_utility.py --seeds 3 --out runs/bench_utility
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from fedstyle_secure.experiments.output import METRIC_COLUMNS, render_table
from fedstyle_secure.training.dataset import load_artworks, prepare_federation

from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.federation.strategy import ALGORITHMS
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features
from fedstyle_secure.training.local import LocalConfig

WIKIART = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wikiart-dev"


def _datasets(include_wikiart: bool) -> list[tuple[str, Path | None]]:
    out: list[tuple[str, Path | None]] = [("synthetic", None)]
    if include_wikiart and WIKIART.is_dir():
        out.append(("wikiart-dev", WIKIART))
    elif include_wikiart:
        print(f"note: {WIKIART} not found; wikiart-dev skipped", file=sys.stderr)
    return out


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--no-wikiart", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_utility"))
    args = parser.parse_args()
    algorithms = args.algorithms.split(",")
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    started = time.perf_counter()
    for name, folder in _datasets(not args.no_wikiart):
        per_alg: dict[str, dict[str, list[float]]] = {a: {} for a in [*algorithms, "frozen features"]}
        for seed in range(args.seeds):
            artworks, source = load_artworks(folder, folder is None, 8, 24, seed)
            data = prepare_federation(artworks, source, seed=seed, progress=True)
            frozen = evaluate_frozen_features(data).as_dict()
            for k, v in frozen.items():
                per_alg["frozen features"].setdefault(k, []).append(v)
            for algorithm in algorithms:
                config = SimulationConfig(
                    algorithm=algorithm, rounds=args.rounds, seed=seed, local=LocalConfig(epochs=args.local_epochs)
                )
                metrics = run_simulation(config, data, progress=True).metrics.as_dict()
                for k, v in metrics.items():
                    per_alg[algorithm].setdefault(k, []).append(v)
                print(
                    f"{name} seed {seed} {algorithm}: acc {metrics['artist_accuracy']:.3f} mAP {metrics['map']:.3f}",
                    flush=True,
                )
        results[name] = per_alg
    args.out.mkdir(parents=True, exist_ok=True)
    headers = ["algorithm", *(label for _, label in METRIC_COLUMNS)]
    markdown = [
        f"Measured by `python scripts/bench_utility.py --seeds {args.seeds} --rounds {args.rounds} --local-epochs {args.local_epochs}` "
        f"({time.perf_counter() - started:.0f} s); mean ± std over seeds.\n"
    ]
    for name, per_alg in results.items():
        rows = [[a, *(_mean_std(m[k]) for k, _ in METRIC_COLUMNS)] for a, m in per_alg.items()]
        print(f"\n{name}")
        print(render_table(headers, rows))
        markdown.append(f"\n**{name}**\n\n| {' | '.join(headers)} |\n|{'---|' * len(headers)}")
        markdown += [f"| {' | '.join(str(c) for c in r)} |" for r in rows]
    (args.out / "bench_utility.json").write_text(
        json.dumps({"config": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
    )
    (args.out / "bench_utility.md").write_text("\n".join(markdown) + "\n")
    print(f"\nwrote {args.out}/bench_utility.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
