"""Style-preserving augmentations: crops, flips and mild colour jitter.

Hue is never changed and jitter stays within +-10 %, so a view keeps its artist's palette
and stroke statistics.  Every view is a pure function of ``(image, view seed)``, which is
what lets frozen-backbone features of views be cached.
"""

from __future__ import annotations

import hashlib

import numpy as np

CROP_SCALE = (0.35, 1.0)  # fraction of the image area a crop keeps
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.1  # max relative change of brightness, contrast and saturation


def view_seed(image_key: str, view: int, seed: int) -> int:
    """Seed of augmented view ``view`` (>= 1) of the image with content key ``image_key``."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_key}:{view}".encode()).digest()[:8], "little")


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random style-preserving view of a ``(S, S, 3)`` uint8 image, same shape."""
    from PIL import Image, ImageEnhance  # here, not at import: an artist process handles no pixels (2 MB)

    size = image.shape[0]
    pil = Image.fromarray(image)
    area = size * size * rng.uniform(*CROP_SCALE)
    ratio = float(np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1]))))
    w = int(min(size, round(np.sqrt(area * ratio))))
    h = int(min(size, round(np.sqrt(area / ratio))))
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    pil = pil.crop((x0, y0, x0 + w, y0 + h)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        pil = enhancer(pil).enhance(float(rng.uniform(1 - JITTER, 1 + JITTER)))
    return np.asarray(pil, dtype=np.uint8)


def make_views(image: np.ndarray, image_key: str, n_views: int, seed: int) -> list[np.ndarray]:
    """``[original, view 1, ..., view n_views]`` of one image, deterministic in its arguments."""
    views = [image]
    for v in range(1, n_views + 1):
        views.append(augment(image, np.random.default_rng(view_seed(image_key, v, seed))))
    return views
