#!/usr/bin/env python
"""One-off lever study: FedStyle (or any algorithm) on one data set with overridden defaults.

Each variant is ``key=value`` pairs joined by ``+`` (encoder: head, whitening_shrinkage, projection, hidden_dim,
dropout, embedding_dim; local: lr, tau, optimizer, epochs, instance_weight, classifier_weight,
alignment_weight, batch_size, margin, proximal_mu (FedProx), prototype_distance_weight (FedProto);
server optimiser: srv=avg|avgm|adam, slr (Adam: the lr at 8 artists, grown by sqrt(n / 8)), smom,
sb2 (Adam beta2), seps (Adam eps), sref (the reference number of artists); ``rounds=N``; ``views=N``
augmented views per artwork in the training bank (test-time averaging stays at the first 4);
``pretrain=N`` public warm-start steps; ``pub=met|generated|DIR`` (a path: an image folder);
``alg=NAME``; ``max=N``: each artist's first N artworks only (also with the reference rows, e.g.
``frozen+max=16``); ``eps=E``: under DP at E with the default plan and encoder, seeded noise, encoder
keys override; ``mintrain=N``: the plan's DP-SGD portfolio threshold).
``frozen``, ``probe`` and ``dpref=E`` (frozen + DP prototypes) print the reference rows.
Prints one JSON line per (seed, variant): final artist accuracy, mAP, seconds and the accuracy
every 4 rounds.

    python scripts/utility_levers.py wikiart-dev 0,1 "lr=0.3,lr=0.1+tau=0.5,alg=central,frozen"
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.federation.strategy import ServerOptimizer
from fedstyle_secure.models.inputs import DEFAULT_VIEWS
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features
from fedstyle_secure.retrieval.references import central_linear_probe, frozen_dp_prototypes
from fedstyle_secure.training.dataset import FederationData, load_artworks, prepare_federation
from fedstyle_secure.training.local import LocalConfig

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ENCODER: dict[str, Callable[[str], Any]] = {
    "head": str,
    "whitening_shrinkage": float,
    "projection": str,
    "hidden_dim": int,
    "dropout": float,
    "embedding_dim": int,
}
LOCAL: dict[str, Callable[[str], Any]] = {
    "lr": float,
    "tau": float,
    "optimizer": str,
    "epochs": int,
    "instance_weight": float,
    "classifier_weight": float,
    "alignment_weight": float,
    "batch_size": int,
    "margin": float,
    "proximal_mu": float,
    "prototype_distance_weight": float,
}
SERVER: dict[str, tuple[str, Callable[[str], Any]]] = {
    "srv": ("kind", str),
    "slr": ("lr", float),
    "smom": ("momentum", float),
    "sb2": ("beta2", float),
    "seps": ("eps", float),
    "sref": ("reference_clients", int),
}


def main() -> int:
    name, seeds, variants = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",")
    torch.set_num_threads(1)  # a shared machine: more threads than free cores is far slower
    folder = None if name == "synthetic" else DATASETS / name
    for seed in seeds:
        cache: dict[str, FederationData] = {}

        def data_for(
            public: str, views: int = DEFAULT_VIEWS, cut: int | None = None, cache: dict = cache, seed: int = seed
        ) -> FederationData:
            if (public, views, cut) not in cache:
                artworks, source = load_artworks(folder, folder is None, 8, 24, seed)
                artworks = artworks if cut is None else artworks.first_per_artist(cut)
                folder_given = "/" in public  # pub=DIR: an image folder instead of a named set
                cache[public, views, cut] = prepare_federation(
                    artworks,
                    source,
                    seed=seed,
                    public_dir=Path(public) if folder_given else None,
                    public_set=None if folder_given else public,
                    n_views=views,
                )
            return cache[public, views, cut]

        for variant in variants:
            row: dict[str, Any] = {"data": name, "seed": seed, "variant": variant}
            cut = next((int(p[4:]) for p in variant.split("+") if p.startswith("max=")), None)
            variant = "+".join(p for p in variant.split("+") if not p.startswith("max="))
            if variant.startswith("dpref="):
                noise = SeededNoise([seed, 0xD9F])
                metrics = frozen_dp_prototypes(data_for("met", cut=cut), float(variant[6:]), noise, draws=10).as_dict()
            elif variant in ("frozen", "probe"):
                reference = evaluate_frozen_features if variant == "frozen" else central_linear_probe
                metrics = reference(data_for("met", cut=cut)).as_dict()
            else:
                encoder, local, server, public, algorithm, rounds = {}, {}, {}, "met", "fedstyle", 20
                views = DEFAULT_VIEWS
                dp: DpConfig | None = None
                min_training = pretrain = None
                for pair in filter(None, variant.split("+")):
                    key, value = pair.split("=")
                    if key in ENCODER:
                        encoder[key] = ENCODER[key](value)
                    elif key in LOCAL:
                        local[key] = LOCAL[key](value)
                    elif key == "eps":
                        dp = DpConfig(epsilon=float(value))
                    elif key == "pretrain":
                        pretrain = int(value)
                    elif key == "mintrain":
                        min_training = int(value)
                    elif key == "rounds":
                        rounds = int(value)
                    elif key == "views":
                        views = int(value)
                    elif key in SERVER:
                        server[SERVER[key][0]] = SERVER[key][1](value)
                    elif key in ("pub", "alg"):
                        public, algorithm = (value, algorithm) if key == "pub" else (public, value)
                    else:
                        raise SystemExit(f"unknown lever {key!r}")
                if dp is not None and min_training is not None:
                    dp = replace(dp, min_training_artworks=min_training)
                started = time.perf_counter()
                config = SimulationConfig(
                    algorithm=algorithm,
                    rounds=rounds,
                    seed=seed,
                    local=replace(LocalConfig(), **local),
                    encoder=replace(encoder_config_for(dp), **encoder),
                    dp=dp,
                    public_pretrain_steps=pretrain,
                    insecure_seeded_noise=dp is not None,  # a measurement: reproducible noise
                    server=ServerOptimizer(**server),
                )
                result = run_simulation(config, data_for(public, views, cut))
                metrics = result.metrics.as_dict()
                history = [round(h.metrics["artist_accuracy"], 3) for h in result.history]
                row |= {
                    "seconds": round(time.perf_counter() - started),
                    "accuracy_every_4": history[::4] + history[-1:],
                }
            row |= {"accuracy": round(metrics["artist_accuracy"], 3), "map": round(metrics["map"], 3)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
