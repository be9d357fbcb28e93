"""Artist side of pairwise masking over gRPC: drives one :class:`MaskingArtist` per session.

In the five masking phases of a round (see :mod:`.masking_session`) the artist process
fetches the server's message of the phase, hands it to its state machine and uploads the
reply.  The state machine does all the checking; this module adds what only the transport
knows about:

* Peers' key advertisements are verified against the identity public keys of the artist's
  own key bundle (``identity/<id>.pub``, checked against the manifest's fingerprints when the
  bundle was loaded) -- never against anything the server sends.
* A session id is used at most once (:func:`check_session_id`), and an artist that answered
  a round's unmasking request (after which the server could decode that round's sum) never
  joins another session of the same round: otherwise a server could abort after decoding and
  retry with fewer contributors, learning the difference of the two sums.
* A retried session reuses the vector packed for the round's first attempt: local training
  (and any DP budget it spends) happens once per round.

Failures of the protocol (a forged roster, a tampered share, a session id reused, a survivor
set or signatures that fail the consistency checks) make the artist sit the session out with a
warning, exactly like a dropout; they never crash it, and nothing was revealed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.masking_session import FETCH_NAMES, MaskingParams, check_session_id, round_config
from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.secure.masking import MaskingArtist, Phase
from fedstyle_secure.secure.masking.messages import parse_message
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.wire import pb

log = logging.getLogger(__name__)
Send = Callable[[ArtistSession], object]


def params_from_plan(plan: pb.RoundPlan) -> MaskingParams:
    """The masking parameters a plan announces (SecureAggregationError if it announces none)."""
    if not plan.HasField("masking"):
        raise SecureAggregationError(
            f"round {plan.round_id} phase {plan.phase!r}: the plan carries no masking parameters"
        )
    return MaskingParams(plan.masking.session_id, plan.masking.threshold, plan.masking.degree)


@dataclass
class _Session:
    round_id: int
    session_id: int
    machine: MaskingArtist
    vector: np.ndarray


@dataclass
class MaskingClient:
    """One artist's masking sessions over the life of its process (no I/O)."""

    artist_id: str
    identity_key: Ed25519PrivateKey
    identity_publics: Mapping[str, Ed25519PublicKey]
    _used: set[int] = field(default_factory=set)
    _unmasked_rounds: set[int] = field(default_factory=set)
    _vectors: dict[int, tuple[np.ndarray, Layout]] = field(default_factory=dict)
    _current: _Session | None = None

    def contribution(
        self, round_id: int, pack_once: Callable[[], tuple[np.ndarray, Layout]]
    ) -> tuple[np.ndarray, Layout]:
        """The round's packed vector: computed once by ``pack_once``, reused by retried sessions."""
        if round_id not in self._vectors:
            self._vectors = {round_id: pack_once()}  # only the current round's is kept
        return self._vectors[round_id]

    def advertise(self, plan: pb.RoundPlan, vector: np.ndarray) -> bytes:
        """Start the plan's session for ``vector`` (every entry in the plan's value range); the signed keys."""
        params = params_from_plan(plan)
        if plan.round_id in self._unmasked_rounds:
            raise SecureAggregationError(
                f"round {plan.round_id}: I already answered an unmasking request of this round; not joining another session"
            )
        check_session_id(params.session_id, plan.round_id, self._used)
        value_range = (plan.value_low, plan.value_high)
        config = round_config(plan.secure_mode, list(plan.participants), value_range, params, int(vector.size))
        config.codec.check_in_range(
            np.asarray(vector, dtype=np.float64), owner=f"round {plan.round_id} contribution of {self.artist_id}"
        )
        machine = MaskingArtist(config, self.artist_id, self.identity_key, self.identity_publics)
        message = machine.advertise_keys().to_bytes()
        self._used.add(params.session_id)
        self._current = _Session(plan.round_id, params.session_id, machine, np.asarray(vector, dtype=np.float64))
        return message

    def respond(self, plan: pb.RoundPlan, server_message: bytes) -> bytes:
        """The reply to the server's message of phase share / masked_input / consistency / unmask."""
        current = self._current
        params = params_from_plan(plan)
        if current is None or (current.round_id, current.session_id) != (plan.round_id, params.session_id):
            raise SecureAggregationError(
                f"round {plan.round_id}: I did not advertise keys in masking session {params.session_id:#x}"
            )
        message = parse_message(server_message)
        if plan.phase == Phase.SHARE.value:
            return current.machine.share_keys(message).to_bytes()  # type: ignore[arg-type]
        if plan.phase == Phase.MASKED_INPUT.value:
            return current.machine.masked_input(message, current.vector).to_bytes()  # type: ignore[arg-type]
        if plan.phase == Phase.CONSISTENCY.value:
            return current.machine.sign_survivors(message).to_bytes()  # type: ignore[arg-type]
        if plan.phase == Phase.UNMASK.value:
            reply = current.machine.unmask(message).to_bytes()  # type: ignore[arg-type]
            self._unmasked_rounds.add(plan.round_id)
            self._current = None  # forget the session's secrets
            return reply
        raise SecureAggregationError(f"round {plan.round_id}: {plan.phase!r} is not a masking phase")


def masking_step(
    client: MaskingClient,
    session: ArtistSession,
    plan: pb.RoundPlan,
    pack_once: Callable[[], tuple[np.ndarray, Layout]],
) -> Send:
    """Do this artist's part of the plan's masking phase; return how to send it (resendable).

    ``pack_once`` trains locally and packs the round's contribution (called at most once per
    round).  Raises :class:`grpc.RpcError` when the server refuses a download (e.g. this artist
    dropped out of the session)."""
    round_id, phase = plan.round_id, plan.phase
    try:
        if phase == Phase.ADVERTISE.value:
            vector, layout = client.contribution(round_id, pack_once)
            message = client.advertise(plan, vector)
            return lambda s: s.submit_masking(round_id, phase, message, layout)
        message = client.respond(plan, session.fetch_masking(round_id, FETCH_NAMES[phase]))
    except (SecureAggregationError, ConfigError) as exc:
        log.warning("round %d %s: sitting this masking session out: %s", round_id, phase, exc)
        return lambda s: None
    return lambda s: s.submit_masking(round_id, phase, message)
