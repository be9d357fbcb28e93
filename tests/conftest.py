"""Shared fixtures: a tiny synthetic federation whose features are computed once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One compute thread per process: the suite runs servers, in-process artist threads and artist
# processes side by side on 2 cores, and torch's default (one thread per core in every process)
# oversubscribes them: a 20-round run measured ~30x slower that way on this machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")  # artist and server processes the tests start
torch.set_num_threads(1)

WIKIART_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wikiart-dev"


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """One feature and warm-start cache for the whole session (tests never touch the user's cache):
    the public set's features and the public warm start are computed once, not once per server."""
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["FEDSTYLE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_federation(feature_cache):
    """5 synthetic artists x 12 artworks, one client each, 2 augmented views per artwork."""
    from fedstyle_secure.training.dataset import load_artworks, prepare_federation

    artworks, source = load_artworks(None, True, 5, 12, seed=3)
    return prepare_federation(artworks, source, seed=3, n_views=2, cache_dir=feature_cache)


@pytest.fixture(scope="module")
def data(tmp_path_factory, feature_cache: Path) -> Path:
    """3 synthetic artists x 6 images in ``<tmp>/data/<artist>/``, for loopback federations; their
    feature cache ``data.parent / "cache"`` is the session's."""
    from fedstyle_secure.data.synth import write_synthetic_folder

    root = tmp_path_factory.mktemp("federation")
    write_synthetic_folder(root / "data", 3, 6, seed=0)
    (root / "cache").symlink_to(feature_cache, target_is_directory=True)
    return root / "data"
