"""The artist process: one artist's private images, a :class:`StyleClient`, and the round loop
driven by the server's plans over mutual TLS.  Reconnects with exponential backoff.

Data never leaves this process except as the protected round contribution (plain only with
``secure_mode = "none"``), the artist's published prototypes and signed epsilon reports.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc
import numpy as np

from fedstyle_secure.data.images import content_key, load_image_folder
from fedstyle_secure.errors import ConfigError, DataError, TransportError
from fedstyle_secure.federation.client import Broadcast, Publication, StyleClient
from fedstyle_secure.data.public import public_set_from_name
from fedstyle_secure.federation.dataset import load_public_images
from fedstyle_secure.federation.packing import Layout, pack
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.federation.privacy_plan import encoder_config_for
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, DEFAULT_VIEWS, build_input_bank, default_cache_dir
from fedstyle_secure.secure.ckks import EncryptedVector, encrypt
from fedstyle_secure.secure.keystore import ArtistKeys
from fedstyle_secure.training.local import LocalConfig, LocalData
from fedstyle_secure.training.pretrain import default_pretrain_steps, make_initial_model, warm_start_cache
from fedstyle_secure.transport.artist_privacy import ArtistPrivacy
from fedstyle_secure.transport.channel import ArtistSession, open_channel
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.dp_config import announced_dp
from fedstyle_secure.transport.masking_client import MaskingClient, masking_step
from fedstyle_secure.transport.masking_session import MASKING_PHASES
from fedstyle_secure.transport.wire import pb

log = logging.getLogger(__name__)
# UNAUTHENTICATED: the server restarted (sessions are not persisted); ALREADY_EXISTS at
# registration: our previous connection has not timed out yet.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.ALREADY_EXISTS}
SKIPPABLE = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.DEADLINE_EXCEEDED}


def build_style_client(config: ClientConfig, artist_id: str, roster: tuple[str, ...], plan: pb.RoundPlan) -> StyleClient:
    """The artist's StyleClient, built the way :func:`prepare_federation` builds a simulated one."""
    artworks, _ = load_image_folder(config.data, min_artists=1)
    try:
        public_set = public_set_from_name(plan.public_set.name)
    except DataError as exc:
        raise ConfigError(str(exc)) from exc
    if len(artworks.artists) != 1:
        raise ConfigError(f"client.data: {config.data} must hold exactly one artist's folder, found {list(artworks.artists)}")
    cache = config.cache_dir or default_cache_dir()
    bank = build_input_bank(artworks.images, artworks.keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=cache)
    public_images = load_public_images(None, public_set)
    public = build_input_bank(public_images, [content_key(p) for p in public_images], DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=cache)
    spec = algorithm_spec(plan.algorithm)
    announced = announced_dp(plan)
    encoder = dataclasses.replace(encoder_config_for(None if announced is None else announced[0]), embedding_dim=plan.embedding_dim)
    model = make_initial_model(  # every artist starts from the same model, as in the simulator
        encoder, bank, public, len(roster) if spec.needs_classifier else None,
        seed=plan.seed, pretrain_steps=default_pretrain_steps(plan.HasField("dp")), cache=warm_start_cache(cache),
    )
    row = roster.index(artist_id)
    return StyleClient(
        client_id=artist_id, data=LocalData(bank=bank, labels=np.full(len(bank), row)), spec=spec, model=model,
        config=LocalConfig(epochs=config.epochs, batch_size=config.batch_size), public_inputs=public.originals(),
        n_artists=len(roster), rng=np.random.default_rng([plan.seed, row]),
    )


@dataclass
class ArtistRunner:
    """Acts on each plan exactly once; all model work is :class:`StyleClient`'s."""

    config: ClientConfig
    keys: ArtistKeys
    client: StyleClient | None = None
    standardised: bool = False
    done: tuple[int, str] = (0, "")
    done_attempt: int = 0  # attempt of the plan in ``done`` (a retried phase is acted on again)
    sent: dict[tuple[int, str, int], Callable[[ArtistSession], object]] = field(default_factory=dict)
    masking: MaskingClient | None = None
    privacy: ArtistPrivacy | None = None  # DP budget gate, durable ledger/results, reports (None: no DP)

    def act(self, session: ArtistSession, plan: pb.RoundPlan) -> None:
        """Send this plan's submission; after a reconnect the same (round, phase) resends the
        cached submission (fresh nonce) instead of training or releasing again."""
        if self.client is None:
            self.client = build_style_client(self.config, session.artist_id, session.roster, plan)
            self.privacy = ArtistPrivacy.open(self.config, self.keys, self.client, plan)
        if session.artist_id not in plan.participants:
            return
        if self.privacy is not None and not self.privacy.admit(session, plan):
            return  # retired (the server was told why) or sitting out a phase it must not be charged for
        key = (plan.round_id, plan.phase, plan.masking.session_id)  # session_id 0 outside masking phases
        if key not in self.sent:
            self.sent = {key: self._prepare(session, plan)}  # only the latest is ever resent
        self.sent[key](session)

    def _prepare(self, session: ArtistSession, plan: pb.RoundPlan) -> Callable[[ArtistSession], object]:
        """Do the round's local work once; return how to send its result."""
        client, round_id, r = self.client, plan.round_id, plan.round_id - 1  # r: the simulator's round index
        assert client is not None
        if plan.phase == "publish":
            publication = self._publication(session, plan)
            return lambda s: s.publish(round_id, publication)
        if plan.phase == "contribute":
            kind, payload, layout = self._protect(plan.secure_mode, self._local_arrays(session, plan))
            return lambda s: s.upload(round_id, kind, payload, layout)
        if plan.phase in MASKING_PHASES:  # secagg / secagg+: the contribution is masked, see masking_client
            if self.masking is None:
                self.masking = MaskingClient(self.keys.artist_id, self.keys.identity_key, self.keys.identity_public_keys)
            return masking_step(self.masking, session, plan, lambda: pack(self._local_arrays(session, plan)))
        if plan.phase == "decrypt":
            total = EncryptedVector.load(self.keys.ckks, session.aggregate(round_id), what=f"round {round_id} aggregate").decrypt()
            payload = np.asarray(total, dtype="<f8").tobytes()
            return lambda s: s.upload(round_id, pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE, payload)
        raise TransportError(f"round {round_id}: unknown phase {plan.phase!r} (is this client older than the server?)")

    def _local_arrays(self, session: ArtistSession, plan: pb.RoundPlan) -> dict[str, np.ndarray]:
        """The round's named arrays to sum: feature moments (set-up round) or a local fit's contribution."""
        client, round_id = self.client, plan.round_id
        assert client is not None
        if plan.kind == pb.ROUND_KIND_SETUP:
            return client.feature_moments()
        if self.privacy is not None:  # DP-SGD, charged once; a redone round gets the stored result
            return self.privacy.contribution(session, plan, lambda: self._broadcast(session, round_id))
        return client.fit(self._broadcast(session, round_id), round_id=round_id - 1)

    def _publication(self, session: ArtistSession, plan: pb.RoundPlan) -> Publication:
        """The round's prototype publication; under DP a Gaussian release charged once (see artist_privacy)."""
        assert self.client is not None
        if self.privacy is not None:
            return self.privacy.publication(session, plan, lambda: self._broadcast(session, plan.round_id))
        return self.client.publish(self._broadcast(session, plan.round_id), round_id=plan.round_id - 1)

    def _broadcast(self, session: ArtistSession, round_id: int) -> Broadcast:
        broadcast, standardisation = session.broadcast(round_id)
        if standardisation is not None and not self.standardised:
            self.client.set_standardisation(*standardisation)  # type: ignore[union-attr]
            self.standardised = True
        return broadcast

    def _protect(self, secure_mode: str, arrays: dict[str, np.ndarray]) -> tuple[int, bytes, Layout]:
        vector, layout = pack(arrays)
        if secure_mode == "ckks":
            return pb.PAYLOAD_KIND_CKKS_CIPHERTEXT, encrypt(self.keys.ckks, vector).serialize(), layout
        return pb.PAYLOAD_KIND_PLAIN_VECTOR, np.asarray(vector, dtype="<f8").tobytes(), layout

    def run_session(self, session: ArtistSession, stop: threading.Event) -> pb.RoundPlan:
        """Follow plans until the run finishes; returns the final plan."""
        while not stop.is_set():
            plan = session.plan(self.done[0], self.done[1], wait_seconds=5.0, after_attempt=self.done_attempt)
            if plan.finished:
                return plan
            if (plan.round_id, plan.phase) == self.done and plan.attempt == self.done_attempt:
                continue
            try:
                self.act(session, plan)
            except grpc.RpcError as exc:
                if exc.code() not in SKIPPABLE:
                    raise
                log.warning("round %d %s: %s", plan.round_id, plan.phase, exc.details())
            self.done, self.done_attempt = (plan.round_id, plan.phase), plan.attempt
        raise TransportError("stopped before the run finished")


def run_artist(config: ClientConfig, keys: ArtistKeys, stop: threading.Event | None = None) -> int:
    """Connect, register and follow the federation until it finishes; retry with backoff."""
    stop = stop or threading.Event()
    runner, delay = ArtistRunner(config, keys), config.reconnect_initial_seconds
    failing_since: float | None = None
    while not stop.is_set():
        try:
            with open_channel(config.server, keys.tls_pem(), server_name=config.server_name, max_message_bytes=config.max_message_bytes) as channel:
                session = ArtistSession.register(channel, keys)
                delay, runner.done, failing_since = config.reconnect_initial_seconds, (0, ""), None  # re-read the (maybe restarted) server's plan
                plan = runner.run_session(session, stop)
            if plan.failure:
                raise TransportError(f"the server stopped the run: {plan.failure}")
            log.info("federation finished", extra={"artist": keys.artist_id, "round": plan.round_id})
            return 0
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE:
                raise TransportError(f"{keys.artist_id}: server refused: {exc.code().name}: {exc.details()}") from exc
            failing_since = failing_since if failing_since is not None else time.monotonic()
            if time.monotonic() - failing_since > config.give_up_seconds:
                raise TransportError(f"{keys.artist_id}: server unreachable for {config.give_up_seconds:g} s (client.give_up_seconds); last error {exc.code().name}: {exc.details()}") from exc
            log.warning("connection problem (%s: %s); retrying in %.1f s", exc.code().name, exc.details(), delay)
        stop.wait(delay)
        delay = min(delay * 2, config.reconnect_max_seconds)
    return 1
