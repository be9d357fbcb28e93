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
  retry with fewer contributors, learning the difference of the two sums.  With a ``journal``
  (:class:`~.artist_state.MaskingJournal`, whenever ``client.state_dir`` is set) both hold across
  restarts too, as does the refusal of rounds before the latest one advertised in -- a restarted
  DP artist resends its stored contribution; without one, only for the life of the process (a
  replayed session id then meets fresh keys: every session's keys and self-mask seed come from
  the OS, so no mask is ever reused).
* A retried session reuses the vector packed for the round's first attempt: local training
  (and any DP budget it spends) happens once per round.
* With a ``store`` (:class:`~.state.MaskingSessionStore`; the Flower artist, whose every message
  is a new process) the client's whole state -- used session ids, the round's vector, the current
  session's secrets and phase -- is saved before each reply leaves the process and restored by the
  next one, so the state machine's guards (each phase answered once, one survivor set signed) hold
  across processes exactly as within one; the secrets are dropped once the unmasking request is
  answered or a later round begins (:meth:`MaskingClient.end_rounds_before`).  Once a plan of round
  ``r`` was seen, no session of an earlier round is joined: its vector and secrets are gone, and a
  server going back would have the round trained again and masked under a second key set.

Failures of the protocol (a forged roster, a tampered share, a session id reused, a survivor
set or signatures that fail the consistency checks) make the artist sit the session out with a
warning, exactly like a dropout; they never crash it, and nothing was revealed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.masking_session import FETCH_NAMES, MaskingParams, check_session_id, round_config
from fedstyle_secure.federation.packing import Layout, compact_lossless
from fedstyle_secure.secure.api import DEFAULT_MIN_QUORUM
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.secure.masking import MaskingArtist, MaskingArtistState, MaskingPhase
from fedstyle_secure.secure.masking.config import RoundConfig
from fedstyle_secure.secure.masking.graph import default_degree
from fedstyle_secure.secure.masking.messages import parse_message
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.transport.artist.channel import ArtistSession, masking_upload
from fedstyle_secure.transport.artist.state import MaskingJournal, MaskingSessionStore, witness_folder
from fedstyle_secure.transport.sqlite_io import npy_array, npy_bytes
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


def session_config(plan: pb.RoundPlan, vector_length: int) -> RoundConfig:
    """The (unbound) round configuration of the masking session the plan announces."""
    params, value_range = params_from_plan(plan), (plan.value_low, plan.value_high)
    return round_config(plan.secure_mode, list(plan.participants), value_range, params, vector_length)


@dataclass
class _Session:
    round_id: int
    session_id: int
    machine: MaskingArtist
    vector: np.ndarray
    plan: pb.RoundPlan  # the plan the keys were advertised under (fixes the session's configuration)


@dataclass
class MaskingClient:
    """One artist's masking sessions over the life of its process (no I/O but its ``journal``'s)."""

    artist_id: str
    identity_key: Ed25519PrivateKey
    identity_publics: Mapping[str, Ed25519PublicKey]
    journal: MaskingJournal | None = None  # rounds whose unmasking request was answered, across restarts
    min_threshold: float = 0.0  # refuse a plan announcing a lower threshold fraction (0: any the config allows)
    min_degree: int | None = None  # secagg+: refuse a smaller degree (0: the default for n; None: any)
    min_quorum: int = DEFAULT_MIN_QUORUM  # refuse a session whose smallest revealable sum has fewer inputs
    store: MaskingSessionStore | None = None  # this state across processes (restored at construction)
    _used: set[int] = field(default_factory=set)
    _unmasked_rounds: set[int] = field(default_factory=set)
    _vectors: dict[int, tuple[np.ndarray, Layout]] = field(default_factory=dict)
    _current: _Session | None = None
    _latest_round: int = 0  # the latest round a plan showed this artist: it never advertises in an earlier one

    def __post_init__(self) -> None:
        if self.store is not None:
            self._restore(self.store.load())
        if self.journal is not None:  # the guards on session ids and rounds hold across restarts
            used, latest = self.journal.advertised()
            self._used |= used
            self._latest_round = max(self._latest_round, latest)

    def contribution(
        self, round_id: int, pack_once: Callable[[], tuple[np.ndarray, Layout]]
    ) -> tuple[np.ndarray, Layout]:
        """The round's packed vector: computed once by ``pack_once``, reused by retried sessions."""
        self._check_not_earlier(round_id)
        if round_id not in self._vectors:
            vector, layout = pack_once()
            self._vectors = {round_id: (compact_lossless(vector), layout)}  # only the current round's is kept
            self._save()
        return self._vectors[round_id]

    def _check_not_earlier(self, round_id: int) -> None:
        """Refuse a round before the latest one shown: its vector and session are gone, and joining would
        train again and mask the round under a second key set (a server alternating rounds burns CPU)."""
        if round_id < self._latest_round:
            raise SecureAggregationError(
                f"round {round_id}: round {self._latest_round} has begun; not joining a session of an earlier round"
            )

    def end_rounds_before(self, round_id: int) -> None:
        """Forget sessions and vectors of rounds before ``round_id`` (their secrets too, on disk): a
        session that never reached its unmasking request is over once a later round began."""
        current_done = self._current is not None and self._current.round_id < round_id
        stale = [r for r in self._vectors if r < round_id]
        if current_done or stale or round_id > self._latest_round:
            self._latest_round = max(self._latest_round, round_id)
            self._current = None if current_done else self._current
            self._vectors = {r: v for r, v in self._vectors.items() if r >= round_id}
            self._save()

    def _save(self) -> None:
        """Write the whole state to the store (no-op without one); call before the reply leaves."""
        if self.store is None:
            return
        meta: dict[str, object] = {
            "used": sorted(self._used),
            "latest_round": self._latest_round,
            "vectors": {},
            "session": None,
        }
        values: dict[str, bytes] = {}
        for r, (vector, layout) in self._vectors.items():  # at most the current round's
            meta["vectors"] = {str(r): [[name, list(shape)] for name, shape in layout.fields]}
            values["vector"] = npy_bytes(vector)
        current = self._current
        if current is not None:
            state = current.machine.export_state().to_dict()
            meta["session"] = {"round_id": current.round_id, "session_id": current.session_id, "machine": state}
            values["session_vector"], values["session_plan"] = (
                npy_bytes(current.vector),
                current.plan.SerializeToString(),
            )
        values["meta"] = json.dumps(meta).encode()
        self.store.save(values)

    def _restore(self, values: dict[str, bytes]) -> None:
        if not values:
            return
        assert self.store is not None
        try:
            meta = json.loads(values["meta"])
            self._used = {int(s) for s in meta["used"]}
            self._latest_round = int(meta["latest_round"])
            self._vectors = {
                int(r): (npy_array(values["vector"]), Layout(tuple((str(n), tuple(shape)) for n, shape in fields)))
                for r, fields in meta["vectors"].items()
            }
            session = meta["session"]
            if session is not None:
                plan = pb.RoundPlan.FromString(values["session_plan"])
                vector = npy_array(values["session_vector"])
                state = MaskingArtistState.from_dict(session["machine"])
                machine = MaskingArtist.resume(
                    session_config(plan, int(vector.size)),
                    self.artist_id,
                    self.identity_key,
                    self.identity_publics,
                    state,
                )
                self._current = _Session(int(session["round_id"]), int(session["session_id"]), machine, vector, plan)
        except (KeyError, ValueError, TypeError, SecureAggregationError, ConfigError) as exc:
            raise ConfigError(f"{self.store.path}: unreadable masking state ({exc!r})") from exc

    def check_can_advertise(self, plan: pb.RoundPlan) -> MaskingParams:
        """The plan's masking parameters if this artist may advertise keys in its session; raises
        :class:`SecureAggregationError` otherwise.  Call it before packing the round's vector, so a
        refused plan costs no local training (nor, under DP, any budget)."""
        params = params_from_plan(plan)
        journaled = self.journal is not None and self.journal.answered(plan.round_id)
        if plan.round_id in self._unmasked_rounds or journaled:
            raise SecureAggregationError(
                f"round {plan.round_id}: I already answered an unmasking request of this round; not joining another "
                "session"
            )
        self._check_not_earlier(plan.round_id)
        check_session_id(params.session_id, plan.round_id, self._used)
        self._check_parameters(plan, params)
        return params

    def advertise(self, plan: pb.RoundPlan, vector: np.ndarray) -> bytes:
        """Start the plan's session for ``vector`` (every entry in the plan's value range); the signed keys."""
        params = self.check_can_advertise(plan)
        config = session_config(plan, int(vector.size))
        config.codec.check_in_range(vector, owner=f"round {plan.round_id} contribution of {self.artist_id}")
        machine = MaskingArtist(config, self.artist_id, self.identity_key, self.identity_publics)
        message = machine.advertise_keys().to_bytes()
        if self.journal is not None:
            self.journal.record_advertised(params.session_id, plan.round_id)  # durable before the keys leave
        self._used.add(params.session_id)
        self._latest_round = max(self._latest_round, plan.round_id)
        self._current = _Session(plan.round_id, params.session_id, machine, vector, plan)
        self._save()  # before the keys leave the process
        return message

    def _check_parameters(self, plan: pb.RoundPlan, params: MaskingParams) -> None:
        """Refuse a threshold or SecAgg+ degree below this artist's floors: the server announces both,
        and lowering them shrinks how many colluding share holders the round tolerates (``t > (m + c) / 2``
        with ``m = degree + 1`` holders), so the floors come from the artist's own configuration.  Also
        refuse a session that could reveal a sum of fewer than ``min_quorum`` inputs (see
        :meth:`_check_smallest_sum`)."""
        self._check_smallest_sum(plan, params)
        if params.threshold < self.min_threshold - 1e-12:
            raise SecureAggregationError(
                f"round {plan.round_id}: the plan's masking threshold {params.threshold:.4g} "
                f"is below my floor {self.min_threshold:.4g} (client.min_masking_threshold)"
            )
        n = len(plan.participants)
        if plan.secure_mode != "secagg+" or self.min_degree is None or n < 2:
            return
        floor = min(self.min_degree or default_degree(n), n - 1)
        degree = min(params.degree or default_degree(n), n - 1)
        if degree < floor:
            raise SecureAggregationError(
                f"round {plan.round_id}: the plan's SecAgg+ degree {degree} is below my floor "
                f"{floor} for {n} participants (client.min_masking_degree)"
            )

    def _check_smallest_sum(self, plan: pb.RoundPlan, params: MaskingParams) -> None:
        """Refuse a session in which the server could decode a sum of fewer than ``min_quorum`` inputs.

        No share is revealed before >= t share holders signed one survivor set, and only members of a
        set sign it, so the smallest sum a session can reveal holds t inputs, the threshold count that
        the participant list and the announced threshold give.  A server announcing a session of two
        participants (t = 2) would otherwise learn, and broadcast to the other, a sum that a colluding
        or merely curious second participant turns into this artist's input."""
        smallest = session_config(plan, 1).threshold  # the count does not depend on the vector length
        if smallest < self.min_quorum:
            raise SecureAggregationError(
                f"round {plan.round_id}: the masking session of {len(plan.participants)} participants can reveal "
                f"a sum of only {smallest} inputs, below my floor {self.min_quorum} (client.min_quorum)"
            )

    def respond(self, plan: pb.RoundPlan, server_message: bytes) -> bytes:
        """The reply to the server's message of phase share / masked_input / consistency / unmask."""
        current = self._current
        params = params_from_plan(plan)
        if current is None or (current.round_id, current.session_id) != (plan.round_id, params.session_id):
            raise SecureAggregationError(
                f"round {plan.round_id}: I did not advertise keys in masking session {params.session_id:#x}"
            )
        message = parse_message(server_message)
        if plan.phase == MaskingPhase.SHARE.value:
            reply = current.machine.share_keys(message).to_bytes()
        elif plan.phase == MaskingPhase.MASKED_INPUT.value:
            reply = current.machine.masked_input(message, current.vector).to_bytes()
        elif plan.phase == MaskingPhase.CONSISTENCY.value:
            reply = current.machine.sign_survivors(message).to_bytes()
        elif plan.phase == MaskingPhase.UNMASK.value:
            reply = current.machine.unmask(message).to_bytes()
            if self.journal is not None:  # durable before the answer leaves; refused if another session of
                self.journal.claim(plan.round_id, current.session_id)  # the round was answered (other process)
            self._unmasked_rounds.add(plan.round_id)
            self._current = None  # forget the session's secrets
            self._vectors.pop(plan.round_id, None)  # and the vector: no other session of this round is joined
        else:
            raise SecureAggregationError(f"round {plan.round_id}: {plan.phase!r} is not a masking phase")
        self._save()  # the phase this reply moved to, before the reply leaves the process
        return reply


def masking_client(
    keys: ArtistKeys,
    state_dir: Path | None,
    min_threshold: float = DEFAULT_THRESHOLD,
    min_degree: int = 0,
    *,
    min_quorum: int = DEFAULT_MIN_QUORUM,
    resume: bool = False,
    reports_dir: Path | None = None,
) -> MaskingClient:
    """The artist process's masking client: with a ``state_dir``, its journal of answered rounds lives
    there (so a restart does not forget them); it refuses plans below its threshold and degree floors
    (``client.min_masking_threshold`` / ``client.min_masking_degree``, 0 = the default degree) and
    sessions that could reveal a sum of fewer than ``min_quorum`` inputs (``client.min_quorum``).  With
    ``resume`` (a ``state_dir`` is then required) the whole session state is kept there too and
    restored here: a process per message continues the previous process's session."""
    witness = witness_folder(reports_dir, keys.artist_id)  # outlives a restored state_dir
    journal = None if state_dir is None else MaskingJournal(state_dir, witness)
    if resume and state_dir is None:
        raise ConfigError("client.state_dir is required to resume masking sessions across processes")
    store = MaskingSessionStore(state_dir) if resume and state_dir is not None else None
    return MaskingClient(
        keys.artist_id,
        keys.identity_key,
        keys.identity_public_keys,
        journal=journal,
        min_threshold=min_threshold,
        min_degree=min_degree,
        min_quorum=min_quorum,
        store=store,
    )


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
        if phase == MaskingPhase.ADVERTISE.value:
            client.check_can_advertise(plan)  # before any local training for a plan it would refuse
            vector, layout = client.contribution(round_id, pack_once)
            request = masking_upload(round_id, phase, client.advertise(plan, vector), layout)
        else:  # the reply's bytes live only until they are in the request (a masked input: 3.5 MB)
            request = masking_upload(
                round_id, phase, client.respond(plan, session.fetch_masking(round_id, FETCH_NAMES[phase])), None
            )
    except (SecureAggregationError, ConfigError) as exc:
        log.warning("round %d %s: sitting this masking session out: %s", round_id, phase, exc)
        return lambda s: None
    return lambda s: s.send_masking(request)  # a fresh nonce on every (re)send
