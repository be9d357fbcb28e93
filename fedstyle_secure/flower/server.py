"""The ServerApp's federation: the gRPC server's own round engine, driven over Flower messages.

No third round driver: the servicer of ``fedstyle server``
(:func:`~fedstyle_secure.transport.server.servicer.new_servicer`: the
:class:`~fedstyle_secure.federation.coordinator.Coordinator` with its round rules, strategies and
sum checks, the state store, the style index, the report intake) is driven here.  Each phase of
the coordinator's plan is one Flower message to each participant's node (one message type per
phase, :data:`~.records.PHASE_ACTIONS`); the replies are handed to the same servicer methods the
gRPC calls use; the phase closes when everyone answered or, at its deadline (Flower's reply
timeout), with the coordinator's quorum.  A CKKS decrypt phase takes two messages per committee
member: the signed set to commit to, then every member's commitment.  A secagg/secagg+ round is
five messages, one per masking phase, each carrying the coordinator's masking message of that phase
for the artist (what ``FetchMasking`` serves); the replies go to ``SubmitMasking``'s checks.

Node ids and artists: Flower's node ids say nothing about artists.  Before the first round the
server sends every node a fresh random nonce; a node becomes artist ``a`` only by returning ``a``'s
identity-key signature of its nonce (:func:`verified_artist`, keys from the server's key set),
and each artist is bound to at most one node.  From then on a reply counts as the artist bound
to the node Flower received it from (SuperNode authentication binds node ids to node keys in a
deployment); a reply that claims another artist is refused.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import Message
from flwr.serverapp import Grid
from google.protobuf.message import DecodeError

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.coordinator import MASKING_STEPS, Coordinator, Phase, Plan
from fedstyle_secure.federation.masking_session import FETCH_NAMES
from fedstyle_secure.federation.rejections import (
    Duplicate,
    Forbidden,
    Rejected,
    refusal_text,
    unexpected_error_text,
)
from fedstyle_secure.flower.records import (
    PHASE_ACTIONS,
    REGISTER,
    ArtistReply,
    ServerMessage,
    registration_claim,
    registration_request,
)
from fedstyle_secure.secure.keys.keystore import ServerKeys
from fedstyle_secure.secure.masking.config import MASKING_MODES
from fedstyle_secure.transport import auth
from fedstyle_secure.transport.config import ServerConfig
from fedstyle_secure.transport.server.servicer import FederationServicer, new_servicer
from fedstyle_secure.transport.wire import WireError, pb

log = logging.getLogger(__name__)
# every secure mode of `fedstyle server`: secagg/secagg+ artists keep their masking session on disk
FLOWER_SECURE_MODES: tuple[str, ...] = ("none", "ckks", *MASKING_MODES)
NONCE_BYTES = 32
NODE_POLL_SECONDS = 1.0
CLOSE_AFTER_DEADLINE = 1e-3  # seconds past a phase's deadline at which it is closed
REFUSED = (Rejected, WireError, ValueError, SecureAggregationError, DecodeError)


def verified_artist(
    publics: Mapping[str, Ed25519PublicKey], bound: Mapping[int, str], claim: str, nonce: bytes, signature: bytes
) -> str:
    """The artist a node proved to be: ``claim`` must be in the key set, its identity key must
    have signed ``nonce`` (the server's, fresh for this node) and no other node may hold it."""
    public = publics.get(claim)
    if public is None:
        raise Forbidden(f"not in this federation's roster: {claim!r}")
    auth.verify_registration(public, claim, nonce, signature)
    if claim in bound.values():
        raise Duplicate(f"{claim} is already bound to another node")
    return claim


@dataclass
class NodeBinding:
    """Flower node id -> artist, proven by signature; refusals by node id (why)."""

    artists: dict[int, str] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)


def bind_nodes(
    grid: Grid, keys: ServerKeys, timeout: float, clock: Callable[[], float] = time.monotonic
) -> NodeBinding:
    """Wait (at most ``timeout`` seconds) until as many nodes as artists are connected, then bind
    each node that proves an artist's identity to that artist."""
    end = clock() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < len(keys.artists) and clock() < end:
        time.sleep(NODE_POLL_SECONDS)
        nodes = list(grid.get_node_ids())
    nonces = {node: os.urandom(NONCE_BYTES) for node in nodes}
    messages = [Message(registration_request(n), dst_node_id=node, message_type=REGISTER) for node, n in nonces.items()]
    binding = NodeBinding()
    for reply in grid.send_and_receive(messages, timeout=max(end - clock(), 1.0)):
        node = reply.metadata.src_node_id
        try:
            if node not in nonces or reply.has_error():
                raise Forbidden(f"no registration answer from node {node}")
            claim, signature = registration_claim(reply.content)
            binding.artists[node] = verified_artist(
                keys.identity_public_keys, binding.artists, claim, nonces[node], signature
            )
        except REFUSED as exc:
            binding.refusals[node] = refusal_text(exc)  # it quotes the node's claim
            log.warning("node %d refused: %s", node, binding.refusals[node])
    log.info("flower nodes bound", extra={"nodes": {str(n): a for n, a in binding.artists.items()}})
    return binding


def apply_reply(servicer: FederationServicer, artist: str, reply: ArtistReply) -> list[str]:
    """Hand ``artist``'s reply to the servicer, call by call as the gRPC artist would have made
    them (each refused on its own, nothing changed by a refused one); the refusals."""
    if reply.artist != artist:
        return [f"the node bound to {artist} sent a reply claiming to be {reply.artist!r}; refused whole"]
    refusals: list[str] = []
    calls: list[Callable[[], object]] = []
    for request in reply.reports:  # checked before the lock, as the gRPC server does: only the store under it
        try:
            calls.append(partial(servicer.store_checked, artist, request, servicer.check_report(artist, request)))
        except REFUSED as exc:
            refusals.append(f"{artist}: {exc}")
    if reply.withdrawal is not None:  # after its reports, as ArtistPrivacy.retire sends them
        calls.append(partial(servicer.withdraw, artist, reply.withdrawal))
    if reply.commit is not None:  # a committee member commits before it uploads its decryption
        calls.append(partial(_commit, servicer, artist, reply.commit))
    if reply.masking is not None:
        calls.append(partial(servicer.submit_masking, artist, reply.masking))
    if reply.publication is not None:
        calls.append(partial(servicer.submit_publication, artist, reply.publication))
    if reply.upload is not None:  # a CKKS ciphertext is checked before the lock too
        header, payload = reply.upload
        try:
            calls.append(
                partial(servicer.submit_upload, artist, header, servicer.checked_payload(artist, header, payload))
            )
        except REFUSED as exc:
            refusals.append(f"{artist}: {exc}")
    with servicer._cond:
        for call in calls:
            try:
                call()
            except REFUSED as exc:
                refusals.append(f"{artist}: {exc}")
    return refusals


def _commit(servicer: FederationServicer, artist: str, commit: pb.DecryptionCommit) -> None:
    servicer.coordinator.commit_decryption(
        artist, commit.round_id, commit.attempt, bytes(commit.set_digest), bytes(commit.signature)
    )
    servicer._changed()


@dataclass
class FlowerFederation:
    """One run over a Flower ``grid``: the servicer (the gRPC server's state) and the node binding."""

    grid: Grid
    servicer: FederationServicer
    binding: NodeBinding
    refusals: list[str] = field(default_factory=list)  # every refused reply, for the operator and tests

    @property
    def coordinator(self) -> Coordinator:
        return self.servicer.coordinator

    def run(self) -> None:
        """Every phase until the run finishes (or fails), then publish the style index."""
        while not self.coordinator.finished:
            self.run_phase()
        self.servicer.tick()

    def run_phase(self) -> None:
        """One phase of the coordinator's plan: a message to each expected node, its replies, then
        the phase closed at its deadline if the replies did not close it (Flower's reply timeout is
        the deadline: a node that has not answered by then, or is bound to no artist, never will)."""
        servicer, c = self.servicer, self.coordinator
        with servicer._cond:
            plan, wire = c.plan(), servicer._plan_message()
            trains = (Phase.PUBLISH, Phase.CONTRIBUTE, Phase.ADVERTISE)
            broadcast = servicer._broadcast_body(plan.round_id) if plan.phase in trains else None
        key = (plan.round_id, plan.phase, plan.attempt)
        if plan.phase is Phase.DECRYPT:
            self._decrypt(plan, wire)
        else:
            action = PHASE_ACTIONS.get(plan.phase.value)
            if action is None:
                raise ConfigError(
                    f"phase {plan.phase.value!r} is not carried over Flower (secure modes {FLOWER_SECURE_MODES})"
                )
            targets = self._nodes_of(plan.participants)
            if plan.phase in MASKING_STEPS and plan.phase is not Phase.ADVERTISE:
                with servicer._cond:
                    messages = self._masking_messages(plan, wire, targets)
            else:
                messages = {n: ServerMessage(wire, broadcast) for n in targets}
            self._exchange(plan, action, messages)
        with servicer._cond:
            now = plan.phase_deadline + CLOSE_AFTER_DEADLINE
            current = c.plan()
            if (current.round_id, current.phase, current.attempt) == key and c.tick(max(servicer.clock(), now)):
                servicer._changed()

    def _masking_messages(self, plan: Plan, wire: pb.RoundPlan, targets: Mapping[int, str]) -> dict[int, ServerMessage]:
        """Each target's masking message of the phase, as the servicer's ``FetchMasking`` serves it
        (an artist the session dropped gets none: the coordinator refuses it, logged)."""
        name, messages = FETCH_NAMES[plan.phase.value], {}
        for node, artist in targets.items():
            try:
                body = self.coordinator.masking_message(artist, plan.round_id, name)
            except REFUSED as exc:
                refusal = refusal_text(exc)
                log.info("round %d %s: no masking message for %s: %s", plan.round_id, plan.phase.value, artist, refusal)
                continue
            if body is not None:
                download = pb.MaskingDownload(round_id=plan.round_id, phase=plan.phase.value, message=body)
                messages[node] = ServerMessage(wire, masking=download)
        return messages

    def _nodes_of(self, artists: tuple[str, ...]) -> dict[int, str]:
        return {node: a for node, a in self.binding.artists.items() if a in artists}

    def _decrypt(self, plan: Plan, wire: pb.RoundPlan) -> None:
        """The committee commits to the signed set, then decrypts once every member committed."""
        servicer, round_id = self.servicer, plan.round_id
        committee = self._nodes_of(plan.decryptors)
        with servicer._cond:
            sets = {node: self._contribution_set(wire, artist, round_id) for node, artist in committee.items()}
        self._exchange(plan, PHASE_ACTIONS["decrypt"], sets)
        with servicer._cond:
            if not servicer.coordinator.decryption_committed:
                return
            for node, artist in committee.items():
                sets[node].commits = servicer.decryption_commits_message(artist, round_id)
        self._exchange(plan, PHASE_ACTIONS["decrypt"], sets)

    def _contribution_set(self, wire: pb.RoundPlan, artist: str, round_id: int) -> ServerMessage:
        """What a committee member checks and sums: the signed list and every listed ciphertext."""
        listed = self.servicer.contribution_set_message(artist, round_id)
        payloads = {
            c.artist_id: self.servicer.coordinator.contribution_payload(artist, round_id, c.artist_id)
            for c in listed.contributions
        }
        return ServerMessage(wire, contribution_set=listed, contributions=payloads)

    def _exchange(self, plan: Plan, action: str, messages: Mapping[int, ServerMessage]) -> None:
        """Send each node its message; hand every reply that arrives by the phase's deadline to the servicer."""
        timeout = max(plan.phase_deadline - self.servicer.clock(), CLOSE_AFTER_DEADLINE)
        outgoing = [
            Message(m.to_record(), dst_node_id=node, message_type=action, group_id=str(plan.round_id))
            for node, m in messages.items()
        ]
        for reply in self.grid.send_and_receive(outgoing, timeout=timeout):
            for whole in self._receive(reply):
                refusal = refusal_text(whole)  # it quotes what the node sent
                log.warning("refused: round %d %s: %s", plan.round_id, plan.phase.value, refusal)
                self.refusals.append(f"round {plan.round_id} {plan.phase.value}: {refusal}")

    def _receive(self, reply: Message) -> list[str]:
        """Hand one reply to the servicer as the artist bound to its node; the refusals."""
        node = reply.metadata.src_node_id
        artist = self.binding.artists.get(node)
        if artist is None:
            return [f"node {node} is bound to no artist"]
        if reply.has_error():
            return [f"{artist}: the ClientApp failed: {reply.error.reason}"]
        try:
            return apply_reply(self.servicer, artist, ArtistReply.from_record(reply.content))
        except REFUSED as exc:
            return [f"{artist}: unreadable reply: {exc}"]
        except Exception as exc:  # one artist's reply never stops the run (the gRPC server answers INTERNAL)
            log.error("%s: reply could not be handled\n%s", artist, unexpected_error_text(exc))
            return [f"{artist}: reply could not be handled: {type(exc).__name__}: {refusal_text(exc)}"]


def run_federation(
    grid: Grid, config: ServerConfig, keys: ServerKeys, clock: Callable[[], float] = time.time
) -> FlowerFederation:
    """Run the whole federation of ``config`` over ``grid``; returns it finished (or failed)."""
    if config.schedule.secure_mode not in FLOWER_SECURE_MODES:
        raise ConfigError(
            f"schedule.secure_mode {config.schedule.secure_mode!r}: the Flower app carries {FLOWER_SECURE_MODES}; "
            "run the others with `fedstyle server/client`"
        )
    if config.crl is not None:  # nothing under Flower reads it: refused rather than revoking nothing
        raise ConfigError(
            f"server.crl {config.crl}: the revocation list is checked on the mutual-TLS calls of `fedstyle server`; "
            "a Flower node proves an artist's Ed25519 identity key, which a CRL does not revoke: unregister the "
            "artist's SuperNode and issue a key set without the artist, then remove `crl` from [server]"
        )
    servicer = new_servicer(config, keys, clock)
    federation = FlowerFederation(grid, servicer, bind_nodes(grid, keys, config.schedule.phase_seconds))
    federation.run()
    return federation
