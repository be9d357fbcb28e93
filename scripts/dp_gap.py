#!/usr/bin/env python
"""Where FedStyle's accuracy goes under DP: the gap to non-private accuracy, split in one run.

For each data set, seed and epsilon this measures artist accuracy on the held-out queries of

* ``non-private``  FedStyle trained without DP (the 100 % reference of the sweep);
* ``oracle``       the non-private encoder, with prototypes released through the *same* Gaussian
                   mechanism as the DP run's final publication (not achievable under DP: the
                   encoder saw private data without noise; it isolates the cost of the release);
* ``public-only``  the encoder every party starts from under DP (public warm start, no private
                   training), exact prototypes, then DP-released prototypes;
* ``dp-fedstyle``  the real DP run (DP-SGD + every release, ``fedstyle sweep``'s cell).

If ``oracle`` stays near 100 % while ``dp-fedstyle`` is near ``public-only``, the release noise
is not what costs accuracy: DP-SGD cannot move the encoder away from its public start.

    python scripts/dp_gap.py --epsilons 8,2 --seeds 2 --rounds 15 [--data ../shared/datasets/wikiart-dev]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from torch import nn

from fedstyle_secure.federation.simulator import SimulationConfig, round_rules, run_simulation
from fedstyle_secure.models.embed import embed, prototype_sums
from fedstyle_secure.privacy.plan import (
    DpConfig,
    encoder_config_for,
    plan_participation,
    public_warm_start_steps,
    release_prototype_sums,
)
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_global
from fedstyle_secure.training.dataset import FederationData, load_artworks, prepare_federation
from fedstyle_secure.training.local import LocalConfig
from fedstyle_secure.training.pretrain import make_initial_model, warm_start_cache

RELEASE_DRAWS = 20  # noise draws averaged per released-prototype measurement


def final_release_sigma(config: SimulationConfig, data: FederationData) -> float:
    """The noise std of the final prototype publication in a DP run (smallest portfolio's plan)."""
    assert config.dp is not None
    releases = round_rules(config).release_plan_rounds()
    n_train = min(len(data.client_train_items(c)) for c in range(len(data.clients)))
    return plan_participation(config.dp, n_train, config.local, config.rounds, releases).final_release_sigma


def accuracy_with_release(model: nn.Module, data: FederationData, sigma: float | None, seed: int) -> float:
    """Mean artist accuracy of ``model`` with prototypes released at noise ``sigma`` (None: exact)."""
    train = data.split.train
    sums, _ = prototype_sums(embed(model, data.bank.originals(train)), data.labels[train], len(data.artists))
    noise = SeededNoise([seed, 0x6A9])  # a measurement, not a deployment: reproducible noise is fine here
    draws = 1 if sigma is None else RELEASE_DRAWS
    return statistics.fmean(
        evaluate_global(model, data, release_prototype_sums(sums, sigma, noise)).artist_accuracy for _ in range(draws)
    )


def measure(data: FederationData, seed: int, epsilons: list[float], rounds: int, epochs: int) -> dict[str, float]:
    local = LocalConfig(epochs=epochs)
    plain = run_simulation(SimulationConfig(rounds=rounds, seed=seed, local=local), data)
    assert plain.global_model is not None
    start = make_initial_model(
        encoder_config_for(DpConfig(epsilon=max(epsilons))),
        data.bank,
        data.public,
        None,
        seed=seed,
        pretrain_steps=public_warm_start_steps(DpConfig(epsilon=max(epsilons))),
        cache=warm_start_cache(data.cache_dir),
    )
    row = {
        "non-private": plain.metrics.artist_accuracy,
        "public-only exact": accuracy_with_release(start, data, None, seed),
    }
    for eps in epsilons:
        config = SimulationConfig(
            rounds=rounds,
            seed=seed,
            local=local,
            dp=DpConfig(epsilon=eps),
            encoder=encoder_config_for(DpConfig(epsilon=eps)),
        )
        sigma = final_release_sigma(config, data)
        row[f"oracle eps={eps:g}"] = accuracy_with_release(plain.global_model, data, sigma, seed)
        row[f"public-only eps={eps:g}"] = accuracy_with_release(start, data, sigma, seed)
        row[f"dp-fedstyle eps={eps:g}"] = run_simulation(config, data).metrics.artist_accuracy
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an artist-per-folder image set (default: the synthetic artists)")
    parser.add_argument("--epsilons", default="8,2")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--local-epochs", type=int, default=2)
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rows = []
    for seed in range(args.seeds):
        artworks, source = load_artworks(args.data, args.data is None, 8, 24, seed)
        rows.append(
            measure(prepare_federation(artworks, source, seed=seed), seed, epsilons, args.rounds, args.local_epochs)
        )
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), file=sys.stderr, flush=True)
    reference = statistics.fmean(r["non-private"] for r in rows)
    print(f"{args.data or 'synthetic'}: artist accuracy, mean of {args.seeds} seed(s), {args.rounds} rounds")
    print(f"{'setting':28s} {'accuracy':>9s} {'of non-private':>15s}")
    for key in rows[0]:
        mean = statistics.fmean(r[key] for r in rows)
        print(f"{key:28s} {mean:9.3f} {mean / reference:14.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
