"""Shared fixtures: a tiny synthetic federation whose features are computed once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WIKIART_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wikiart-dev"


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    """A per-session feature cache (tests never touch the user's cache)."""
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["FEDSTYLE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_federation(feature_cache):
    """5 synthetic artists x 12 artworks, one client each, 2 augmented views per artwork."""
    from fedstyle_secure.training.dataset import load_artworks, prepare_federation

    artworks, source = load_artworks(None, True, 5, 12, seed=3)
    return prepare_federation(artworks, source, seed=3, n_views=2, cache_dir=feature_cache)
