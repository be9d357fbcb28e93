"""Artist-side state machine of pairwise-masking secure aggregation (Bonawitz et al. 2017).

One :class:`MaskingArtist` lives for one round.  It consumes server messages and returns its
replies; it does no I/O.  Each method checks round id, receiver, phase and content first and
raises :class:`SecureAggregationError` *without changing state* if anything is wrong, so a
replayed or forged message is refused and the genuine one can still be processed.

Threat model: the server is untrusted for privacy (it relays everything, may drop, replay,
reorder or tamper with messages, lie about who dropped and show different artists different
participant lists or advertisement sets); the identity public keys of all artists reach every
artist out of band and authenticate the advertised keys and the survivor-set signatures.  The
artist reveals no share before the consistency checks of
:mod:`~fedstyle_secure.secure.masking.consistency` pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.masking.config import MaskingPhase, RoundConfig
from fedstyle_secure.secure.masking.consistency import (
    check_survivor_set,
    signer_shortfall,
    survivors_from_bitmap,
    unmask_lists,
)
from fedstyle_secure.secure.masking.crypto import (
    CONTRIBUTION_BYTES,
    open_sealed,
    pairwise_mask_seed,
    private_bytes,
    public_bytes,
    seal,
    share_associated_data,
    share_ciphers,
    sign_advertisement,
    sign_survivors,
    survivors_signature_valid,
    transcript_digest,
    verify_advertisement,
    x25519_from_private_bytes,
)
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    Message,
    ShareDelivery,
    ShareKeys,
    SurvivorSet,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    decode_share_plaintext,
    encode_share_plaintext,
    parse_message,
)
from fedstyle_secure.secure.masking.prg import SEED_BYTES, MaskGenerator
from fedstyle_secure.secure.masking.shamir import split_secret

# what the server sends an artist (each method checks it got the one its phase expects)
_Inbound = TypeVar("_Inbound", KeyRoster, ShareDelivery, SurvivorSet, UnmaskRequest)


@dataclass(frozen=True)
class MaskingArtistState:
    """Everything a :class:`MaskingArtist` knows after a phase, for an artist process that must resume
    the round in another process (a Flower ClientApp runs one process per message).  No I/O here.

    Threat model: this IS the artist's secret key material of the round (its two X25519 private keys,
    its self-mask seed, the Shamir shares it holds of its peers' secrets) and its phase, the guard
    that it answers each phase once: the caller keeps it as private as the artist's identity key,
    stores each new state before the reply that produced it leaves the process, and deletes it when
    the round ends.  A resumed artist must be given the state of its latest reply, never an older
    one: an older phase would let a server replaying earlier messages get a second survivor set
    signed and so collect both shares of one peer."""

    phase: str
    enc_key: bytes
    mask_key: bytes
    self_seed: bytes
    contribution: bytes
    transcript: bytes = b""  # empty before the key roster is verified
    advert: bytes = b""  # my AdvertiseKeys message
    included: tuple[str, ...] = ()
    peers: tuple[bytes, ...] = ()  # AdvertiseKeys messages of my live neighbours
    held: tuple[tuple[str, bytes, bytes], ...] = ()  # (owner, key share, seed share)
    signed: bytes = b""  # the SurvivorSet message I signed

    def to_dict(self) -> dict[str, Any]:
        """JSON values (bytes as hex)."""
        return {
            "phase": self.phase,
            "enc_key": self.enc_key.hex(),
            "mask_key": self.mask_key.hex(),
            "self_seed": self.self_seed.hex(),
            "contribution": self.contribution.hex(),
            "transcript": self.transcript.hex(),
            "advert": self.advert.hex(),
            "included": list(self.included),
            "peers": [p.hex() for p in self.peers],
            "held": [[owner, key.hex(), seed.hex()] for owner, key, seed in self.held],
            "signed": self.signed.hex(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MaskingArtistState:
        """The inverse of :meth:`to_dict` (``KeyError`` / ``ValueError`` / ``TypeError`` on bad values)."""
        return cls(
            phase=str(values["phase"]),
            enc_key=bytes.fromhex(values["enc_key"]),
            mask_key=bytes.fromhex(values["mask_key"]),
            self_seed=bytes.fromhex(values["self_seed"]),
            contribution=bytes.fromhex(values["contribution"]),
            transcript=bytes.fromhex(values["transcript"]),
            advert=bytes.fromhex(values["advert"]),
            included=tuple(str(a) for a in values["included"]),
            peers=tuple(bytes.fromhex(p) for p in values["peers"]),
            held=tuple((str(o), bytes.fromhex(k), bytes.fromhex(s)) for o, k, s in values["held"]),
            signed=bytes.fromhex(values["signed"]),
        )


def mask_sign(owner: str, peer: str) -> int:
    """Sign with which ``owner`` adds the mask it shares with ``peer``: + if owner < peer, else -."""
    return 1 if owner < peer else -1


_Stored = TypeVar("_Stored", AdvertiseKeys, SurvivorSet)


def _parsed(data: bytes, expected: type[_Stored]) -> _Stored:
    message = parse_message(data)
    if not isinstance(message, expected):
        raise SecureAggregationError(
            f"stored masking state: expected {expected.__name__}, got {type(message).__name__}"
        )
    return message


class MaskingArtist:
    """One artist's view of one masking round."""

    def __init__(
        self,
        config: RoundConfig,
        artist_id: str,
        identity_key: Ed25519PrivateKey,
        identity_publics: Mapping[str, Ed25519PublicKey],
    ) -> None:
        if artist_id not in config.share_x:
            raise SecureAggregationError(f"{artist_id!r} is not in the roster of round {config.round_id}")
        self.config = config
        self.artist_id = artist_id
        self.phase = MaskingPhase.ADVERTISE
        self._identity_key = identity_key
        self._identity_publics = identity_publics
        self._enc_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._self_seed = os.urandom(SEED_BYTES)
        self._contribution = os.urandom(CONTRIBUTION_BYTES)
        self._advert: AdvertiseKeys | None = None
        self._included: frozenset[str] = frozenset()  # artists whose advertisements the transcript holds
        self._peers: dict[str, AdvertiseKeys] = {}
        self._held: dict[str, tuple[bytes, bytes]] = {}  # owner -> (key share, seed share) values
        self._inbound: dict[str, ChaCha20Poly1305] = {}  # peer -> AEAD of shares it sends me
        self._signed: SurvivorSet | None = None  # the one survivor set this artist signed

    # -- resuming in another process ---------------------------------------------------------

    def export_state(self) -> MaskingArtistState:
        """This artist's secrets and phase (see :class:`MaskingArtistState` for how to keep them)."""
        return MaskingArtistState(
            phase=self.phase.value,
            enc_key=private_bytes(self._enc_key),
            mask_key=private_bytes(self._mask_key),
            self_seed=self._self_seed,
            contribution=self._contribution,
            transcript=self.config.transcript or b"",
            advert=b"" if self._advert is None else self._advert.to_bytes(),
            included=tuple(sorted(self._included)),
            peers=tuple(self._peers[p].to_bytes() for p in sorted(self._peers)),
            held=tuple((owner, key, seed) for owner, (key, seed) in sorted(self._held.items())),
            signed=b"" if self._signed is None else self._signed.to_bytes(),
        )

    @classmethod
    def resume(
        cls,
        config: RoundConfig,
        artist_id: str,
        identity_key: Ed25519PrivateKey,
        identity_publics: Mapping[str, Ed25519PublicKey],
        state: MaskingArtistState,
    ) -> MaskingArtist:
        """The artist of ``state`` for the unbound ``config`` it advertised under (bound here to the
        stored transcript); the share AEADs are derived again from the stored keys."""
        artist = cls(config, artist_id, identity_key, identity_publics)
        if state.transcript:
            artist.config = config.bind(state.transcript)
        artist.phase = MaskingPhase(state.phase)
        artist._enc_key = x25519_from_private_bytes(state.enc_key)
        artist._mask_key = x25519_from_private_bytes(state.mask_key)
        artist._self_seed, artist._contribution = state.self_seed, state.contribution
        artist._advert = _parsed(state.advert, AdvertiseKeys) if state.advert else None
        artist._included = frozenset(state.included)
        adverts = [_parsed(p, AdvertiseKeys) for p in state.peers]
        artist._peers = {a.sender: a for a in adverts}
        artist._inbound = {
            a.sender: share_ciphers(artist._enc_key, a.enc_public, config.round_id, artist_id, a.sender)[1]
            for a in adverts
        }
        artist._held = {owner: (key, seed) for owner, key, seed in state.held}
        artist._signed = _parsed(state.signed, SurvivorSet) if state.signed else None
        return artist

    # -- helpers ---------------------------------------------------------------------------

    def _fail(self, reason: str) -> SecureAggregationError:
        return SecureAggregationError(f"artist {self.artist_id!r}, round {self.config.round_id}: {reason}")

    def _check(self, message: Message, expected: type[_Inbound], phase: MaskingPhase) -> _Inbound:
        """``message`` if it is an ``expected`` for this artist, this round and ``phase``; raises otherwise."""
        if not isinstance(message, expected):
            raise self._fail(f"expected {expected.__name__}, got {type(message).__name__}")
        if message.round_id != self.config.round_id:
            raise self._fail(f"refusing {expected.__name__} of round {message.round_id} (replayed or misrouted)")
        if message.receiver != self.artist_id:
            raise self._fail(f"refusing {expected.__name__} addressed to {message.receiver!r}")
        if self.phase is not phase:
            raise self._fail(f"refusing {expected.__name__} in phase {self.phase.value!r} (duplicate or out of order)")
        return message

    def _unique(self, ids: list[str], what: str) -> set[str]:
        if len(set(ids)) != len(ids):
            raise self._fail(f"duplicate entries in {what}")
        return set(ids)

    # -- phases ----------------------------------------------------------------------------

    def advertise_keys(self) -> AdvertiseKeys:
        """Phase "advertise": sign and send the two fresh X25519 public keys and a fresh random
        contribution, bound to this round's configuration digest."""
        if self.phase is not MaskingPhase.ADVERTISE:
            raise self._fail("keys were already advertised")
        rid, digest = self.config.round_id, self.config.digest
        enc, mask = public_bytes(self._enc_key), public_bytes(self._mask_key)
        signature = sign_advertisement(self._identity_key, rid, digest, self.artist_id, enc, mask, self._contribution)
        self._advert = AdvertiseKeys(rid, self.artist_id, enc, mask, self._contribution, signature)
        self.phase = MaskingPhase.SHARE
        return self._advert

    def _verified_transcript(self, roster: KeyRoster) -> RoundConfig:
        """Check the key roster (every included advertisement, mine unchanged, all signed for my config)
        and return my config bound to its transcript, which fixes the SecAgg+ graph."""
        senders = self._unique([a.sender for a in roster.adverts], "key roster")
        strangers = senders - set(self.config.share_x)
        if strangers:
            raise self._fail(f"key roster lists artists outside the roster {sorted(strangers)}")
        missing = senders - set(self._identity_publics) - {self.artist_id}
        if missing:
            raise self._fail(f"no identity public key for {sorted(missing)}")
        if self._advert not in roster.adverts:
            raise self._fail("key roster omits or alters my own advertisement")
        rid, digest = self.config.round_id, self.config.digest
        for advert in roster.adverts:
            if advert.sender != self.artist_id:
                verify_advertisement(
                    self._identity_publics[advert.sender],
                    rid,
                    digest,
                    advert.sender,
                    advert.enc_public,
                    advert.mask_public,
                    advert.contribution,
                    advert.signature,
                )
        ordered = sorted(roster.adverts, key=lambda a: self.config.share_x[a.sender])
        entries = [(a.sender, a.enc_public, a.mask_public, a.contribution) for a in ordered]
        transcript = transcript_digest(digest, entries)
        return self.config.bind(transcript)

    def share_keys(self, roster: Message) -> ShareKeys:
        """Phase "share": verify every included signed advertisement, fix the graph from their
        transcript, then seal Shamir shares of both secrets to each live neighbour."""
        roster = self._check(roster, KeyRoster, MaskingPhase.SHARE)
        config = self._verified_transcript(roster)
        rid = config.round_id
        included = frozenset(a.sender for a in roster.adverts)
        senders = set(config.neighbours[self.artist_id]) & included
        holders = sorted(senders | {self.artist_id})
        if len(holders) < config.threshold:
            raise self._fail(f"only {len(holders)} share holders advertised keys, threshold is {config.threshold}")
        xs = [config.share_x[h] for h in holders]
        key_shares = split_secret(private_bytes(self._mask_key), config.threshold, xs)
        seed_shares = split_secret(self._self_seed, config.threshold, xs)
        peers = {a.sender: a for a in roster.adverts if a.sender in senders}
        sealed, inbound = [], {}
        for holder, key_share, seed_share in zip(holders, key_shares, seed_shares):
            if holder == self.artist_id:
                own = (key_share.value_bytes(), seed_share.value_bytes())
                continue
            plaintext = encode_share_plaintext(key_share.value_bytes(), seed_share.value_bytes())
            outbound, inbound[holder] = share_ciphers(
                self._enc_key, peers[holder].enc_public, rid, self.artist_id, holder
            )
            sealed.append((holder, seal(outbound, plaintext, share_associated_data(rid, self.artist_id, holder))))
        self.config, self._included = config, included
        self._peers, self._inbound, self._held = peers, inbound, {self.artist_id: own}
        self.phase = MaskingPhase.MASKED_INPUT
        return ShareKeys(rid, self.artist_id, tuple(sealed))

    def masked_input(self, delivery: Message, vector: np.ndarray) -> MaskedInput:
        """Phase "masked_input": open received shares, then send ``encode(vector) + self mask + pairwise masks``."""
        delivery = self._check(delivery, ShareDelivery, MaskingPhase.MASKED_INPUT)
        rid = self.config.round_id
        senders = self._unique([s for s, _ in delivery.sealed], "share delivery")
        if not senders <= set(self._peers):
            raise self._fail(f"shares from artists without advertised keys {sorted(senders - set(self._peers))}")
        if len(senders) + 1 < self.config.threshold:
            raise self._fail(f"only {len(senders) + 1} share holders remain, threshold is {self.config.threshold}")
        x = np.asarray(vector)
        if x.shape != (self.config.vector_length,):
            raise self._fail(f"input has shape {x.shape}, expected ({self.config.vector_length},)")
        words = self.config.codec.encode(x, owner=f"artist {self.artist_id!r}")
        held = {}
        for sender, sealed in delivery.sealed:
            what = f"artist {self.artist_id!r}: share from {sender!r}"
            associated = share_associated_data(rid, sender, self.artist_id)
            plaintext = open_sealed(self._inbound[sender], sealed, associated, what)
            try:  # field elements, checked before anything is revealed: the dealer is named, not the holders
                held[sender] = decode_share_plaintext(plaintext)
            except SecureAggregationError as exc:
                raise self._fail(f"{what}: {exc}") from exc
        masks = MaskGenerator(self.config.vector_length)
        masks.add_into(words, self._self_seed, +1)
        for peer in sorted(senders):
            seed = pairwise_mask_seed(self._mask_key, self._peers[peer].mask_public, rid, self.artist_id, peer)
            masks.add_into(words, seed, mask_sign(self.artist_id, peer))
        self._held.update(held)
        self.phase = MaskingPhase.CONSISTENCY
        return MaskedInput(rid, self.artist_id, words)

    def sign_survivors(self, survivors: Message) -> SurvivorSignature:
        """Phase "consistency": sign the survivor set shown (once per session) if it is plausible:
        it includes me, has >= t members, and >= t of my share holders (see masking_consistency)."""
        survivors = self._check(survivors, SurvivorSet, MaskingPhase.CONSISTENCY)
        members = self._survivors(survivors)
        try:
            check_survivor_set(self.config, self.artist_id, set(self._held), self._included, members)
        except SecureAggregationError as exc:
            raise self._fail(f"refusing to sign the survivor set: {exc}") from exc
        transcript = self.config.transcript
        assert transcript is not None  # bound in share_keys
        signature = sign_survivors(
            self._identity_key, self.config.round_id, transcript, survivors.roster_size, survivors.bitmap
        )
        self._signed = survivors
        self.phase = MaskingPhase.UNMASK
        return SurvivorSignature(self.config.round_id, self.artist_id, signature)

    def _survivors(self, survivors: SurvivorSet) -> frozenset[str]:
        try:
            return survivors_from_bitmap(self.config.roster, survivors.roster_size, survivors.bitmap)
        except SecureAggregationError as exc:
            raise self._fail(str(exc)) from exc

    def _check_signatures(self, signatures: tuple[tuple[str, bytes], ...], members: frozenset[str]) -> None:
        """Refuse unless every relayed signature is valid on exactly the set I signed, from distinct
        members of it, and each owner whose shares I hold has >= t signers among its share holders."""
        signed, transcript = self._signed, self.config.transcript
        assert signed is not None and transcript is not None
        signers = self._unique([a for a, _ in signatures], "survivor-set signatures")
        outsiders = signers - members
        if outsiders:
            raise self._fail(f"refusing to unmask: survivor-set signatures from non-members {sorted(outsiders)}")
        for signer, signature in signatures:
            public = self._identity_public(signer)
            if public is None or not survivors_signature_valid(
                public, self.config.round_id, transcript, signed.roster_size, signed.bitmap, signature
            ):
                raise self._fail(
                    f"refusing to unmask: the survivor-set signature of {signer!r} is not valid on the set I signed "
                    "(forged, or made for another set, session or round configuration)"
                )
        short = signer_shortfall(self.config, self._held, signers | {self.artist_id})  # I signed it too
        if short:
            owner, have = next(iter(short.items()))
            raise self._fail(
                f"refusing to unmask: only {have} share holders of {owner!r} signed the survivor set, "
                f"threshold is {self.config.threshold}"
            )

    def _identity_public(self, artist: str) -> Ed25519PublicKey | None:
        if artist == self.artist_id:
            return self._identity_key.public_key()
        return self._identity_publics.get(artist)

    def unmask(self, request: Message) -> UnmaskResponse:
        """Phase "unmask": after the consistency checks, reveal seed shares of the signed survivors and
        key shares of the held owners outside the signed set -- never both for one artist."""
        request = self._check(request, UnmaskRequest, MaskingPhase.UNMASK)
        survivors = self._unique(list(request.survivors), "survivor list")
        dropped = self._unique(list(request.dropped), "dropped list")
        both = survivors & dropped
        if both:
            raise self._fail(
                f"refusing to unmask: {sorted(both)} listed as both survivor and dropped "
                "(revealing both masks would expose their inputs)"
            )
        if self.artist_id in dropped or self.artist_id not in survivors:
            raise self._fail(
                "refusing to unmask: the request does not list me as a survivor, but I sent my masked input"
            )
        assert self._signed is not None
        members = self._survivors(self._signed)
        self._check_signatures(request.signatures, members)
        expected_seeds, expected_keys = unmask_lists(self.artist_id, set(self._held), members)
        if (tuple(sorted(survivors)), tuple(sorted(dropped))) != (expected_seeds, expected_keys):
            raise self._fail(
                f"refusing to unmask: the request (survivors {sorted(survivors)}, dropped {sorted(dropped)}) is "
                f"not the one the signed survivor set implies (survivors {list(expected_seeds)}, "
                f"dropped {list(expected_keys)})"
            )
        self.phase = MaskingPhase.DONE
        return UnmaskResponse(
            self.config.round_id,
            self.artist_id,
            seed_shares=tuple((a, self._held[a][1]) for a in expected_seeds),
            key_shares=tuple((a, self._held[a][0]) for a in expected_keys),
        )
