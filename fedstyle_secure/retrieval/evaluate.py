"""Score held-out queries against artist prototypes and each other.

*Global* algorithms (one shared encoder): each artist's prototype is the mean embedding of its
training artworks; a query is scored by cosine to every prototype.  *Personal* algorithms
(``local``, ``fedproto``: one model per client) have no shared space, so a query is fanned out:
artist ``a`` is scored by its own client's model, cosine between the query and its prototype
in that model; artwork similarity is the mean over clients' models of the cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from fedstyle_secure.errors import ModelError
from fedstyle_secure.models.embed import embed, prototypes_from
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
        protos, _ = prototypes_from(embed(model, data.bank.originals(train)), data.labels[train], n_artists)
    q = embed(model, data.bank.originals(query))
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
        if protos is None:
            protos, _ = prototypes_from(embed(model, data.bank.originals(train)), data.labels[train], n_artists)
        q = embed(model, data.bank.originals(query))
        scores[:, artists] = (q @ protos.T)[:, artists]
        similarity += cosine_similarity_matrix(q) / len(models)
    return evaluate_retrieval(scores, similarity, data.labels[query])


def evaluate_frozen_features(data: FederationData) -> RetrievalMetrics:
    """Reference: the raw backbone inputs standardised with the training images' statistics
    (the wikiart-dev README protocol), nearest prototype and cosine retrieval, no training."""
    train, query = data.split.train, data.split.query
    feats = data.bank.views[0].reshape(len(data.labels), -1).astype(np.float64)
    mu, sd = feats[train].mean(axis=0), feats[train].std(axis=0) + 1e-6
    z = (feats - mu) / sd
    protos, _ = prototypes_from(z[train], data.labels[train], len(data.artists))
    zq = z[query] / np.linalg.norm(z[query], axis=1, keepdims=True)
    return evaluate_retrieval(zq @ protos.T, cosine_similarity_matrix(z[query]), data.labels[query])


def evaluate_index(index: StyleIndex, images: np.ndarray, artists: Sequence[str]) -> RetrievalMetrics:
    """Metrics of a published style index (what buyers are served) on held-out ``(N, S, S, 3)``
    uint8 ``images`` whose true artists are the names ``artists``."""
    rows = {name: i for i, name in enumerate(index.artists)}
    unknown = sorted(set(artists) - set(rows))
    if unknown:
        raise ModelError(f"the index has no prototype for artist(s) {', '.join(unknown)}")
    q = index.embed_images(images)
    return evaluate_retrieval(q @ index.prototypes.T, cosine_similarity_matrix(q), np.array([rows[a] for a in artists]))
