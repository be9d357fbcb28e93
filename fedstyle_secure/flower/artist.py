"""One artist's part of a Flower message: the gRPC artist's own round code on one phase.

Flower starts a new ClientApp process per message in a deployment, so nothing is kept in memory
between messages: each message builds the gRPC artist's
:class:`~fedstyle_secure.transport.artist.runner.ArtistRunner` afresh, which restores the model,
the DP ledger, the round's charged results and the retirement from ``client.state_dir``
(:class:`~fedstyle_secure.transport.artist.state.ArtistStateStore`), exactly as a restarted
``fedstyle client`` does, and acts on the message's plan once.  The crypto-only masking phases
(``share`` to ``unmask``) need no model: they run the masking client alone on its stored session,
so a ClientApp start fits their short deadline (``federation.masking_seconds``).  Its calls to the server go to a
:class:`FlowerSession`, which answers downloads from the message and collects uploads into the
reply.  A non-DP artist keeps its model, published prototypes and view generator in the same
state store (:class:`~fedstyle_secure.transport.artist.privacy.DurableClient`, no ledger); a
secagg/secagg+ artist keeps its masking session (ephemeral keys, self-mask seed, held shares, phase)
in ``masking-session.sqlite``, saved before each reply leaves and dropped when the session ends.

Threat model: the ServerApp is as untrusted as the gRPC server; every check of the gRPC artist
(DP budget gate, CKKS set and commitment checks against the artist's own key bundle) runs
unchanged, and so do the masking state machine's: a replayed or reordered phase message meets the
phase of the artist's latest reply, restored from disk, so it answers each phase once and signs one
survivor set per session across processes too.  The artist's identity is proven by signing the
server's registration nonce with its identity key (:func:`register`); the node id Flower
authenticates is then bound to it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import RecordDict

from fedstyle_secure.errors import ConfigError, SecureAggregationError, TransportError
from fedstyle_secure.federation.client import Broadcast, Publication
from fedstyle_secure.federation.masking_session import FETCH_NAMES, is_masking_mode
from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.flower.records import (
    ArtistReply,
    ServerMessage,
    registration_nonce,
    registration_reply,
)
from fedstyle_secure.secure.keys.keystore import ArtistKeys, load_artist_keys
from fedstyle_secure.transport import auth
from fedstyle_secure.transport.artist.channel import (
    MAX_DOWNLOAD_BYTES,
    ArtistSession,
    broadcast_from_body,
    publication_message,
    with_layout,
)
from fedstyle_secure.transport.artist.ckks import SentContribution, ckks_client
from fedstyle_secure.transport.artist.lifetime_ledger import check_lifetime_ledger
from fedstyle_secure.transport.artist.masking import masking_client, masking_step
from fedstyle_secure.transport.artist.privacy import DurableClient
from fedstyle_secure.transport.artist.runner import ArtistRunner, build_style_client, check_min_quorum
from fedstyle_secure.transport.artist.state import ArtistStateStore, one_artist_process, witness_folder
from fedstyle_secure.transport.config import ClientConfig, load_client_config
from fedstyle_secure.transport.sqlite_io import connect, private_database, transaction
from fedstyle_secure.transport.wire import (
    DEFAULT_CHUNK_BYTES,
    chunk_payload,
    join_chunks,
    new_nonce,
    pb,
    pb_grpc,
)

MAX_PAYLOAD_BYTES = 1 << 31
CKKS_SENT_FILE = "flower-ckks-sent.sqlite"


class AwaitingCommitments(Exception):
    """A CKKS committee member committed to the set; it decrypts in the next message, which carries
    every member's commitment (the gRPC artist long-polls for them instead)."""


class _Withdrawals:
    """Stands in for the gRPC stub's one call the artist's privacy code makes directly (``Withdraw``)."""

    def __init__(self, reply: ArtistReply) -> None:
        self.reply = reply

    def Withdraw(self, request: pb.Withdrawal, **_: Any) -> pb.Ack:
        self.reply.withdrawal = request
        return pb.Ack(round_id=request.round_id)


@dataclass
class FlowerSession(ArtistSession):
    """The artist's server calls for one Flower message: downloads from ``inbox``, uploads into ``reply``."""

    inbox: ServerMessage | None = None
    reply: ArtistReply = field(default_factory=lambda: ArtistReply(""))
    commits_read: bool = False  # the message's commitments were handed out (nothing more arrives)

    @classmethod
    def for_message(cls, keys: ArtistKeys, inbox: ServerMessage) -> FlowerSession:
        """The roster is the artist's own key set's, never the server's claim."""
        reply = ArtistReply(keys.artist_id)
        return cls(
            cast(pb_grpc.FederationStub, _Withdrawals(reply)), keys.artist_id, "", tuple(keys.artists), inbox, reply
        )

    def _inbox(self) -> ServerMessage:
        assert self.inbox is not None
        return self.inbox

    def broadcast(
        self, round_id: int, timeout: float = 60.0, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> tuple[Broadcast, tuple[np.ndarray, np.ndarray] | None]:
        body = self._inbox().broadcast
        if body is None or body.round_id != round_id:
            raise TransportError(f"round {round_id}: the server's message carries no broadcast of this round")
        return broadcast_from_body(body, round_id)

    def publish(self, round_id: int, publication: Publication, timeout: float = 30.0) -> pb.Ack:
        self.reply.publication = publication_message(round_id, publication)
        return pb.Ack(round_id=round_id)

    def upload(
        self,
        round_id: int,
        kind: pb.PayloadKind,
        payload: bytes | memoryview,
        layout: Layout | None = None,
        *,
        nonce: bytes | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout: float = 120.0,
        signature: bytes = b"",
        min_quorum: int = 0,
    ) -> pb.Ack:
        chunks = chunk_payload(
            payload, round_id=round_id, kind=kind, nonce=nonce, signature=signature, min_quorum=min_quorum
        )
        self.reply.upload = join_chunks(with_layout(chunks, layout), MAX_PAYLOAD_BYTES)
        return pb.Ack(round_id=round_id, accepted_bytes=memoryview(payload).nbytes)

    def contribution_set(self, round_id: int, timeout: float = 30.0) -> pb.ContributionSet:
        listed = self._inbox().contribution_set
        if listed is None:
            raise TransportError(f"round {round_id}: the server's message carries no contribution set")
        return listed

    def contribution(
        self, round_id: int, artist_id: str, timeout: float = 120.0, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> bytes:
        payloads = self._inbox().contributions
        if artist_id not in payloads:
            raise TransportError(f"round {round_id}: the server's message carries no contribution of {artist_id!r}")
        return payloads[artist_id]

    def commit_decryption(
        self, round_id: int, attempt: int, set_digest: bytes, signature: bytes, wait_seconds: float = 0.0
    ) -> pb.DecryptionCommits:
        """Send the commitment; the committee's commitments if the message carries them, else the
        artist stops here and decrypts on the next message (:class:`AwaitingCommitments`).

        Asked again within one message (the committee's commitments were incomplete), it refuses:
        no more can arrive before the next message, and waiting would spin until a deadline the
        server chose."""
        if self.commits_read:
            raise SecureAggregationError(
                f"round {round_id} attempt {attempt}: the server's message carries an incomplete set of "
                "commitments; not decrypting on this message"
            )
        self.reply.commit = pb.DecryptionCommit(
            round_id=round_id, attempt=attempt, set_digest=set_digest, signature=signature
        )
        commits = self._inbox().commits
        if commits is None:
            raise AwaitingCommitments(f"round {round_id} attempt {attempt}")
        self.commits_read = True
        return commits

    def fetch_masking(self, round_id: int, name: str, timeout: float = 60.0) -> bytes:
        """The server's masking message of the phase, from the message (it must be the one asked for)."""
        download = self._inbox().masking
        phase = self._inbox().plan.phase
        if download is None or (download.round_id, download.phase) != (round_id, phase) or FETCH_NAMES[phase] != name:
            raise TransportError(f"round {round_id}: the server's message carries no masking message {name!r}")
        return bytes(download.message)

    def send_masking(self, request: pb.MaskingUpload, *, nonce: bytes | None = None, timeout: float = 30.0) -> pb.Ack:
        """As :meth:`ArtistSession.send_masking`: the reply carries the request."""
        request.nonce = new_nonce() if nonce is None else nonce
        self.reply.masking = request
        return pb.Ack(round_id=request.round_id, accepted_bytes=len(request.message))

    def report(self, round_id: int, signed_json: bytes, timeout: float = 30.0) -> pb.Ack:
        self.reply.reports.append(
            pb.EpsilonReport(round_id=round_id, artist_id=self.artist_id, signed_json=signed_json)
        )
        return pb.Ack(round_id=round_id)


def register(keys: ArtistKeys, content: RecordDict) -> RecordDict:
    """The answer to the server's registration: this artist's id and its identity key's signature
    of the server's fresh nonce."""
    nonce = registration_nonce(content)
    return registration_reply(keys.artist_id, auth.sign_registration(keys.identity_key, keys.artist_id, nonce))


class SentCkksJournal:
    """The artist's CKKS contribution of the current round as sent, in ``<state_dir>/flower-ckks-sent.sqlite``
    (0600): the decrypt phase comes in a later message, i.e. a later process, which must check the
    listed set against the very ciphertext (digest) this artist signed and add it to the sum."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / CKKS_SENT_FILE
        private_database(self.path)
        with transaction(self.path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS sent (id INTEGER PRIMARY KEY CHECK (id = 0), round_id INTEGER NOT NULL, "
                "payload BLOB NOT NULL, digest BLOB NOT NULL, layout BLOB NOT NULL, length INTEGER NOT NULL)"
            )

    def load(self) -> SentContribution | None:
        db = connect(self.path)
        try:
            row = db.execute("SELECT round_id, payload, digest, layout, length FROM sent WHERE id = 0").fetchone()
        finally:
            db.close()
        return (
            None
            if row is None
            else SentContribution(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))
        )

    def save(self, sent: SentContribution) -> None:
        with transaction(self.path) as db:
            db.execute(
                "INSERT OR REPLACE INTO sent (id, round_id, payload, digest, layout, length) VALUES (0, ?, ?, ?, ?, ?)",
                (sent.round_id, sent.payload, sent.digest, sent.layout, sent.length),
            )


def act_on_phase(config: ClientConfig, keys: ArtistKeys, content: RecordDict) -> RecordDict:
    """Do this artist's part of the message's phase (resumed from ``config.state_dir``); the reply.

    Every state the phase changes is saved before the reply leaves this process: the DP ledger and
    results (:class:`ArtistPrivacy`), a non-DP artist's model (:class:`DurableClient`), the CKKS
    contribution as sent (:class:`SentCkksJournal`) and the masking session (the masking client's
    own store, written before it returns each masking message)."""
    assert config.state_dir is not None  # artist_from_config requires it
    witness = witness_folder(config.reports_dir, keys.artist_id)
    with one_artist_process(config.state_dir, wait=True, witness_dir=witness):  # a SuperNode may start several at once
        return _act_on_phase(config, keys, ServerMessage.from_record(content))


def _act_on_phase(config: ClientConfig, keys: ArtistKeys, inbox: ServerMessage) -> RecordDict:
    assert config.state_dir is not None
    plan = inbox.plan
    session = FlowerSession.for_message(keys, inbox)
    masking = None
    if is_masking_mode(plan.secure_mode):
        masking = masking_client(
            keys,
            config.state_dir,
            config.min_masking_threshold,
            config.min_masking_degree,
            min_quorum=config.min_quorum,
            resume=True,
            reports_dir=config.reports_dir,
        )
        masking.end_rounds_before(plan.round_id)  # an unfinished earlier session's secrets go now
        if plan.phase in FETCH_NAMES:  # share .. unmask: crypto on the stored session only, no model to rebuild
            if keys.artist_id in plan.participants:
                masking_step(masking, session, plan, _packed_at_advertise)(session)
            return session.reply.to_record()
    runner = ArtistRunner(config, keys, masking=masking)
    runner.client = build_style_client(config, keys.artist_id, session.roster, plan)
    journal = None
    if plan.secure_mode == "ckks":  # its decryption guard is journaled by ckks_client itself
        journal = SentCkksJournal(config.state_dir)
        runner.ckks = ckks_client(keys, config.state_dir, config.min_quorum, reports_dir=config.reports_dir)
        sent = journal.load()
        if sent is not None:
            runner.ckks.resume(sent)
    if not runner.open_privacy(session, plan):  # restores a DP artist, unless it declines the run first
        return session.reply.to_record()
    durable = None
    if runner.privacy is None:  # no DP: the model (and prototypes, view generator) from the last message
        durable = DurableClient(ArtistStateStore(config.state_dir), keys.artist_id)
        runner.published_round, runner.standardised = durable.restore(runner.client)
    with contextlib.suppress(AwaitingCommitments):  # committed: the reply carries the commitment
        runner.act(session, plan)
    if journal is not None and runner.ckks is not None and runner.ckks.sent is not None:
        journal.save(runner.ckks.sent)  # before the reply (the contribution) leaves this process
    if durable is not None:
        durable.save(runner.client, runner.published_round, runner.standardised)
    return session.reply.to_record()


def _packed_at_advertise() -> tuple[np.ndarray, Layout]:
    """``masking_step``'s ``pack_once`` after the advertise phase, which never calls it (the stored session
    holds the round's vector)."""
    raise TransportError("the round's vector is packed when the artist advertises its keys")


def artist_from_config(path: Path) -> tuple[ClientConfig, ArtistKeys]:
    """The artist's ``client.toml`` (the one ``fedstyle client`` reads) and its key bundle."""
    config = load_client_config(path)
    if config.state_dir is None:
        raise ConfigError(f"{path}: client.state_dir is required for a Flower artist (its state between messages)")
    check_lifetime_ledger(config)
    keys = load_artist_keys(config.keys, config.artist)
    check_min_quorum(config, keys)
    return config, keys
