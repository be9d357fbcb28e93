#!/usr/bin/env python
"""Lever study of the DP prototype release alone: does releasing in fewer dimensions, or denoising
the released prototypes, raise artist accuracy under DP?

For each data set and seed this runs FedStyle under DP at each epsilon with the default plan
(portfolios below 100 artworks run no DP-SGD: the model is the public warm start) and scores the
held-out queries against prototypes released from the final model's view-averaged embeddings, mean
of ``--draws`` release draws at each artist's planned noise std, as ``scripts/bench_utility.py``
scores its DP rows:

* ``exact``       un-noised prototypes (the ceiling no release can pass);
* ``full``        today's release, ``sum + N(0, sigma^2 I_D)``;
* ``unc<k>`` / ``cen<k>``  the sum projected onto the top ``k`` principal directions ``B (k, D)`` of
                  the public alignment set's embeddings under the same model (uncentred / centred),
                  noised in those coordinates and released as ``B^T (B sum + N(0, sigma^2 I_k))``:
                  same sensitivity (1), noise norm ``sigma sqrt(k)`` instead of ``sigma sqrt(D)``;
* ``pubc_*``      every artwork's and query's embedding centred on the public alignment set's mean
                  embedding and re-normalised before the release (exact, released, and mAP):
                  the shared component then no longer takes part of each artwork's unit norm;
* ``nuis_*``      every embedding multiplied by the inverse square root of the public images'
                  augmentation covariance (regularised) and re-normalised before the release;
* ``wiener``      post-processing of the released ``(A, D)`` matrix (free under DP): each singular
                  direction of the centred releases shrunk by ``(s^2 - (A - 1) sigma^2) / s^2``.

    python scripts/release_levers.py --datasets synthetic,wikiart-dev,painters-dev --seeds 1 --epsilons 8,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.models.embed import embed, embed_views, normalise_rows, prototype_sums
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.metrics import cosine_similarity_matrix, evaluate_retrieval
from fedstyle_secure.training.dataset import FederationData, load_artworks, prepare_federation
from fedstyle_secure.training.local import LocalConfig

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
Release = Callable[[np.ndarray, np.ndarray, SeededNoise], np.ndarray]


def public_basis(public_embeddings: np.ndarray, k: int, centred: bool) -> np.ndarray:
    """Top ``k`` principal directions ``(k, D)`` of public embeddings ``(M, D)`` (orthonormal rows)."""
    x = public_embeddings.astype(np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0) if centred else x, full_matrices=False)
    return vt[:k]


def projected_release(basis: np.ndarray | None) -> Release:
    """``sums (A, D)`` -> ``B^T (B s + z)`` per row, ``z ~ N(0, sigma_a^2 I_k)`` (``None``: ``s + z``)."""

    def release(sums: np.ndarray, sigmas: np.ndarray, noise: SeededNoise) -> np.ndarray:
        b = np.eye(sums.shape[1]) if basis is None else basis
        z = noise.gaussian_array(1.0, (len(sums), len(b))) * sigmas[:, None]
        return (sums @ b.T + z) @ b

    return release


def wiener_release(sums: np.ndarray, sigmas: np.ndarray, noise: SeededNoise) -> np.ndarray:
    """Today's release, then each singular direction of the centred ``(A, D)`` releases shrunk by
    its estimated signal share (noise energy ``(A - 1) sigma^2`` per direction): post-processing."""
    released = projected_release(None)(sums, sigmas, noise)
    mean = released.mean(axis=0)
    u, s, vt = np.linalg.svd(released - mean, full_matrices=False)
    noise_energy = (len(sums) - 1) * float(np.mean(sigmas)) ** 2
    keep = np.maximum(s**2 - noise_energy, 0.0) / np.maximum(s**2, 1e-12)
    return mean + (u * (s * keep)) @ vt


def nuisance_whitening(model: torch.nn.Module, data: FederationData, shrinkage: float = 1.0) -> np.ndarray:
    """``(D, D)`` inverse square root of the public images' augmentation covariance (spread of each
    image's unit view embeddings around their mean), regularised by ``shrinkage`` x its mean
    eigenvalue: a public-only transform that damps directions augmentations move (LDA-like)."""
    public, items = data.public, np.arange(len(data.public))
    views = np.stack([normalise_rows(embed(model, public.take(v, items))) for v in range(public.n_views + 1)])
    spread = (views - views.mean(axis=0)).reshape(-1, views.shape[2])
    eigenvalues, vectors = np.linalg.eigh(spread.T @ spread / len(spread))
    return np.asarray((vectors * (eigenvalues + shrinkage * eigenvalues.mean()) ** -0.5) @ vectors.T)


def accuracy(
    emb: np.ndarray, data: FederationData, sigmas: np.ndarray | None, release: Release, draws: int, seed: int
) -> float:
    """Mean artist accuracy of the held-out queries over ``draws`` releases (``sigmas=None``: exact)."""
    train, query, labels = data.split.train, data.split.query, data.labels
    sums, counts = prototype_sums(emb[train], labels[train], len(data.artists))
    rows = np.flatnonzero(counts > 0)
    q, noise = emb[query], SeededNoise([seed, 0xD9E])  # a measurement: reproducible noise
    similarity = cosine_similarity_matrix(q)
    scores = []
    for _ in range(draws if sigmas is not None else 1):
        protos = np.zeros_like(sums)
        protos[rows] = sums[rows] if sigmas is None else release(sums[rows], sigmas[rows], noise)
        scores.append(evaluate_retrieval(q @ normalise_rows(protos).T, similarity, labels[query]).artist_accuracy)
    return statistics.fmean(scores)


def measure(
    data: FederationData, seed: int, eps: float, ks: list[int], draws: int, dim: int | None
) -> dict[str, float]:
    dp = DpConfig(epsilon=eps)
    encoder = encoder_config_for(dp) if dim is None else replace(encoder_config_for(dp), embedding_dim=dim)
    result = run_simulation(SimulationConfig(rounds=20, seed=seed, local=LocalConfig(), dp=dp, encoder=encoder), data)
    assert result.global_model is not None
    sigmas = np.array([result.privacy[a]["final_release_sigma"] for a in data.artists])
    emb = embed_views(result.global_model, data.bank)
    public = embed(result.global_model, data.public.originals())
    row = {"exact": accuracy(emb, data, None, projected_release(None), draws, seed)}
    row["full"] = accuracy(emb, data, sigmas, projected_release(None), draws, seed)
    for centred in (False, True):
        for k in (k for k in ks if k <= emb.shape[1]):
            release = projected_release(public_basis(public, k, centred))
            row[f"{'cen' if centred else 'unc'}{k}"] = accuracy(emb, data, sigmas, release, draws, seed)
    row["wiener"] = accuracy(emb, data, sigmas, wiener_release, draws, seed)
    pub_centred = normalise_rows(emb - embed_views(result.global_model, data.public).mean(axis=0))
    row["pubc_exact"] = accuracy(pub_centred, data, None, projected_release(None), draws, seed)
    row["pubc_full"] = accuracy(pub_centred, data, sigmas, projected_release(None), draws, seed)
    nuisance = normalise_rows(emb @ nuisance_whitening(result.global_model, data))
    row["nuis_exact"] = accuracy(nuisance, data, None, projected_release(None), draws, seed)
    row["nuis_full"] = accuracy(nuisance, data, sigmas, projected_release(None), draws, seed)
    q = data.split.query
    for key, e in (("map", emb), ("pubc_map", pub_centred), ("nuis_map", nuisance)):
        row[key] = evaluate_retrieval(e[q], cosine_similarity_matrix(e[q]), data.labels[q]).map
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,wikiart-dev,painters-dev")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epsilons", default="8,2")
    parser.add_argument("--ks", default="8,16,24,32,64,96")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--embedding-dim", type=int, help="override the DP encoder's embedding dimension")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    for name in args.datasets.split(","):
        folder = None if name == "synthetic" else DATASETS / name
        if folder is not None and not folder.is_dir():
            print(f"note: {folder} not found; {name} skipped", file=sys.stderr)
            continue
        for eps in (float(e) for e in args.epsilons.split(",")):
            rows = []
            for seed in range(args.seeds):
                artworks, source = load_artworks(folder, folder is None, 8, 24, seed)
                rows.append(
                    measure(
                        prepare_federation(artworks, source, seed=seed), seed, eps, ks, args.draws, args.embedding_dim
                    )
                )
            mean = {k: round(statistics.fmean(r[k] for r in rows), 3) for k in rows[0]}
            print(json.dumps({"data": name, "eps": eps, "seeds": args.seeds, **mean}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
