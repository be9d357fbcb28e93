"""Assemble a federation's data: artworks, split, public alignment set and model inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import (
    ArtworkSet,
    artwork_set_from_arrays,
    content_key,
    load_image_folder,
    load_public_folder,
)
from fedstyle_secure.data.public import default_public_set, load_public_set
from fedstyle_secure.data.split import DEFAULT_QUERY_FRACTION, Split, split_per_artist
from fedstyle_secure.data.synth import generate_artworks
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.models.inputs import (
    DEFAULT_BACKBONE,
    DEFAULT_VIEWS,
    InputBank,
    build_input_bank,
    default_cache_dir,
)

log = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ARTISTS = 8
DEFAULT_SYNTHETIC_PER_ARTIST = 24


@dataclass(frozen=True)
class FederationData:
    """Everything a simulation needs.  ``bank`` covers all artworks (train and query)."""

    artworks: ArtworkSet
    split: Split
    bank: InputBank
    public: InputBank
    clients: tuple[np.ndarray, ...]  # artist indices held by each client
    source: str
    cache_dir: Path | None = None  # where model inputs (and the public warm start) are cached

    @property
    def artists(self) -> tuple[str, ...]:
        return self.artworks.artists

    @property
    def labels(self) -> np.ndarray:
        return self.artworks.labels

    def client_train_items(self, client: int) -> np.ndarray:
        mask = np.isin(self.labels[self.split.train], self.clients[client])
        return self.split.train[mask]


def partition_artists(n_artists: int, artists_per_client: int, seed: int) -> tuple[np.ndarray, ...]:
    """Deal artists to clients, ``artists_per_client`` each (the last may hold fewer), seeded."""
    if artists_per_client < 1:
        raise ConfigError(f"--artists-per-client must be >= 1, got {artists_per_client}")
    if artists_per_client > n_artists:
        raise ConfigError(f"--artists-per-client {artists_per_client} exceeds the {n_artists} artists available")
    order = (
        np.random.default_rng([seed, 0xC11E]).permutation(n_artists) if artists_per_client > 1 else np.arange(n_artists)
    )
    return tuple(np.sort(order[i : i + artists_per_client]) for i in range(0, n_artists, artists_per_client))


def load_artworks(
    data_dir: Path | None, synthetic: bool, n_artists: int, per_artist: int, seed: int
) -> tuple[ArtworkSet, str]:
    """Artworks from an image folder, or the procedural default."""
    if (data_dir is None) == (not synthetic):
        raise ConfigError("give exactly one of --data DIR or --synthetic")
    if data_dir is not None:
        artworks, report = load_image_folder(data_dir)
        if report.skipped or report.skipped_artists:
            log.warning(
                "loaded %d artworks of %d artists from %s; skipped %d image(s) and %d artist folder(s)",
                report.loaded,
                len(artworks.artists),
                data_dir,
                len(report.skipped),
                len(report.skipped_artists),
            )
        return artworks, str(data_dir)
    if n_artists < 2 or per_artist < 2:
        raise ConfigError(
            f"a synthetic federation needs >= 2 artists with >= 2 artworks each, got {n_artists} x {per_artist}"
        )
    styles, images, labels = generate_artworks(n_artists, per_artist, seed)
    return artwork_set_from_arrays(
        images, labels, [s.name for s in styles], "synthetic"
    ), f"synthetic:{n_artists}x{per_artist}:seed{seed}"


def load_public_images(public_dir: Path | None, public_set: str | None = None) -> np.ndarray:
    """The public alignment images: an image folder, else the named set (default
    :func:`~fedstyle_secure.data.public.default_public_set`)."""
    if public_dir is not None:
        return load_public_folder(public_dir)
    return load_public_set(public_set or default_public_set())


def prepare_federation(
    artworks: ArtworkSet,
    source: str,
    *,
    backbone: str = DEFAULT_BACKBONE,
    query_fraction: float = DEFAULT_QUERY_FRACTION,
    seed: int = 0,
    artists_per_client: int = 1,
    public_dir: Path | None = None,
    public_set: str | None = None,
    n_views: int = DEFAULT_VIEWS,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> FederationData:
    """Split, partition and compute model inputs (cached) for a federation."""
    split = split_per_artist(artworks.labels, artworks.artists, query_fraction, seed)
    cache = default_cache_dir() if cache_dir is None else cache_dir
    bank = build_input_bank(
        artworks.images, artworks.keys, backbone, n_views, seed=0, cache_dir=cache, progress=progress
    )
    public_images = load_public_images(public_dir, public_set)
    public = build_input_bank(
        public_images,
        [content_key(p) for p in public_images],
        backbone,
        n_views,
        seed=0,
        cache_dir=cache,
        progress=progress,
    )
    clients = partition_artists(len(artworks.artists), artists_per_client, seed)
    return FederationData(
        artworks=artworks, split=split, bank=bank, public=public, clients=clients, source=source, cache_dir=cache
    )
