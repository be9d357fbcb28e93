"""Embedding and prototype computation with a trained encoder (inference only)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedstyle_secure.models.inputs import TEST_TIME_VIEWS, InputBank


@torch.no_grad()
def embed(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Embeddings ``(N, D)`` of ``inputs`` in eval mode (dropout off); restores the training mode."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, 0), dtype=np.float32)


def mean_direction(per_view: np.ndarray) -> np.ndarray:
    """Test-time view averaging: embeddings ``(V, N, D)`` of ``V`` views of ``N`` artworks -> ``(N, D)``,
    the direction of the mean of the unit-normalised views.  Every row has unit norm (zero only if
    the views cancel), so an artist's sum of rows keeps L2 sensitivity 1 per artwork, as the
    prototype release assumes."""
    return normalise_rows(np.mean([normalise_rows(v) for v in per_view], axis=0))


#: Artworks whose views :func:`embed_views` feeds the model together: their inputs (5 views x 1,536
#: float32 features, 30 kB an artwork) stay near 120 MB however large the index.
EMBED_VIEWS_CHUNK = 4096


def embed_views(
    model: nn.Module, bank: InputBank, items: np.ndarray | None = None, views: int = TEST_TIME_VIEWS
) -> np.ndarray:
    """Embeddings ``(N, D)`` of ``items`` (default: every artwork of ``bank``) averaged over the
    original and the first ``views`` augmented views (fewer if the bank holds fewer), by
    :func:`mean_direction`.  ``views=0``: the original's embedding."""
    idx = np.arange(len(bank)) if items is None else np.asarray(items)
    n = max(0, min(views, bank.n_views))
    if len(idx) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    parts = []
    for start in range(0, len(idx), EMBED_VIEWS_CHUNK):  # every view of a chunk in one pass; memory bounded
        chunk = idx[start : start + EMBED_VIEWS_CHUNK]
        stacked = embed(model, bank.take(np.repeat(np.arange(n + 1), len(chunk)), np.tile(chunk, n + 1)))
        parts.append(mean_direction(stacked.reshape(n + 1, len(chunk), -1)))
    return np.concatenate(parts)


def prototype_sums(embeddings: np.ndarray, labels: np.ndarray, n_artists: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-artist sums ``(A, D)`` and counts ``(A,)`` of embeddings (rows of absent artists are 0)."""
    sums = np.zeros((n_artists, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, embeddings)
    counts = np.bincount(labels, minlength=n_artists).astype(np.float64)
    return sums, counts


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0)


def prototypes_from(embeddings: np.ndarray, labels: np.ndarray, n_artists: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm mean embedding per artist ``(A, D)`` and a mask of artists that have any item."""
    sums, counts = prototype_sums(embeddings, labels, n_artists)
    return normalise_rows(sums / np.maximum(counts, 1.0)[:, None]), counts > 0
