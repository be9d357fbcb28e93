"""Pairwise-masking secure aggregation (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020).

Protocol of one round, all messages relayed by the server (phases named as in
:class:`~fedstyle_secure.secure.masking.config.MaskingPhase`):

1. ``advertise``: each artist sends two fresh X25519 public keys (share encryption, masking)
   and a fresh 32-byte random contribution, signed with its Ed25519 identity key over the round
   configuration digest; the server forwards every included advertisement to every artist,
   which verifies them against identity keys received out of band and derives the SecAgg+
   graph from their transcript.
2. ``share``: each artist Shamir-shares (t-of-m) its mask private key and a fresh self-mask
   seed among its neighbours and itself, sealing each share with ChaCha20-Poly1305 bound to
   (round, sender, receiver).
3. ``masked_input``: each artist sends ``encode(x) + PRG(self seed) + sum_v +-PRG(s_uv)``
   modulo 2^32, with ``+`` towards higher ids and ``-`` towards lower ids.
4. ``consistency``: the server shows each contributor the survivor set; each signs it (once)
   with its identity key, bound to the session and the transcript.
5. ``unmask``: the server relays the signatures; each signer checks them (>= t valid ones from
   the share holders of every owner it holds shares of, on exactly the set it signed) and only
   then reveals shares of the signed survivors' self-mask seeds and of the mask keys of held
   owners outside the set.  The server reconstructs, strips all remaining masks and decodes.

This module gathers the public names; each part lives in its own module.
"""

from __future__ import annotations

from fedstyle_secure.secure.masking.artist import MaskingArtist, MaskingArtistState, mask_sign
from fedstyle_secure.secure.masking.config import (
    MASKING_MODES,
    MASKING_PHASES,
    MaskingPhase,
    RoundConfig,
    resolve_threshold,
)
from fedstyle_secure.secure.masking.server import MaskingOutcome, MaskingServer

__all__ = [
    "MASKING_MODES",
    "MASKING_PHASES",
    "MaskingArtist",
    "MaskingArtistState",
    "MaskingOutcome",
    "MaskingPhase",
    "MaskingServer",
    "RoundConfig",
    "mask_sign",
    "resolve_threshold",
]
