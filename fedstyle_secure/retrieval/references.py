"""Reference rows that need no federated training (pure NumPy/torch, no I/O).

* :func:`frozen_dp_prototypes` -- what a platform could ship under DP with no training at all:
  frozen style statistics standardised and projected (PCA to ``dims``) with *public* images only,
  and one Gaussian release of each artist's prototype sum spending the artist's whole epsilon.
* :func:`central_linear_probe` -- the ceiling of a platform holding every portfolio: a multinomial
  logistic regression on the standardised frozen statistics of all training artworks, pooled.

Both are scored on the held-out queries like every algorithm (:mod:`.evaluate`), test-time view
averaging included.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from fedstyle_secure.models.embed import mean_direction, prototype_sums
from fedstyle_secure.privacy.calibration import calibrate_noise_multiplier, default_delta
from fedstyle_secure.privacy.plan import PROTOTYPE_SENSITIVITY, release_prototype_sums
from fedstyle_secure.randomness import NoiseSource
from fedstyle_secure.retrieval.metrics import RetrievalMetrics, cosine_similarity_matrix, evaluate_retrieval
from fedstyle_secure.training.dataset import FederationData

REFERENCE_PCA_DIMS = 32
PROBE_WEIGHT_DECAY = 1e-3  # L2 penalty on the probe's weights (mean cross-entropy + wd * |W|^2)


def public_pca(public_features: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardisation ``(mean, std)`` and a PCA basis ``(F, dims)`` fitted on public features ``(M, F)``
    (or inputs ``(M, ...)``, flattened: the ``scratch`` backbone's are images)."""
    x = public_features.reshape(len(public_features), -1).astype(np.float64)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3)
    z = (x - mean) / std
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    return mean, std, vt[:dims].T


@functools.lru_cache(maxsize=256)
def release_sigma(epsilon: float, n_artworks: int, accountant: str = "prv", delta: float | None = None) -> float:
    """Noise std of ONE Gaussian release of a prototype sum (L2 sensitivity 1) spending ``epsilon``
    at ``delta`` (None: the project's default ``min(1e-5, 1/(10 n))`` rounded down to a power of ten)."""
    delta = default_delta(n_artworks) if delta is None else delta
    multiplier = calibrate_noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=1.0, steps=1, accountant=accountant
    )
    return PROTOTYPE_SENSITIVITY * multiplier


def frozen_dp_prototypes(
    data: FederationData,
    epsilon: float | None,
    noise: NoiseSource,
    dims: int = REFERENCE_PCA_DIMS,
    draws: int = 1,
    *,
    delta: float | None = None,
    accountant: str = "prv",
) -> RetrievalMetrics:
    """Metrics of the no-training DP reference at ``epsilon`` per artist (``None``: exact prototypes;
    ``delta`` and ``accountant`` as the compared runs', default delta by default), averaged over
    ``draws`` independent releases whose noise comes from ``noise`` (a measurement: a seeded
    :class:`~fedstyle_secure.randomness.SeededNoise` keeps it reproducible).

    Each artist releases the sum of its training artworks' unit embeddings once, through
    :func:`release_prototype_sums` at the noise of :func:`release_sigma` for its own ``n``."""
    mean, std, basis = public_pca(data.public.views[0], dims)
    emb = mean_direction(np.stack([((v - mean) / std) @ basis for v in data.bank.test_time_inputs()]))
    counts = np.bincount(data.labels[data.split.train], minlength=len(data.artists))
    sigmas = (
        None
        if epsilon is None
        else np.array([release_sigma(epsilon, max(int(n), 1), accountant, delta) for n in counts])
    )
    return release_draw_metrics(emb, data, sigmas, noise, draws)


def release_draw_metrics(
    embeddings: np.ndarray, data: FederationData, sigmas: np.ndarray | None, noise: NoiseSource, draws: int = 1
) -> RetrievalMetrics:
    """Metrics of the held-out queries against prototypes released from ``embeddings`` ``(N, D)``
    (unit rows of every artwork), averaged over ``draws`` independent Gaussian releases of each
    artist's training sum at noise std ``sigmas[a]`` (``None``: one exact release).  A measurement of
    the expected quality of one DP release, as the published one is a single draw."""
    train, query, labels = data.split.train, data.split.query, data.labels
    sums, counts = prototype_sums(embeddings[train], labels[train], len(data.artists))
    q = embeddings[query]
    similarity = cosine_similarity_matrix(q)
    runs = []
    for _ in range(draws if sigmas is not None else 1):
        protos = np.zeros_like(sums)
        for a in np.flatnonzero(counts > 0):
            sigma = None if sigmas is None else float(sigmas[a])
            protos[a] = release_prototype_sums(sums[a : a + 1], sigma, noise)[0]
        runs.append(evaluate_retrieval(q @ protos.T, similarity, labels[query]).as_dict())
    return RetrievalMetrics(**{k: float(np.mean([r[k] for r in runs])) for k in runs[0]})


def central_linear_probe(
    data: FederationData, weight_decay: float = PROBE_WEIGHT_DECAY, seed: int = 0
) -> RetrievalMetrics:
    """Metrics of a logistic-regression probe on standardised frozen statistics of ALL training
    artworks (pooled, no privacy, fitted on the originals): artist = arg-max of the logits averaged
    over the test-time views; artwork retrieval by cosine between the queries' class-probability vectors."""
    views = data.bank.test_time_inputs()
    feats = views[0].astype(np.float64)
    train, query = data.split.train, data.split.query
    mean, std = feats[train].mean(axis=0), feats[train].std(axis=0) + 1e-6
    x = torch.from_numpy((feats - mean) / std).float()
    y = torch.from_numpy(data.labels)
    n_classes = len(data.artists)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
        bias = torch.zeros(n_classes, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = F.cross_entropy(x[train] @ weight + bias, y[train]) + weight_decay * weight.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    with torch.no_grad():
        queries = torch.from_numpy((views[:, query].mean(axis=0, dtype=np.float64) - mean) / std).float()
        logits = (queries @ weight + bias).numpy().astype(np.float64)  # linear: the mean of the views' logits
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return evaluate_retrieval(logits, cosine_similarity_matrix(probs), data.labels[query])
