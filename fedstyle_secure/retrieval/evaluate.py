"""Score held-out queries against artist prototypes and each other.

*Global* algorithms (one shared encoder): each artist's prototype is the mean embedding of its
training artworks; a query is scored by cosine to every prototype.  *Personal* algorithms
(``local``, ``fedproto``: one model per client) have no shared space, so a query is fanned out:
artist ``a`` is scored by its own client's model, cosine between the query and its prototype
in that model; artwork similarity is the mean over clients' models of the cosine.

Every embedding scored here -- prototypes, queries, and the frozen-features reference alike -- is
averaged over the artwork's original and :data:`~fedstyle_secure.models.inputs.TEST_TIME_VIEWS`
augmented views (:func:`~fedstyle_secure.models.embed.embed_views`), as the published index does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from fedstyle_secure.errors import ModelError
from fedstyle_secure.models.embed import embed_views, normalise_rows, prototypes_from
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.retrieval.metrics import RetrievalMetrics, cosine_similarity_matrix, evaluate_retrieval
from fedstyle_secure.training.dataset import FederationData


def evaluate_global(model: nn.Module, data: FederationData, prototypes: np.ndarray | None = None) -> RetrievalMetrics:
    """Metrics of one shared encoder; ``prototypes (A, D)`` are the published ones (default:
    exact means of the training artworks, a simulation-only monitor)."""
    n_artists = len(data.artists)
    train, query = data.split.train, data.split.query
    protos = prototypes
    if protos is None:
        protos, _ = prototypes_from(embed_views(model, data.bank, train), data.labels[train], n_artists)
    q = embed_views(model, data.bank, query)
    return evaluate_retrieval(q @ protos.T, cosine_similarity_matrix(q), data.labels[query])


def evaluate_personal(
    models: Sequence[nn.Module], data: FederationData, prototypes: np.ndarray | None = None
) -> RetrievalMetrics:
    """Metrics of per-client models (query fan-out); ``prototypes`` as in :func:`evaluate_global`,
    row ``a`` in the space of artist ``a``'s own model."""
    n_artists = len(data.artists)
    train, query = data.split.train, data.split.query
    scores = np.zeros((len(query), n_artists))
    similarity = np.zeros((len(query), len(query)))
    for model, artists in zip(models, data.clients):
        protos = prototypes
        if protos is None:  # a model scores its own artists only: their training artworks suffice
            own = train[np.isin(data.labels[train], artists)]
            protos, _ = prototypes_from(embed_views(model, data.bank, own), data.labels[own], n_artists)
        q = embed_views(model, data.bank, query)
        scores[:, artists] = (q @ protos.T)[:, artists]
        similarity += cosine_similarity_matrix(q) / len(models)
    return evaluate_retrieval(scores, similarity, data.labels[query])


def evaluate_frozen_features(data: FederationData) -> RetrievalMetrics:
    """Reference: the raw backbone inputs standardised with the training originals' statistics
    (the wikiart-dev README protocol) and averaged over the test-time views like every embedding,
    nearest prototype and cosine retrieval, no training."""
    train, query = data.split.train, data.split.query
    views = data.bank.test_time_inputs()
    originals = views[0].astype(np.float64)
    mu, sd = originals[train].mean(axis=0), originals[train].std(axis=0) + 1e-6
    z = (views.mean(axis=0, dtype=np.float64) - mu) / sd  # = the mean of the standardised views
    protos, _ = prototypes_from(z[train], data.labels[train], len(data.artists))
    zq = normalise_rows(z[query])
    return evaluate_retrieval(zq @ protos.T, cosine_similarity_matrix(z[query]), data.labels[query])


def evaluate_index(
    index: StyleIndex, images: np.ndarray, artists: Sequence[str], cache_dir: Path | None = None
) -> RetrievalMetrics:
    """Metrics of a published style index (what buyers are served) on held-out ``(N, S, S, 3)``
    uint8 ``images`` whose true artists are the names ``artists`` (features read from and added to
    ``cache_dir`` if given)."""
    rows = {name: i for i, name in enumerate(index.artists)}
    unknown = sorted(set(artists) - set(rows))
    if unknown:
        raise ModelError(f"the index has no prototype for artist(s) {', '.join(unknown)}")
    q = index.embed_images(images, cache_dir)
    return evaluate_retrieval(q @ index.prototypes.T, cosine_similarity_matrix(q), np.array([rows[a] for a in artists]))
