"""Deterministic, seeded per-artist split into private training images and held-out queries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedstyle_secure.errors import ConfigError

DEFAULT_QUERY_FRACTION = 0.4


@dataclass(frozen=True)
class Split:
    """Indices into an :class:`~fedstyle_secure.data.images.ArtworkSet` (sorted ascending)."""

    train: np.ndarray
    query: np.ndarray


def _artist_seed(seed: int, artist: str) -> int:
    digest = hashlib.sha256(f"{seed}:{artist}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_per_artist(
    labels: np.ndarray, artists: tuple[str, ...], query_fraction: float = DEFAULT_QUERY_FRACTION, seed: int = 0
) -> Split:
    """Hold out ``round(query_fraction * n)`` images of every artist (at least 1, at most n - 1).

    Each artist's permutation depends only on ``(seed, artist name)`` and the order of its own
    images, so adding or removing another artist never changes this artist's split.
    """
    if not 0.0 < query_fraction < 1.0:
        raise ConfigError(f"--query-fraction must be strictly between 0 and 1, got {query_fraction}")
    train: list[int] = []
    query: list[int] = []
    for label, artist in enumerate(artists):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise ConfigError(f"artist {artist!r} has {len(members)} image(s); a split needs at least 2")
        order = np.random.default_rng(_artist_seed(seed, artist)).permutation(len(members))
        n_query = min(max(1, round(query_fraction * len(members))), len(members) - 1)
        query.extend(members[order[:n_query]].tolist())
        train.extend(members[order[n_query:]].tolist())
    return Split(train=np.sort(np.asarray(train, dtype=np.int64)), query=np.sort(np.asarray(query, dtype=np.int64)))
