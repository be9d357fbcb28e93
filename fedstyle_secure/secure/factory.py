"""Build the :class:`~fedstyle_secure.secure.api.SecureSummation` of a ``--secure`` mode.

Options common to every mode: ``clip_range=(low, high)`` and ``max_clients`` (the masking
codec's range, and for CKKS the input bound checked against the modulus headroom; ``none``
ignores them).  Mode-specific options:

* ``ckks``: ``params`` (:class:`CkksParams`), ``secret_context`` / ``server_context``
  (:class:`CkksContext`, e.g. from a key bundle); fresh keys are generated when omitted.
* ``secagg`` / ``secagg+``: ``threshold``, ``identity_keys`` (artist id -> Ed25519 private
  key) and ``degree`` (SecAgg+ neighbourhood size; the graph itself comes from the artists' signed
  random contributions, never from a seed); ``clip_range`` is required and ``max_clients``
  defaults to the number of artists.

An option that the mode does not understand is an error, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.secure.api import SECURE_MODES, PlainSummation, SecureSummation

COMMON_OPTIONS = frozenset({"clip_range", "max_clients"})
MODE_OPTIONS: dict[str, frozenset[str]] = {
    "none": COMMON_OPTIONS,
    "ckks": COMMON_OPTIONS | {"params", "secret_context", "server_context"},
    "secagg": COMMON_OPTIONS | {"threshold", "identity_keys", "degree"},
    "secagg+": COMMON_OPTIONS | {"threshold", "identity_keys", "degree"},
}


def make_summation(mode: str, artist_ids: Sequence[str], **options: Any) -> SecureSummation:
    """The summation protecting ``mode`` for the given artists (see the module docstring for options)."""
    if mode not in SECURE_MODES:
        raise ConfigError(f"unknown secure mode {mode!r}; choose one of {', '.join(SECURE_MODES)}")
    unknown = sorted(set(options) - MODE_OPTIONS[mode])
    if unknown:
        raise ConfigError(f"--secure {mode} does not take option(s) {unknown}; it takes {sorted(MODE_OPTIONS[mode])}")
    if not artist_ids:
        raise ConfigError("a secure summation needs at least one artist")
    if mode == "none":
        return PlainSummation()
    if mode == "ckks":
        from fedstyle_secure.secure.ckks.summation import CkksSummation

        return CkksSummation(artist_ids, **options)
    return _masked_summation(mode, artist_ids, options)


def _masked_summation(mode: str, artist_ids: Sequence[str], options: dict[str, Any]) -> SecureSummation:
    try:
        from fedstyle_secure.secure.masking.summation import MaskedSummation
    except ImportError as exc:  # pragma: no cover - only while the masking module is absent
        raise ConfigError(f"--secure {mode} is unavailable: the masking module failed to import ({exc})") from exc
    if "clip_range" not in options:
        raise ConfigError(
            f"--secure {mode} needs clip_range=(low, high): the fixed-point range every input entry must lie in"
        )
    options.setdefault("max_clients", len(artist_ids))
    return MaskedSummation(mode, **options)
