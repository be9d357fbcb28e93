"""Retrieval metrics on held-out query artworks (pure NumPy).

Two tasks are measured:

* **artist assignment** -- each query is scored against every artist (``scores[q, a]``,
  e.g. cosine to the artist's published prototype): artist accuracy (P@1), top-k accuracy and
  macro-F1 of the top-1 assignment;
* **artwork-to-artwork retrieval** -- each query ranks all *other* queries by similarity;
  relevant = same artist: mean average precision (mAP) and leave-one-out nearest-neighbour
  precision (P@1, the protocol of the wikiart-dev reference figures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalMetrics:
    """All values are fractions in [0, 1]."""

    artist_accuracy: float
    macro_f1: float
    map: float
    top5_accuracy: float
    nn_precision_at_1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the ``k`` highest scores (ties broken by index)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def macro_f1(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes present in ``labels`` of the per-class F1 (0 when undefined)."""
    f1s = []
    for c in range(n_classes):
        true_c = labels == c
        if not true_c.any():
            continue
        pred_c = predicted == c
        tp = float(np.sum(true_c & pred_c))
        denom = float(true_c.sum() + pred_c.sum())
        f1s.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def average_precision(similarities: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one ranking: mean precision at the rank of each relevant item (NaN if none relevant)."""
    n_rel = int(relevant.sum())
    if n_rel == 0:
        return float("nan")
    order = np.argsort(-similarities, kind="stable")
    hits = relevant[order].astype(np.float64)
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision_at_k * hits) / n_rel)


def mean_average_precision(similarity: np.ndarray, labels: np.ndarray) -> float:
    """mAP of artwork-to-artwork retrieval: each item queries all others (itself excluded)."""
    aps = []
    n = len(labels)
    for i in range(n):
        others = np.arange(n) != i
        ap = average_precision(similarity[i, others], labels[others] == labels[i])
        if not np.isnan(ap):
            aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


def nearest_neighbour_precision(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out P@1: fraction of items whose most similar other item has the same label."""
    sim = similarity.astype(np.float64, copy=True)
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[np.argmax(sim, axis=1)] == labels))


def cosine_similarity_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine similarities between ``a`` and ``b`` (default ``a``)."""
    a_n = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b_n = a_n if b is None else b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a_n @ b_n.T


def evaluate_retrieval(
    artist_scores: np.ndarray, artwork_similarity: np.ndarray, labels: np.ndarray
) -> RetrievalMetrics:
    """All metrics from the query-by-artist score matrix and the query-by-query similarity matrix."""
    predicted = np.argmax(artist_scores, axis=1)
    return RetrievalMetrics(
        artist_accuracy=float(np.mean(predicted == labels)),
        macro_f1=macro_f1(predicted, labels, artist_scores.shape[1]),
        map=mean_average_precision(artwork_similarity, labels),
        top5_accuracy=top_k_accuracy(artist_scores, labels, 5),
        nn_precision_at_1=nearest_neighbour_precision(artwork_similarity, labels),
    )
