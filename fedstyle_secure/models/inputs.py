"""Model inputs for every artwork and augmented view, built once per data set.

For the default backbone an input is the frozen style-statistics vector of a view (computed
once and cached on disk by image content, so sweeps and baselines reuse it); for the
scratch CNN it is the view's pixels at low resolution.  Either way a training step only
indexes an array, which keeps DP-SGD's per-sample work on the small trainable part.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fedstyle_secure.data.array_cache import ArrayCache
from fedstyle_secure.data.augment import make_views
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.memory import return_freed_memory

log = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = ("efficientnet-lite0", "scratch")
DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_VIEWS = 4  # augmented views per artwork, plus the original
TEST_TIME_VIEWS = DEFAULT_VIEWS
"""Augmented views averaged with the original wherever an artwork is embedded to be published or
scored (prototypes, queries, index): test-time view averaging (:func:`~.embed.embed_views`).
0 embeds the original alone."""
SCRATCH_RESOLUTION = 64
_CACHE_VERSION = "v1"


def default_cache_dir() -> Path:
    """``$FEDSTYLE_CACHE`` or ``~/.cache/fedstyle-secure``."""
    return Path(os.environ.get("FEDSTYLE_CACHE", Path.home() / ".cache" / "fedstyle-secure"))


@dataclass(frozen=True)
class InputBank:
    """``views[v, i]`` is the model input of view ``v`` (0 = original) of artwork ``i``.

    ``kind`` is ``"features"`` (float32 vectors) or ``"pixels"`` (uint8 ``3xRxR`` images).
    """

    views: np.ndarray
    kind: str

    @property
    def n_views(self) -> int:
        return int(self.views.shape[0]) - 1

    def __len__(self) -> int:
        return int(self.views.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.views.shape[2:])

    def take(self, view: np.ndarray | int, items: np.ndarray) -> torch.Tensor:
        """Inputs of (view, item) pairs as a float tensor (pixels scaled to [0, 1])."""
        x = self.views[view, items]
        if self.kind == "pixels":
            return torch.from_numpy(x.astype(np.float32) / 255.0)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def test_time_inputs(self, views: int = TEST_TIME_VIEWS) -> np.ndarray:
        """Inputs ``(V, N, F)`` (flattened, not copied) of the original and the first ``views``
        augmented views of every artwork (fewer if the bank holds fewer): what test-time view averaging reads."""
        stack = self.views[: max(0, min(views, self.n_views)) + 1]
        return stack.reshape(len(stack), len(self), -1)

    def originals(self, items: np.ndarray | None = None) -> torch.Tensor:
        idx = np.arange(len(self)) if items is None else items
        return self.take(0, idx)


def _views_of(image: np.ndarray, key: str, n_views: int, seed: int) -> list[np.ndarray]:
    return make_views(image, key, n_views, seed) if n_views else [image]


def _pixel_bank(images: np.ndarray, keys: Sequence[str], n_views: int, seed: int, progress: bool) -> InputBank:
    from PIL import Image

    r = SCRATCH_RESOLUTION
    out = np.empty((n_views + 1, len(images), 3, r, r), dtype=np.uint8)
    for i in tqdm(range(len(images)), desc="augmenting", disable=not progress, leave=False):
        for v, view in enumerate(_views_of(images[i], keys[i], n_views, seed)):
            small = np.asarray(Image.fromarray(view).resize((r, r), Image.Resampling.BILINEAR))
            out[v, i] = small.transpose(2, 0, 1)
    return InputBank(views=out, kind="pixels")


def _feature_bank(
    images: np.ndarray,
    keys: Sequence[str],
    n_views: int,
    seed: int,
    cache_dir: Path | None,
    progress: bool,
    # artworks per forward pass (x views).  Peak resident memory of an artist process building its inputs
    # (scripts/bench_scale.py --artist-process, 12 artworks, cold cache): 32 -> 2.5 GB, 8 -> 1.06 GB, 2 -> 0.56 GB;
    # 2 was also faster on one core (3.7 s against 4.8-5.4 s of CPU for 12 artworks x 5 views).
    batch_size: int = 2,
) -> InputBank:
    from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM

    cache = ArrayCache(cache_dir, f"efficientnet-lite0-style-{_CACHE_VERSION}-s{images.shape[1]}-aug{seed}")
    out = np.empty((n_views + 1, len(images), STYLE_FEATURE_DIM), dtype=np.float32)
    # Views are a prefix-stable sequence (view v depends only on the image, v and the seed), so a
    # cached entry with fewer views is kept and only the missing views are computed.
    have: dict[int, np.ndarray] = {}

    def read_cache() -> list[int]:
        for i, key in enumerate(keys):
            cached = None if len(have.get(i, ())) >= n_views + 1 else cache.get(key)
            if cached is None or cached.ndim != 2 or cached.shape[1] != STYLE_FEATURE_DIM:
                continue
            if not np.all(np.isfinite(cached)):  # a damaged entry is a miss, recomputed
                continue
            if cached.shape[0] >= n_views + 1:
                out[:, i] = cached[: n_views + 1]
            have[i] = cached
        return [i for i in range(len(keys)) if len(have.get(i, ())) < n_views + 1]

    missing = read_cache()
    if missing:  # parties extracting the same images into this cache (e.g. the public set) do it once
        with cache.locked("extracting-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]):
            missing = read_cache()
            if missing:  # at most one extraction per core on a machine sharing the cache: each peaks at ~0.5 GB
                with cache.one_of("extraction-slot", os.cpu_count() or 1):
                    _extract(images, keys, n_views, seed, missing, have, out, cache, progress, batch_size)
    return InputBank(views=out, kind="features")


def _extract(
    images: np.ndarray,
    keys: Sequence[str],
    n_views: int,
    seed: int,
    missing: list[int],
    have: dict[int, np.ndarray],
    out: np.ndarray,
    cache: ArrayCache,
    progress: bool,
    batch_size: int,
) -> None:
    """Style statistics of the ``missing`` images' views not in ``have`` (their cached views) into
    ``out`` and the cache."""
    from fedstyle_secure.models.backbone import StyleStatistics

    extractor = StyleStatistics()
    log.info("extracting style statistics of %d artwork(s) x up to %d view(s)", len(missing), n_views + 1)
    bar = tqdm(total=len(missing), desc="style features", disable=not progress, leave=False)
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        first = min(len(have[i]) if i in have else 0 for i in chunk)  # views 0..first-1 cached for all
        views = np.stack([np.stack(_views_of(images[i], keys[i], n_views, seed)[first:]) for i in chunk], axis=1)
        v, b = views.shape[:2]
        pixels = torch.from_numpy(views.reshape(v * b, *views.shape[2:])).permute(0, 3, 1, 2).float() / 255.0
        feats = extractor(pixels).numpy().reshape(v, b, -1)
        for j, i in enumerate(chunk):
            out[first:, i] = feats[:, j]
            if first:
                out[:first, i] = have[i][:first]
            cache.put(keys[i], out[:, i])
        bar.update(len(chunk))
    bar.close()
    del extractor  # the backbone lives only while features are extracted
    return_freed_memory()


def build_input_bank(
    images: np.ndarray,
    keys: Sequence[str],
    backbone: str = DEFAULT_BACKBONE,
    n_views: int = DEFAULT_VIEWS,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> InputBank:
    """Inputs of the original and ``n_views`` augmented views of every image, for ``backbone``."""
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if n_views < 0:
        raise ConfigError(f"number of augmented views must be >= 0, got {n_views}")
    if backbone == "scratch":
        return _pixel_bank(images, keys, n_views, seed, progress)
    return _feature_bank(images, keys, n_views, seed, cache_dir, progress)
