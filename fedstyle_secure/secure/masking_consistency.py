"""Consistency phase of pairwise masking: signed survivor sets, checked per share-holder group.

Bonawitz et al. 2017 ("ConsistencyCheck") add a round between the masked inputs and the
unmasking: the server shows every contributor the survivor set ``S`` (whose masked input
arrived), each signs it with its identity key, and nobody reveals a share before holding
enough signatures on *the same* set.  Without it a lying server tells the target ``T``
"only you survived" and everybody else "T and you survived", collects ``T``'s self-mask seed
and every peer's mask key, and reads ``T``'s input.

Notation: ``t`` the threshold, ``H(v)`` the share holders of ``v`` (``v`` and its neighbours),
``held(X)`` the owners whose shares artist ``X`` holds (``X`` itself and the peers whose sealed
shares it opened).  An honest artist ``X``

* **signs** (at most once per session, only after sending its masked input) the set it is shown
  only if ``X in S``, ``|S| >= t``, ``S`` lists only artists whose advertisements were included,
  every neighbour of ``X`` in ``S`` is in ``held(X)``, and ``|S & H(X)| >= t``
  (:func:`check_survivor_set`);
* **reveals** only if every signature relayed to it is valid on exactly (session, transcript,
  ``S``) -- the set it signed -- from a distinct member of ``S``, and for *every* owner
  ``v in held(X)`` at least ``t`` of them come from members of ``H(v)`` (:func:`signer_shortfall`;
  for SecAgg, where ``H(v)`` is the roster, this is Bonawitz's "t signatures on the set");
* answers only the request derived from ``S`` (:func:`unmask_lists`): seed shares of
  ``S & held(X)``, key shares of ``held(X) - S``; anything else is refused.

Why this suffices (per share-holder group, so it covers SecAgg+): two different (transcript, set)
pairs cannot both collect ``t`` signatures inside one group ``H(v)`` of ``m`` holders when
``t > (m + c) / 2`` with ``c`` colluders there, since honest artists sign once.  The argument and
what it does not cover are written out in ``docs/secure_masking.md``.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import AbstractSet

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.masking.config import RoundConfig


def survivor_bitmap(roster: Sequence[str], survivors: AbstractSet[str]) -> bytes:
    """``ceil(n/8)`` bytes, bit ``i`` (least significant first) set when ``roster[i]`` survived."""
    unknown = set(survivors) - set(roster)
    if unknown:
        raise SecureAggregationError(f"survivors {sorted(unknown)} are not in the roster")
    bits = bytearray((len(roster) + 7) // 8)
    for index, artist in enumerate(roster):
        if artist in survivors:
            bits[index // 8] |= 1 << (index % 8)
    return bytes(bits)


def survivors_from_bitmap(roster: Sequence[str], size: int, bitmap: bytes) -> frozenset[str]:
    """Inverse of :func:`survivor_bitmap`; the bitmap must cover exactly ``roster``."""
    if size != len(roster) or len(bitmap) != (size + 7) // 8:
        raise SecureAggregationError(f"survivor bitmap covers {size} artists, the roster has {len(roster)}")
    return frozenset(a for i, a in enumerate(roster) if bitmap[i // 8] >> (i % 8) & 1)


def check_survivor_set(
    config: RoundConfig, artist: str, held: AbstractSet[str], included: AbstractSet[str], survivors: AbstractSet[str]
) -> None:
    """Raise unless ``artist`` may sign ``survivors`` (see the module docstring)."""
    t = config.threshold
    if artist not in survivors:
        raise SecureAggregationError("the survivor set does not include me, but I sent my masked input")
    if len(survivors) < t:
        raise SecureAggregationError(f"the survivor set has {len(survivors)} members, threshold is {t}")
    strangers = survivors - included
    if strangers:
        raise SecureAggregationError(f"the survivor set lists {sorted(strangers)}, whose keys were never advertised")
    unheld = (survivors & set(config.neighbours[artist])) - held
    if unheld:
        raise SecureAggregationError(f"the survivor set lists neighbours {sorted(unheld)}, whose shares I never got")
    near = len(survivors.intersection(config.holders(artist)))
    if near < t:
        raise SecureAggregationError(f"only {near} of my share holders are in the survivor set, threshold is {t}")


def signer_shortfall(config: RoundConfig, owners: Iterable[str], signers: AbstractSet[str]) -> dict[str, int]:
    """Owners whose share holders include fewer than ``t`` of ``signers``, with how many they include."""
    counts = {v: len(signers.intersection(config.holders(v))) for v in owners}
    return {v: have for v, have in sorted(counts.items()) if have < config.threshold}


def signers_to_relay(config: RoundConfig, held: Iterable[str], signers: AbstractSet[str]) -> tuple[str, ...]:
    """The signers an artist holding shares of ``held`` needs to see: those among its owners' holders."""
    wanted: set[str] = set()
    for owner in held:
        wanted.update(config.holders(owner))
    return tuple(sorted(wanted & signers))


def unmask_lists(
    artist: str, held: AbstractSet[str], survivors: AbstractSet[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The only unmasking request consistent with the signed set: (owners whose self-mask seed
    shares to reveal, owners whose mask-key shares to reveal), each sorted."""
    return tuple(sorted(held & survivors)), tuple(sorted(held - survivors - {artist}))
