"""The artist process: one artist's private images, a :class:`StyleClient`, and the round loop
driven by the server's plans over mutual TLS.  Reconnects with exponential backoff.

Data never leaves this process except as the protected round contribution (plain only with
``secure_mode = "none"``), the artist's published prototypes and signed epsilon reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import torch
from tenacity import RetryCallState, Retrying, retry_if_exception

from fedstyle_secure.data.array_cache import ArrayCache
from fedstyle_secure.data.images import artist_folders, load_image_folder
from fedstyle_secure.data.public import forget_decoded_public_sets, public_set_from_name
from fedstyle_secure.errors import ConfigError, DataError, TransportError
from fedstyle_secure.federation.client import Broadcast, Publication, StyleClient
from fedstyle_secure.federation.packing import Layout, pack_as
from fedstyle_secure.federation.round_layout import round_layout
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.memory import call_in_fresh_process, memory_use_mb, return_freed_memory
from fedstyle_secure.models.factory import StyleModel
from fedstyle_secure.models.inputs import (
    DEFAULT_BACKBONE,
    DEFAULT_VIEWS,
    InputBank,
    build_input_bank,
    default_cache_dir,
)
from fedstyle_secure.randomness import CsprngNoise
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.secure.masking.config import MASKING_PHASES
from fedstyle_secure.training.local import LocalConfig, LocalData
from fedstyle_secure.training.pretrain import MAX_PUBLIC_PRETRAIN_STEPS
from fedstyle_secure.transport.artist.channel import ArtistSession, broadcast_limit, open_channel
from fedstyle_secure.transport.artist.ckks import CkksClient, Send, ckks_client, contribute_step, decrypt_step
from fedstyle_secure.transport.artist.masking import MaskingClient, masking_client, masking_step
from fedstyle_secure.transport.artist.plan_checks import (
    accepted_broadcast_standardisation,
    check_round_kind,
    check_run_id,
    check_secure_mode,
    check_value_range,
)
from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
from fedstyle_secure.transport.artist.state import (
    FirstPlanPin,
    one_artist_process,
    one_process_per_identity,
    witness_folder,
)
from fedstyle_secure.transport.artist.withdrawal import own_reports_dir, send_withdrawal
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.dp_config import announced_dp
from fedstyle_secure.transport.federation_model import public_bank, starting_model
from fedstyle_secure.transport.wire import ROUND_KINDS_OF_WIRE, pb, vector_payload

log = logging.getLogger(__name__)
PLAN_WAIT_SECONDS = 5.0  # long poll for the next plan
PLAN_REPOLL_PAUSE_SECONDS = 1.0  # after a poll answered early with nothing new
PLAN_MIN_INTERVAL_SECONDS = 0.2  # between polls that each brought a new plan (honest phases: rarely this fast)
# UNAUTHENTICATED: the server restarted (sessions are not persisted); ALREADY_EXISTS at
# registration: our previous connection has not timed out yet.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ALREADY_EXISTS,
}
SKIPPABLE = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class ArtistInputs:
    """What an artist derives from its artworks and the public set before its first round: the
    style-feature banks and the starting model (no secret: no key, no noise source)."""

    bank: InputBank
    public: InputBank
    model: StyleModel


def announced_public_set(plan: pb.RoundPlan) -> str:
    """The public set the plan announces, as this machine names it; :class:`ConfigError` if unknown here."""
    try:
        return public_set_from_name(plan.public_set.name)
    except DataError as exc:
        raise ConfigError(str(exc)) from exc


def check_min_quorum(config: ClientConfig, keys: ArtistKeys) -> None:
    """:class:`ConfigError` naming ``client.min_quorum`` if no sum of this artist's roster (its key
    bundle) could ever meet it: the artist would connect and sit out every round (a user walkthrough)."""
    roster = len(keys.identity_public_keys)
    if config.min_quorum > roster:
        raise ConfigError(
            f"client.min_quorum: {config.min_quorum} is above the {roster} artists of this key bundle's roster; no "
            "sum (nor CKKS decryption committee) of this federation could meet it -- lower it"
        )


def check_artist_data_folder(data: Path) -> None:
    """:class:`ConfigError` naming ``client.data`` unless it holds exactly one artist's folder (a
    listing: checked before the server is reached, where a typo would wait for a plan)."""
    try:
        folders = artist_folders(data)
    except DataError as exc:
        raise ConfigError(f"client.data: {exc}") from None
    if len(folders) != 1:
        raise ConfigError(
            f"client.data: {data} must hold exactly one artist's folder, found {[f.name for f in folders]}"
        )


def build_artist_inputs(config: ClientConfig, n_artists: int, plan: pb.RoundPlan, public_set: str) -> ArtistInputs:
    """Feature banks (own artworks, ``public_set`` as :func:`announced_public_set` names the plan's)
    and the starting model as :func:`prepare_federation` builds a simulated artist's.  Runs the
    backbone on a cold feature cache and the announced public warm start on a cold warm-start cache.
    Raises :class:`ConfigError` naming what is wrong."""
    artworks, _ = load_image_folder(config.data, min_artists=1)
    if len(artworks.artists) != 1:
        raise ConfigError(
            f"client.data: {config.data} must hold exactly one artist's folder, found {list(artworks.artists)}"
        )
    announced = announced_dp(plan)
    # every artist starts from the same model as the server and the simulator (encoder from the announced plan)
    dp = None if announced is None else announced[0]
    cache = config.cache_dir or default_cache_dir()
    bank = build_input_bank(artworks.images, artworks.keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=cache)
    public = public_bank(cache, public_set)
    spec = algorithm_spec(plan.algorithm)
    model = starting_model(
        spec, plan.embedding_dim, n_artists, plan.seed, dp, bank, public, cache, plan.public_pretrain_steps
    )
    return ArtistInputs(bank, public, model)


def build_artist_inputs_apart(
    config: ClientConfig, n_artists: int, plan: pb.RoundPlan, public_set: str
) -> ArtistInputs:
    """:func:`build_artist_inputs` in a child process ([client] compact_memory): the backbone, the
    decoded images and the warm start's buffers never enter this long-running process.  At most one
    such child per core runs at a time on a machine sharing the cache: artists started together
    would otherwise each hold a second interpreter with torch (measured: 64 artists left 3 GB free)."""
    threads = torch.get_num_threads()
    slots = ArrayCache(config.cache_dir or default_cache_dir(), "artist-inputs")
    with slots.one_of("build-slot", os.cpu_count() or 1):
        return call_in_fresh_process(_build_in_child, threads, config, n_artists, plan.SerializeToString(), public_set)


def _build_in_child(threads: int, config: ClientConfig, n_artists: int, plan: bytes, public_set: str) -> ArtistInputs:
    torch.set_num_threads(threads)  # as many as the artist process computes with
    return build_artist_inputs(config, n_artists, pb.RoundPlan.FromString(plan), public_set)


def build_style_client(
    config: ClientConfig, artist_id: str, roster: tuple[str, ...], plan: pb.RoundPlan
) -> StyleClient:
    """The artist's StyleClient, built the way :func:`prepare_federation` builds a simulated one;
    its inputs in a child process when ``config.compact_memory``.

    Its DP draws come from a fresh :class:`CsprngNoise` keyed by this process's OS entropy, never from a
    seeded source: the server picks the plan seed and roster rows are public.  After a restart the
    artist gets a new one (the key is never stored): what was released is resent, never recomputed."""
    public_set = announced_public_set(plan)  # refused before anything is pinned or computed
    steps = plan.public_pretrain_steps
    if steps > MAX_PUBLIC_PRETRAIN_STEPS:
        raise ConfigError(
            f"the plan announces public_pretrain_steps = {steps}, above the {MAX_PUBLIC_PRETRAIN_STEPS} an artist runs"
        )
    announced = announced_dp(plan)
    if config.state_dir is not None:  # the first plan's starting model and secure mode, for the whole run
        FirstPlanPin(config.state_dir).check(
            {
                "algorithm": plan.algorithm,
                "seed": int(plan.seed),
                "embedding_dim": int(plan.embedding_dim),
                "public_pretrain_steps": int(steps),
                "public_set": plan.public_set.name,
                "private_layers": None if announced is None else announced[0].private_layers,
                "secure_mode": plan.secure_mode,
                "run_id": plan.run_id,
            }
        )
    build = build_artist_inputs_apart if config.compact_memory else build_artist_inputs
    inputs = build(config, len(roster), plan, public_set)
    row = roster.index(artist_id)
    return StyleClient(  # rng: view / public-image choice only (public seed is fine); DP draws: the OS-keyed CSPRNG
        client_id=artist_id,
        data=LocalData(bank=inputs.bank, labels=np.full(len(inputs.bank), row)),
        spec=algorithm_spec(plan.algorithm),
        model=inputs.model,
        config=LocalConfig(epochs=config.epochs, batch_size=config.batch_size),
        public_inputs=inputs.public.originals(),
        n_artists=len(roster),
        rng=np.random.default_rng([plan.seed, row]),
        noise=CsprngNoise(),
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
    sent: dict[tuple[int, str, int, int], Send] = field(default_factory=dict)
    masking: MaskingClient | None = None
    ckks: CkksClient | None = None
    privacy: ArtistPrivacy | None = None  # DP budget gate, durable ledger/results, reports (None: no DP)
    secure_mode: str | None = None  # the run's secure mode, pinned at its first plan (check_secure_mode)
    run_id: str | None = None  # the run's id, pinned at its first plan (check_run_id)
    published_round: int | None = None  # without DP: the round id of the publication in ``client.own``

    def act(self, session: ArtistSession, plan: pb.RoundPlan) -> None:
        """Send this plan's submission; after a reconnect the same (round, phase) resends the
        cached submission (fresh nonce) instead of training or releasing again.  A CKKS decryption
        is redone for each attempt: every attempt's contribution set is checked anew.  A plan of
        another secure mode than the run's first is refused (:func:`check_secure_mode`)."""
        self.secure_mode = check_secure_mode(self.config, plan, self.secure_mode)
        run_id = check_run_id(plan, self.run_id)
        if self.run_id is None:  # what an auditor asks the artist for (`fedstyle audit --run-id`)
            log.info("%s takes part in run %s", session.artist_id, run_id or "(unnamed by the server)")
        self.run_id = run_id
        if self.client is None:
            self.client = build_style_client(self.config, session.artist_id, session.roster, plan)
            forget_decoded_public_sets()  # the public pixels are not needed again (26 MB for met)
            return_freed_memory()
            if not self.open_privacy(session, plan):
                return
        if session.artist_id not in plan.participants:
            return
        if self._declines(session, plan):
            return  # withdrew from the run (the server was told why)
        if self.privacy is not None and not self.privacy.admit(session, plan):
            return  # retired (the server was told why) or sitting out a phase it must not be charged for
        kind = check_round_kind(plan)
        if plan.phase in MASKING_PHASES:  # the range fixes the session (and its codec) at advertise
            check_value_range(plan, kind)
        attempt = plan.attempt if plan.phase == "decrypt" else 0
        key = (plan.round_id, plan.phase, plan.masking.session_id, attempt)  # session_id 0 outside masking phases
        if key not in self.sent:
            self.sent = {}  # only the latest is ever resent: drop the previous before preparing this one
            self.sent = {key: self._prepare(session, plan)}
        self.sent[key](session, plan)

    def open_privacy(self, session: ArtistSession, plan: pb.RoundPlan) -> bool:
        """Open the artist's privacy state (:meth:`ArtistPrivacy.open`) unless it declines the run first:
        a decline depends on settings only and comes before the state opens, so it charges nothing
        (red-team reviews, sixteenth and seventeenth).  False if it declined.  One home for the gRPC
        artist's first plan and every Flower message."""
        assert self.client is not None
        if session.artist_id in plan.participants and self._declines(session, plan):
            return False
        self.privacy = ArtistPrivacy.open(self.config, self.keys, self.client, plan)
        return True

    def _declines(self, session: ArtistSession, plan: pb.RoundPlan) -> bool:
        """Whether this artist takes no part in the run: its CKKS floor cannot be met under the run's
        committee size (:meth:`CkksClient.declines`).  It then withdraws once, with a signed withdrawal,
        so the server stops waiting for it in every phase and an audit lists it, and retires (exit
        status :data:`EXIT_RETIRED`); under DP through its privacy state, which also reports what it spent."""
        client = self.client
        assert client is not None
        if self.privacy is None and client.retired_reason is not None:
            return True  # withdrew already
        reason = self._ckks().declines(plan) if plan.secure_mode == "ckks" else None
        if reason is None:
            return False
        if self.privacy is not None:
            self.privacy.retire(session, plan, reason)
            return True
        client.retired_reason = reason
        log.warning("%s withdraws from the run at round %d: %s", session.artist_id, plan.round_id, reason)
        send_withdrawal(
            session, self.keys, plan, reason, own_reports_dir(self.config.reports_dir, self.config.state_dir)
        )
        return True

    def _prepare(self, session: ArtistSession, plan: pb.RoundPlan) -> Send:
        """Do the round's local work once; return how to send its result."""
        client, round_id = self.client, plan.round_id
        assert client is not None
        if plan.phase == "publish":
            publication = self._publication(session, plan)
            return lambda s, p: s.publish(round_id, publication)
        if plan.phase == "contribute":
            if plan.secure_mode == "ckks":  # packed and encrypted once per round, signed per attempt: see ckks_client
                return contribute_step(self._ckks(), round_id, lambda: self._packed(session, plan))
            if plan.secure_mode != "none":  # never in the clear under another mode (check_secure_mode)
                raise TransportError(f"round {round_id}: no contribute phase under secure_mode {plan.secure_mode!r}")
            vector, layout = self._packed(session, plan)
            payload = vector_payload(vector)  # sent from the vector's memory: no bytes copy
            return lambda s, p: s.upload(round_id, pb.PAYLOAD_KIND_PLAIN_VECTOR, payload, layout)
        if plan.phase in MASKING_PHASES:  # secagg / secagg+: the contribution is masked, see masking_client
            if self.masking is None:
                c = self.config
                self.masking = masking_client(
                    self.keys,
                    c.state_dir,
                    c.min_masking_threshold,
                    c.min_masking_degree,
                    min_quorum=c.min_quorum,
                    reports_dir=c.reports_dir,
                )
            step = masking_step(self.masking, session, plan, lambda: self._packed(session, plan))
            return lambda s, p: step(s)
        if plan.phase == "decrypt":  # CKKS: only a committee member decrypts, and only a sum it checked
            return decrypt_step(self._ckks(), session, plan)
        raise TransportError(f"round {round_id}: unknown phase {plan.phase!r} (is this client older than the server?)")

    def _packed(self, session: ArtistSession, plan: pb.RoundPlan) -> tuple[np.ndarray, Layout]:
        """The round's contribution packed in the layout the plan prescribes (the server computes
        the same layout and refuses any other)."""
        assert self.client is not None
        layout = round_layout(self.client.spec, self.client.shape(), ROUND_KINDS_OF_WIRE[plan.kind])
        if layout is None:
            raise TransportError(
                f"round {plan.round_id}: algorithm {plan.algorithm!r} sums nothing, "
                "yet the server asks for a contribution"
            )
        return pack_as(self._local_arrays(session, plan), layout), layout

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
        """The round's prototype publication, made once per round and resent when asked again: under
        DP a Gaussian release charged once (see artist_privacy); without DP the exact prototype,
        whose round a process-per-message artist (Flower) keeps in ``published_round``.  A server
        asking again with other broadcast models would otherwise get one exact prototype of the
        private artworks per model it chose (red-team review, 2026-11-30)."""
        client = self.client
        assert client is not None
        if self.privacy is not None:
            return self.privacy.publication(session, plan, lambda: self._broadcast(session, plan.round_id))
        if self.published_round == plan.round_id and client.own is not None:
            return client.own
        broadcast = self._broadcast(session, plan.round_id)
        publication = client.publish(broadcast, round_id=plan.round_id - 1, final=plan.kind == pb.ROUND_KIND_FINAL)
        self.published_round = plan.round_id
        return publication

    def _broadcast(self, session: ArtistSession, round_id: int) -> Broadcast:
        assert self.client is not None  # built on the run's first plan, before any broadcast
        limit = broadcast_limit(self.client.shape(), len(session.roster))
        broadcast, standardisation = session.broadcast(round_id, max_bytes=limit)
        if standardisation is not None and not self.standardised:
            self.client.set_standardisation(
                *accepted_broadcast_standardisation(standardisation, self.client.dp is not None)
            )
            self.standardised = True
        return broadcast

    def _ckks(self) -> CkksClient:
        if self.ckks is None:
            self.ckks = ckks_client(
                self.keys, self.config.state_dir, self.config.min_quorum, reports_dir=self.config.reports_dir
            )
        return self.ckks

    def run_session(self, session: ArtistSession, stop: threading.Event) -> pb.RoundPlan:
        """Follow plans until the run finishes; returns the final plan.  A long poll that comes back
        early with the plan already acted on is followed by a pause, never by a busy loop (an honest
        server answers when the plan changes or after the wait)."""
        while not stop.is_set():
            asked = time.monotonic()
            plan = session.plan(
                self.done[0], self.done[1], wait_seconds=PLAN_WAIT_SECONDS, after_attempt=self.done_attempt
            )
            if plan.finished:
                return plan
            if (plan.round_id, plan.phase) == self.done and plan.attempt == self.done_attempt:
                if time.monotonic() - asked < PLAN_WAIT_SECONDS / 2:
                    stop.wait(PLAN_REPOLL_PAUSE_SECONDS)
                continue
            try:
                self.act(session, plan)
            except grpc.RpcError as exc:
                if exc.code() not in SKIPPABLE:
                    raise
                log.warning("round %d %s: %s", plan.round_id, plan.phase, exc.details())
            self.done, self.done_attempt = (plan.round_id, plan.phase), plan.attempt
            # plans that change at once (a server alternating attempts or phases) get at most a few polls a second
            stop.wait(max(0.0, PLAN_MIN_INTERVAL_SECONDS - (time.monotonic() - asked)))
        raise TransportError("stopped before the run finished")


@dataclass
class Reachability:
    """How long the server has been unreachable and how long to wait before the next attempt.

    Exponential backoff from ``initial_seconds`` doubling to ``max_seconds``; both reset whenever
    the artist reaches the server (registers), so a restart late in a long run gets the full
    ``give_up_seconds`` again.  Time is passed in (seconds, monotonic)."""

    initial_seconds: float
    max_seconds: float
    give_up_seconds: float
    failing_since: float | None = None
    delay: float = 0.0

    def reached(self) -> None:
        self.failing_since, self.delay = None, 0.0

    def failed(self, now: float) -> float:
        """Record a failure at ``now``; return the seconds to wait before the next attempt."""
        if self.failing_since is None:
            self.failing_since = now
        self.delay = self.initial_seconds if self.delay == 0.0 else min(self.delay * 2, self.max_seconds)
        return self.delay

    def given_up(self, now: float) -> bool:
        return self.failing_since is not None and now - self.failing_since > self.give_up_seconds


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE


EXIT_RETIRED = 3
"""Exit status of an artist that followed the run to its end but stopped taking part before it (its
privacy budget, its lifetime budget, or a refused plan): its model and data stayed private, yet a
script must not read the run as one it took part in (before 2026-12-02 it exited 0)."""


def run_artist(config: ClientConfig, keys: ArtistKeys, stop: threading.Event | None = None) -> int:
    """Connect, register and follow the federation until it finishes (0, or :data:`EXIT_RETIRED` if
    this artist stopped taking part before the end), or until ``stop`` is set (1).  A connection
    problem (:data:`RETRYABLE`) reconnects with exponential backoff (tenacity); the artist gives up
    with :class:`TransportError` once the server has been unreachable for ``client.give_up_seconds``;
    any other refusal ends it at once.  No other process of this artist
    may be running on this machine (:func:`one_process_per_identity`), nor using its ``state_dir``
    (:func:`one_artist_process`); both are held until this returns."""
    public = keys.identity_key.public_key().public_bytes_raw()
    with contextlib.ExitStack() as held:
        held.enter_context(one_process_per_identity(keys.artist_id, public))
        if config.state_dir is not None:
            witness = witness_folder(config.reports_dir, keys.artist_id)  # a restored state_dir: a new lock file
            held.enter_context(one_artist_process(config.state_dir, wait=False, witness_dir=witness))
        return _follow_federation(config, keys, stop or threading.Event())


def _retirement(runner: ArtistRunner) -> str | None:
    """Why the artist stopped taking part in the run (its refusal, or its retirement), if it did."""
    if runner.privacy is not None and runner.privacy.refusal is not None:
        return runner.privacy.refusal
    return None if runner.client is None else runner.client.retired_reason


def _follow_federation(config: ClientConfig, keys: ArtistKeys, stop: threading.Event) -> int:
    runner = ArtistRunner(config, keys)
    reach = Reachability(config.reconnect_initial_seconds, config.reconnect_max_seconds, config.give_up_seconds)

    def follow() -> int:
        with open_channel(
            config.server, keys.tls_pem(), server_name=config.server_name, max_message_bytes=config.max_message_bytes
        ) as channel:
            session = ArtistSession.register(channel, keys)
            reach.reached()
            runner.done = (0, "")  # re-read the (maybe restarted) server's plan
            plan = runner.run_session(session, stop)
        if plan.failure:
            raise TransportError(f"the server stopped the run: {plan.failure}")
        log.info(
            "federation finished",
            extra={"artist": keys.artist_id, "round": plan.round_id, **memory_use_mb()},
        )
        retired = _retirement(runner)
        if retired is not None:  # a script reading the log or the exit status would think it took part
            log.warning("%s did not take part to the end: it retired (%s)", keys.artist_id, retired)
            return EXIT_RETIRED
        return 0

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, grpc.RpcError):
            log.warning("connection problem (%s: %s); retrying in %.1f s", exc.code().name, exc.details(), reach.delay)

    def pause(seconds: float) -> None:
        stop.wait(seconds)  # a set ``stop`` ends the wait early

    retrying = Retrying(
        retry=retry_if_exception(_retryable),
        wait=lambda state: reach.failed(time.monotonic()),
        stop=lambda state: stop.is_set() or reach.given_up(time.monotonic()),
        sleep=pause,
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        return retrying(follow)
    except grpc.RpcError as exc:
        if exc.code() not in RETRYABLE:
            raise TransportError(f"{keys.artist_id}: server refused: {exc.code().name}: {exc.details()}") from exc
        if stop.is_set():
            return 1
        raise TransportError(
            f"{keys.artist_id}: server unreachable for {config.give_up_seconds:g} s "
            f"(client.give_up_seconds); last error {exc.code().name}: {exc.details()}"
        ) from exc
