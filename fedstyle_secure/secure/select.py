"""Choose the secure summation for ``--secure MODE`` (plain, CKKS or masking)."""

from __future__ import annotations

from collections.abc import Sequence

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.secure.api import SECURE_MODES, PlainSummation, SecureSummation


def make_summation(mode: str, participants: Sequence[str], **options: object) -> SecureSummation:
    """A :class:`SecureSummation` for ``mode`` over ``participants`` (artist/client ids)."""
    if mode not in SECURE_MODES:
        raise ConfigError(f"unknown secure mode {mode!r}; choose one of {', '.join(SECURE_MODES)}")
    if mode == "none":
        return PlainSummation()
    from fedstyle_secure.secure.factory import make_summation

    return make_summation(mode, list(participants), **options)


def summation_factory(mode: str, **options: object):
    """A ``(participants, value_range) -> SecureSummation`` factory for the simulator (``None``
    for ``mode == "none"``, meaning plain sums)."""
    if mode not in SECURE_MODES:
        raise ConfigError(f"unknown secure mode {mode!r}; choose one of {', '.join(SECURE_MODES)}")
    if mode == "none":
        return None

    def build(participants: Sequence[str], value_range: tuple[float, float]) -> SecureSummation:
        return make_summation(mode, participants, clip_range=value_range, **options)

    return build
