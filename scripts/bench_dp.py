#!/usr/bin/env python
"""Wall time of one local epoch with and without DP-SGD, for the default encoder (frozen
EfficientNet-Lite0 statistics + trainable head) and the scratch CNN, in one run.

DP-SGD is timed for both settings of ``private_layers``: ``last`` (the default: DP-SGD updates the
head's final layer and the classifier) and ``all`` (every head parameter, i.e. the pure cost of
DP-SGD over the same parameters the non-private epoch trains).

Each configuration is timed --repeats times, interleaved (non-private, private, non-private, ...)
so that machine noise hits both alike; the median is reported with the private/non-private ratio.
DP-SGD draws its noise and Poisson batches from the OS-keyed CSPRNG (``randomness.py``), as the
artists do; a second table compares that source's Gaussian draws per second with ``torch.normal``
(torch's default PRNG, what Opacus used before) for one step's worth of noise at both settings.

    python scripts/bench_dp.py --images 120 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import numpy as np
import torch

from fedstyle_secure.data.images import artwork_set_from_arrays
from fedstyle_secure.data.public import GENERATED_PUBLIC_IMAGES
from fedstyle_secure.data.synth import generate_artworks, generate_public_images
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import build_input_bank
from fedstyle_secure.privacy.plan import PRIVATE_LAYERS, DpPlan
from fedstyle_secure.randomness import CsprngNoise
from fedstyle_secure.training.dp_sgd import privately_trained_parameters
from fedstyle_secure.training.local import LocalConfig, LocalData, RoundContext, train_local


def _setup(backbone: str, n_images: int, n_artists: int = 4):
    _, images, labels = generate_artworks(n_artists, n_images // n_artists, seed=0)
    artworks = artwork_set_from_arrays(images, labels, [f"a{i}" for i in range(n_artists)], "bench")
    bank = build_input_bank(artworks.images, artworks.keys, backbone, n_views=2, progress=True)
    public_images = generate_public_images(GENERATED_PUBLIC_IMAGES, 0)
    public = build_input_bank(public_images, [f"p{i}" for i in range(GENERATED_PUBLIC_IMAGES)], backbone, n_views=0)
    model = make_model(EncoderConfig(backbone=backbone), bank, public, n_artists)
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(n_artists, 128)).astype(np.float32)
    consensus = rng.normal(size=(GENERATED_PUBLIC_IMAGES, 128)).astype(np.float32)  # a FedStyle round aligns to one
    consensus /= np.linalg.norm(consensus, axis=1, keepdims=True)
    ctx = RoundContext(
        n_artists=n_artists,
        prototypes=protos,
        known=np.ones(n_artists, bool),
        consensus=consensus,
        public=public.originals(),
    )
    return model, LocalData(bank=bank, labels=artworks.labels), ctx


def _time_epoch(model, data, ctx, cfg, dp) -> float:
    m = copy.deepcopy(model)
    start = time.perf_counter()
    train_local(m, data, ctx, algorithm_spec("fedstyle").objective, cfg, np.random.default_rng(0), dp)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="private artworks of the client")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbones", default="efficientnet-lite0,scratch")
    args = parser.parse_args()
    cfg = LocalConfig(epochs=1)
    rows = []
    for backbone in args.backbones.split(","):
        model, data, ctx = _setup(backbone, args.images)
        steps = int(np.ceil(len(data) / cfg.batch_size))
        plans = {
            layers: DpPlan(
                delta=1e-5,
                accountant="prv",
                sample_rate=1 / steps,
                steps_per_round=steps,
                noise_multiplier=1.0,
                clip_norm=1.0,
                release_sigma=None,
                final_release_sigma=1.0,
                final_round=1,
                private_layers=layers,
            )
            for layers in PRIVATE_LAYERS
        }
        _time_epoch(model, data, ctx, cfg, None)  # warm-up
        times: dict[str, list[float]] = {"none": [], **{layers: [] for layers in plans}}
        for _ in range(args.repeats):
            times["none"].append(_time_epoch(model, data, ctx, cfg, None))
            for layers, plan in plans.items():
                times[layers].append(_time_epoch(model, data, ctx, cfg, plan))
        median = {k: statistics.median(v) for k, v in times.items()}
        for layers in plans:
            trained = sum(p.numel() for p in privately_trained_parameters(model, layers))
            rows.append((backbone, layers, trained, median["none"], median[layers]))
    print(
        f"one local FedStyle epoch over {args.images} artworks, batch {cfg.batch_size}, median of {args.repeats} "
        f"interleaved runs, {torch.get_num_threads()} torch threads; non-private always trains the whole head"
    )
    print(f"{'encoder':20s} {'DP trains':>9s} {'DP params':>10s} {'non-private s':>14s} {'DP-SGD s':>9s} {'ratio':>7s}")
    for backbone, layers, trained, plain, private in rows:
        print(f"{backbone:20s} {layers:>9s} {trained:10,d} {plain:14.3f} {private:9.3f} {private / plain:6.2f}x")
    _noise_throughput(sorted({trained for _, _, trained, _, _ in rows} | {66_180, 853_124}), max(args.repeats, 9))
    return 0


def _noise_throughput(sizes: list[int], repeats: int) -> None:
    """One DP-SGD step's noise (``size`` values) from the CSPRNG vs ``torch.normal``: median process CPU
    time (ms, all threads; less sensitive than wall time to other processes on a shared machine), draws / s."""
    secure = CsprngNoise()
    print(
        f"\nGaussian noise of one step, median CPU time of {repeats}: {secure.name} (sum of 4 normals halved, "
        "float64) vs torch.normal"
    )
    print(f"{'values':>10s} {'csprng ms':>10s} {'draws/s':>10s} {'torch ms':>9s} {'draws/s':>10s} {'ratio':>7s}")
    for size in sizes:
        times: dict[str, list[float]] = {"csprng": [], "torch": []}
        for _ in range(repeats):
            for name, draw in (
                ("csprng", lambda size=size: secure.gaussian(1.0, size)),
                ("torch", lambda size=size: torch.normal(0.0, 1.0, size=(size,))),
            ):
                start = time.process_time()
                draw()
                times[name].append(time.process_time() - start)
        c, t = statistics.median(times["csprng"]), statistics.median(times["torch"])
        print(f"{size:10,d} {1e3 * c:10.2f} {size / c:10.3g} {1e3 * t:9.2f} {size / t:10.3g} {c / t:6.1f}x")


if __name__ == "__main__":
    sys.exit(main())
