"""Server-side state machine of pairwise-masking secure aggregation (Bonawitz et al. 2017).

The server routes keys and sealed shares, sums masked inputs modulo 2^32 as they arrive,
shows every contributor the survivor set and relays their signatures of it (consistency phase),
and in the last phase reconstructs from ``threshold`` shares each survivor's self-mask seed and
each dropped artist's mask key to strip the remaining masks.  It learns only the sum.

:meth:`MaskingServer.receive` raises :class:`SecureAggregationError` for a bad message (wrong
round, unknown or duplicate sender, wrong phase, bad signature, wrong vector length, wrong
share routing) and leaves its state unchanged, so the round continues for honest artists;
the artist whose message was refused is treated as dropped.  The ``close_*`` methods abort
the round (phase ``aborted``) when too few artists remain to ever unmask the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.masking.artist import mask_sign
from fedstyle_secure.secure.masking.config import Phase, RoundConfig
from fedstyle_secure.secure.masking.consistency import signer_shortfall, signers_to_relay, survivor_bitmap, unmask_lists
from fedstyle_secure.secure.masking.crypto import (
    pairwise_mask_seed,
    public_bytes,
    survivors_signature_valid,
    transcript_digest,
    verify_advertisement,
    x25519_from_private_bytes,
)
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SurvivorSet,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
)
from fedstyle_secure.secure.masking.prg import MaskGenerator
from fedstyle_secure.secure.masking.shamir import Share, field_element, reconstruct_secret

ArtistMessage = AdvertiseKeys | ShareKeys | MaskedInput | SurvivorSignature | UnmaskResponse


@dataclass(frozen=True)
class MaskingOutcome:
    """The unmasked, decoded float64 sum and whose inputs it contains."""

    total: np.ndarray
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]


class MaskingServer:
    """The server's view of one masking round; does no I/O."""

    def __init__(self, config: RoundConfig, identity_publics: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self.config = config
        self.phase = Phase.ADVERTISE
        self._identity_publics = identity_publics
        self._adverts: dict[str, AdvertiseKeys] = {}
        self._shares: dict[str, ShareKeys] = {}
        self._masked_sum = np.zeros(config.vector_length, dtype=np.uint32)
        self._inputs: set[str] = set()
        self._survivor_bitmap: bytes | None = None  # the survivor set shown to every contributor
        self._signatures: dict[str, bytes] = {}
        self._requests: dict[str, UnmaskRequest] = {}
        self._responses: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        self._accept: dict[type, tuple[Phase, Container[str], Callable]] = {
            AdvertiseKeys: (Phase.ADVERTISE, self._adverts, self._accept_advert),
            ShareKeys: (Phase.SHARE, self._shares, self._accept_shares),
            MaskedInput: (Phase.MASKED_INPUT, self._inputs, self._accept_masked_input),
            SurvivorSignature: (Phase.CONSISTENCY, self._signatures, self._accept_survivor_signature),
            UnmaskResponse: (Phase.UNMASK, self._responses, self._accept_unmask_response),
        }

    # -- helpers ---------------------------------------------------------------------------

    def _error(self, reason: str) -> SecureAggregationError:
        return SecureAggregationError(f"server, round {self.config.round_id}: {reason}")

    def _abort(self, reason: str) -> SecureAggregationError:
        error = self._error(f"round aborted in phase {self.phase.value!r}: {reason}")
        self.phase = Phase.ABORTED
        return error

    def _require_survivors(self, live: set[str], after: str) -> None:
        if len(live) < self.config.threshold:
            raise self._abort(f"only {len(live)} artists remain after {after}, threshold is {self.config.threshold}")

    def _needed_secrets(self) -> tuple[set[str], set[str]]:
        """(survivors whose self-mask seeds, dropped artists whose mask keys) must be reconstructed."""
        dropped = {v for v in set(self._shares) - self._inputs if self._inputs & set(self.config.neighbours[v])}
        return set(self._inputs), dropped

    def _require_recoverable(self, live: set[str]) -> None:
        """Abort unless every needed secret has at least ``threshold`` holders in ``live``."""
        survivors, dropped = self._needed_secrets()
        if not survivors:
            raise self._abort("no artist sent a masked input")
        short = signer_shortfall(self.config, survivors | dropped, live)
        if short:
            owner, have = next(iter(short.items()))
            raise self._abort(f"only {have} share holders of {owner!r} remain, threshold is {self.config.threshold}")

    def _held_by(self, artist: str) -> set[str]:
        """Owners whose shares ``artist`` holds: itself and its neighbours that shared while it was live."""
        return {artist} | (set(self.config.neighbours[artist]) & set(self._shares))

    # -- receiving -------------------------------------------------------------------------

    def receive(self, message: ArtistMessage) -> None:
        """Validate and record one artist message; raises (state unchanged) if it is refused."""
        kind = type(message).__name__
        if type(message) not in self._accept:
            raise self._error(f"unexpected message type {kind}")
        phase, seen, accept = self._accept[type(message)]
        if message.round_id != self.config.round_id:
            raise self._error(
                f"refusing {kind} of round {message.round_id} from {message.sender!r} (replayed or misrouted)"
            )
        if message.sender not in self.config.share_x:
            raise self._error(f"refusing {kind} from {message.sender!r}, who is not in the roster")
        if self.phase is not phase:
            raise self._error(f"refusing {kind} from {message.sender!r} during phase {self.phase.value!r}")
        if message.sender in seen:
            raise self._error(f"refusing duplicate {kind} from {message.sender!r}")
        accept(message)

    def _accept_advert(self, message: AdvertiseKeys) -> None:
        if self._identity_publics is not None:
            if message.sender not in self._identity_publics:
                raise self._error(f"refusing AdvertiseKeys from {message.sender!r}: no identity public key")
            verify_advertisement(
                self._identity_publics[message.sender],
                message.round_id,
                self.config.digest,
                message.sender,
                message.enc_public,
                message.mask_public,
                message.contribution,
                message.signature,
            )
        self._adverts[message.sender] = message

    def _accept_shares(self, message: ShareKeys) -> None:
        if message.sender not in self._adverts:
            raise self._error(f"refusing ShareKeys from {message.sender!r}, who advertised no keys")
        receivers = [r for r, _ in message.sealed]
        expected = set(self.config.neighbours[message.sender]) & set(self._adverts)
        if len(set(receivers)) != len(receivers) or set(receivers) != expected:
            raise self._error(
                f"refusing ShareKeys from {message.sender!r}: addressed to {sorted(receivers)}, "
                f"expected its live neighbours {sorted(expected)}"
            )
        self._shares[message.sender] = message

    def _accept_masked_input(self, message: MaskedInput) -> None:
        if message.sender not in self._shares:
            raise self._error(f"refusing MaskedInput from {message.sender!r}, who shared no keys")
        if message.words.shape != (self.config.vector_length,):
            raise self._error(
                f"refusing MaskedInput from {message.sender!r}: vector of length {message.words.size}, "
                f"expected {self.config.vector_length}"
            )
        np.add(self._masked_sum, message.words, out=self._masked_sum)
        self._inputs.add(message.sender)

    def _accept_survivor_signature(self, message: SurvivorSignature) -> None:
        if message.sender not in self._inputs:
            raise self._error(f"refusing SurvivorSignature from {message.sender!r}, whose masked input did not arrive")
        bitmap, transcript = self._survivor_bitmap, self.config.transcript
        assert bitmap is not None and transcript is not None
        if self._identity_publics is not None:
            public = self._identity_publics.get(message.sender)
            rid, size, signature = self.config.round_id, len(self.config.roster), message.signature
            if public is None or not survivors_signature_valid(public, rid, transcript, size, bitmap, signature):
                raise self._error(
                    f"refusing SurvivorSignature from {message.sender!r}: not a valid signature of the survivor set"
                )
        self._signatures[message.sender] = message.signature

    def _accept_unmask_response(self, message: UnmaskResponse) -> None:
        request = self._requests.get(message.sender)
        if request is None:
            raise self._error(f"refusing UnmaskResponse from {message.sender!r}, who was not asked")
        seed_ids = tuple(a for a, _ in message.seed_shares)
        key_ids = tuple(a for a, _ in message.key_shares)
        if seed_ids != request.survivors or key_ids != request.dropped:
            raise self._error(f"refusing UnmaskResponse from {message.sender!r}: shares do not match the request")
        seeds = {a: field_element(v) for a, v in message.seed_shares}
        keys = {a: field_element(v) for a, v in message.key_shares}
        self._responses[message.sender] = (seeds, keys)

    # -- closing phases --------------------------------------------------------------------

    def close_advertise(self) -> dict[str, KeyRoster]:
        """End phase "advertise": fix the transcript (and the SecAgg+ graph) from the received signed
        advertisements and send every live artist all of them."""
        self._expect_phase(Phase.ADVERTISE)
        live = set(self._adverts)
        self._require_survivors(live, "advertise")
        included = tuple(self._adverts[a] for a in self.config.roster if a in live)
        transcript = transcript_digest(
            self.config.digest, [(a.sender, a.enc_public, a.mask_public, a.contribution) for a in included]
        )
        self.config = self.config.bind(transcript)
        self.phase = Phase.SHARE
        rid = self.config.round_id
        return {a: KeyRoster(rid, a, included) for a in sorted(live)}

    def close_shares(self) -> dict[str, ShareDelivery]:
        """End phase "share": deliver each artist that shared the sealed shares addressed to it."""
        self._expect_phase(Phase.SHARE)
        live = set(self._shares)
        self._require_survivors(live, "share")
        inbox: dict[str, list[tuple[str, bytes]]] = {a: [] for a in live}
        for sender in sorted(live):
            for receiver, sealed in self._shares[sender].sealed:
                if receiver in live:
                    inbox[receiver].append((sender, sealed))
        self.phase = Phase.MASKED_INPUT
        rid = self.config.round_id
        return {a: ShareDelivery(rid, a, tuple(inbox[a])) for a in sorted(live)}

    def close_masked_inputs(self) -> dict[str, SurvivorSet]:
        """End phase "masked_input": show every contributor the survivor set, to sign."""
        self._expect_phase(Phase.MASKED_INPUT)
        self._require_recoverable(self._inputs)
        roster, rid = self.config.roster, self.config.round_id
        bitmap = self._survivor_bitmap = survivor_bitmap(roster, self._inputs)
        self.phase = Phase.CONSISTENCY
        return {a: SurvivorSet(rid, a, len(roster), bitmap) for a in sorted(self._inputs)}

    def close_consistency(self) -> dict[str, UnmaskRequest]:
        """End phase "consistency": ask each signer for the shares the signed set implies, relaying the
        signatures it needs (those of the share holders of every owner whose shares it holds)."""
        self._expect_phase(Phase.CONSISTENCY)
        signers = set(self._signatures)
        self._require_recoverable(signers)
        rid = self.config.round_id
        for artist in sorted(signers):
            held = self._held_by(artist)
            survivors, dropped = unmask_lists(artist, held, self._inputs)
            relayed = tuple((s, self._signatures[s]) for s in signers_to_relay(self.config, held, signers))
            self._requests[artist] = UnmaskRequest(rid, artist, survivors, dropped, relayed)
        self.phase = Phase.UNMASK
        return dict(self._requests)

    def finish(self) -> MaskingOutcome:
        """End phase "unmask": reconstruct the missing secrets, strip all masks and decode the sum."""
        self._expect_phase(Phase.UNMASK)
        self._require_recoverable(set(self._responses))
        survivors, dropped = self._needed_secrets()
        try:
            total = self._unmask(survivors, dropped)
        except SecureAggregationError as exc:
            raise self._abort(str(exc)) from exc
        self.phase = Phase.DONE
        contributors = tuple(sorted(survivors))
        return MaskingOutcome(
            total=self.config.codec.decode_sum(total, len(contributors)),
            contributors=contributors,
            dropped=tuple(a for a in self.config.roster if a not in survivors),
        )

    def _unmask(self, survivors: set[str], dropped: set[str]) -> np.ndarray:
        """Masked sum minus survivors' self masks and the pairwise masks shared with dropped artists."""
        total = self._masked_sum.copy()
        masks = MaskGenerator(self.config.vector_length)
        for owner in sorted(survivors):
            masks.add_into(total, self._reconstruct(owner, index=0), -1)
        for owner in sorted(dropped):
            key = x25519_from_private_bytes(self._reconstruct(owner, index=1))
            if public_bytes(key) != self._adverts[owner].mask_public:
                raise self._error(f"reconstructed mask key of {owner!r} does not match its advertised key (bad shares)")
            for peer in self.config.neighbours[owner]:
                if peer in survivors:
                    seed = pairwise_mask_seed(key, self._adverts[peer].mask_public, self.config.round_id, owner, peer)
                    masks.add_into(total, seed, -mask_sign(peer, owner))
        return total

    def _reconstruct(self, owner: str, index: int) -> bytes:
        """Secret of ``owner`` from responders' shares (index 0: self-mask seed, 1: mask key)."""
        shares = [
            Share(self.config.share_x[r], self._responses[r][index][owner])
            for r in self.config.holders(owner)
            if r in self._responses
        ]
        return reconstruct_secret(shares, self.config.threshold)

    def _expect_phase(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise self._error(f"cannot close phase {phase.value!r} while in phase {self.phase.value!r}")
