"""Procedural artworks: synthetic artists, each with a distinct, learnable style.

A *style* fixes the statistics an artist repeats across works -- palette family, stroke
direction and its spread, stroke length and width, texture scale of the ground, stroke
density and composition habit -- while each artwork draws its own subject layout, palette
shift and jitter.  Artists are built in palette families that share colours, so colour
alone does not identify an artist: telling family members apart needs stroke statistics,
which is what makes the task learnable but not trivial for frozen features.

Pure NumPy/PIL, no file I/O (see :func:`write_synthetic_folder` for the on-disk form).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import ImageDraw

DEFAULT_SIZE = 224


@dataclass(frozen=True)
class ArtistStyle:
    """The parameters that define one synthetic artist (angles in radians, lengths in pixels at 224 px)."""

    name: str
    palette_hues: tuple[float, ...]  # base hues in [0, 1)
    saturation: float
    value: float
    stroke_angle: float
    angle_spread: float
    stroke_length: float
    stroke_width: int
    stroke_count: int
    texture_scale: int  # cells of the ground's noise grid per side
    blur: float
    curvature: float  # 0 = straight strokes; >0 bends each stroke


def _palette_family(rng: np.random.Generator) -> tuple[float, ...]:
    base = rng.random()
    return tuple(float((base + off) % 1.0) for off in rng.normal(0.0, 0.08, size=4))


@dataclass(frozen=True)
class _Family:
    """What the artists of one family share (each artist jitters it)."""

    hues: tuple[float, ...]
    saturation: float
    value: float
    angle: float  # radians
    texture: int


def sample_artist_styles(n_artists: int, seed: int, family_size: int = 4) -> list[ArtistStyle]:
    """Draw ``n_artists`` styles in families of ``family_size``.

    Family members share palette, ground texture and main stroke direction and differ only in
    stroke length, width, curvature, spread and density -- the subtle habits that make the
    task hard for frozen features.
    """
    if n_artists < 1:
        raise ValueError(f"n_artists must be >= 1, got {n_artists}")
    rng = np.random.default_rng([seed, 0x5E7])
    styles: list[ArtistStyle] = []
    family: _Family
    for i in range(n_artists):
        if i % family_size == 0:  # true for i = 0, so a family is always drawn first
            family = _Family(
                hues=_palette_family(rng),
                saturation=float(rng.uniform(0.4, 0.8)),
                value=float(rng.uniform(0.5, 0.85)),
                angle=float(rng.uniform(0, math.pi)),
                texture=int(rng.integers(3, 10)),
            )
        styles.append(
            ArtistStyle(
                name=f"artist_{i:02d}",
                palette_hues=tuple(float((h + rng.normal(0, 0.02)) % 1.0) for h in family.hues),
                saturation=family.saturation + float(rng.normal(0, 0.04)),
                value=family.value + float(rng.normal(0, 0.04)),
                stroke_angle=family.angle + float(rng.normal(0, 0.25)),
                angle_spread=float(rng.uniform(0.25, 0.5)),
                stroke_length=float(rng.uniform(14, 24)),
                stroke_width=int(rng.integers(2, 4)),
                stroke_count=int(rng.integers(250, 400)),
                texture_scale=family.texture,
                blur=float(rng.uniform(0.0, 0.4)),
                curvature=float(rng.uniform(0.0, 0.35)),
            )
        )
    return styles


def _hsv_to_rgb255(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _ground(style: ArtistStyle, rng: np.random.Generator, size: int, hue_shift: float) -> np.ndarray:
    """Low-frequency textured ground: a noise grid of ``texture_scale`` cells, upsampled, over a gradient."""
    from PIL import Image  # Pillow is imported where pixels are drawn, not by every importer (2 MB)

    cells = max(2, style.texture_scale + int(rng.integers(-1, 2)))
    noise = rng.random((cells, cells)).astype(np.float32)
    noise_img = Image.fromarray((noise * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    noise = np.asarray(noise_img, dtype=np.float32) / 255.0
    direction = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gradient = math.cos(direction) * xx + math.sin(direction) * yy
    gradient = (gradient - gradient.min()) / max(float(np.ptp(gradient)), 1e-6)
    h0 = style.palette_hues[int(rng.integers(len(style.palette_hues)))] + hue_shift
    c0 = np.array(_hsv_to_rgb255(h0, style.saturation * 0.6, style.value * 0.8), dtype=np.float32)
    c1 = np.array(_hsv_to_rgb255(h0 + 0.05, style.saturation * 0.4, style.value), dtype=np.float32)
    mix = 0.6 * gradient + 0.4 * noise
    ground = c0[None, None, :] * (1 - mix[..., None]) + c1[None, None, :] * mix[..., None]
    return np.clip(ground, 0, 255).astype(np.uint8)


def _draw_subject(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Content shared by no artist: a few large shapes in random colours (what is painted,
    as opposed to how), which a style encoder has to learn to look past."""
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(-0.2, 0.8, size=2) * size
        w, h = rng.uniform(0.15, 0.6, size=2) * size
        colour = _hsv_to_rgb255(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 1.0))
        box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)


def render_artwork(style: ArtistStyle, rng: np.random.Generator, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Render one artwork of ``style`` as a ``(size, size, 3)`` uint8 RGB array."""
    from PIL import Image, ImageDraw, ImageFilter

    scale = size / DEFAULT_SIZE
    hue_shift = float(rng.normal(0.0, 0.06))
    image = Image.fromarray(_ground(style, rng, size, hue_shift))
    draw = ImageDraw.Draw(image)
    _draw_subject(draw, rng, size)
    # composition: strokes cluster around a few focal points drawn per artwork
    n_focal = int(rng.integers(1, 4))
    focal = rng.uniform(0.15, 0.85, size=(n_focal, 2)) * size
    angle_jitter = float(rng.normal(0.0, 0.3))
    length_scale = float(rng.uniform(0.75, 1.25))
    n_strokes = int(style.stroke_count * rng.uniform(0.5, 1.5))
    for _ in range(n_strokes):
        if rng.random() < 0.6:
            cx, cy = focal[int(rng.integers(n_focal))] + rng.normal(0, size * 0.18, size=2)
        else:
            cx, cy = rng.uniform(0, size, size=2)
        angle = style.stroke_angle + angle_jitter + rng.normal(0.0, style.angle_spread)
        length = max(2.0, rng.normal(style.stroke_length, style.stroke_length * 0.3)) * scale * length_scale
        hue = style.palette_hues[int(rng.integers(len(style.palette_hues)))] + hue_shift
        colour = _hsv_to_rgb255(
            hue + rng.normal(0, 0.02),
            style.saturation + rng.normal(0, 0.1),
            style.value + rng.normal(0, 0.12),
        )
        n_seg = 3
        points = [(float(cx), float(cy))]
        for _ in range(n_seg):
            angle += rng.normal(0.0, style.curvature)
            cx += math.cos(angle) * length / n_seg
            cy += math.sin(angle) * length / n_seg
            points.append((float(cx), float(cy)))
        draw.line(points, fill=colour, width=max(1, round(style.stroke_width * scale)))
    blur = style.blur + float(rng.uniform(0.0, 0.6))
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius=blur * scale))
    return np.asarray(image, dtype=np.uint8)


def generate_artworks(
    n_artists: int, per_artist: int, seed: int, size: int = DEFAULT_SIZE
) -> tuple[list[ArtistStyle], np.ndarray, np.ndarray]:
    """Generate ``per_artist`` artworks for each of ``n_artists`` synthetic artists.

    Returns ``(styles, images, labels)`` with images ``(n_artists*per_artist, size, size, 3)`` uint8
    and labels the artist index of each image.  Same arguments, same pixels.
    """
    styles = sample_artist_styles(n_artists, seed)
    images = np.empty((n_artists * per_artist, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_artists), per_artist)
    for a, style in enumerate(styles):
        for j in range(per_artist):
            rng = np.random.default_rng([seed, a, j])
            images[a * per_artist + j] = render_artwork(style, rng, size)
    return styles, images, labels


def generate_public_images(count: int, seed: int, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Public alignment images: each drawn in its own random style (no federation artist's).

    They are public by nature (made by this code from a public seed), so embedding them costs
    no privacy.  Seeds live in a separate stream from :func:`generate_artworks`.  Rendered anew on
    every call (:func:`fedstyle_secure.data.public.load_public_set` keeps the ``generated`` set
    decoded once per process).
    """
    styles = sample_artist_styles(count, seed=seed + 1_000_003, family_size=1)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i, style in enumerate(styles):
        out[i] = render_artwork(style, np.random.default_rng([seed, 0xB1C, i]), size)
    return out


def write_synthetic_folder(out: Path, n_artists: int, per_artist: int, seed: int, size: int = DEFAULT_SIZE) -> int:
    """Write ``<out>/<artist>/<nnn>.png`` for a synthetic federation; returns the number of files."""
    from PIL import Image

    styles, images, labels = generate_artworks(n_artists, per_artist, seed, size)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = out / styles[label].name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i % per_artist:03d}.png")
    return len(images)
