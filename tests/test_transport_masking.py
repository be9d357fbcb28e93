"""Pairwise-masking secure aggregation (secagg / secagg+) served over gRPC.

* The coordinator alone (time passed in): the masking phases, dropouts at each deadline,
  aborts below the threshold and retries with a fresh session id.
* Real gRPC + mutual TLS on loopback with real key files: refusals of malformed, foreign,
  replayed and misplaced masking messages, after which the round still completes.
* Whole federations (StyleClient, real features): the server's aggregate is exactly the
  fixed-point sum of the contributors' packed vectors, also when an artist vanishes in the
  masked-input phase.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from functools import partial
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.coordinator import Coordinator, Phase, Plan, Schedule, SecureSum
from fedstyle_secure.federation.masking_rounds import MaskingRound
from fedstyle_secure.federation.masking_session import FETCH_NAMES, TAG_BITS, round_config
from fedstyle_secure.federation.packing import Layout, pack
from fedstyle_secure.federation.rejections import Forbidden, Malformed, PastDeadline, WrongRound
from fedstyle_secure.federation.round_layout import FederationShape, ModelShape
from fedstyle_secure.federation.strategy import initial_state
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.secure.masking import MaskingPhase, MaskingServer
from fedstyle_secure.secure.masking.consistency import survivor_bitmap
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    MaskedInput,
    SurvivorSet,
    UnmaskRequest,
    parse_message,
)
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel
from fedstyle_secure.transport.artist.masking import MaskingClient, masking_client, masking_step
from fedstyle_secure.transport.loopback import start_loopback, write_fresh_keys
from fedstyle_secure.transport.wire import new_nonce, pb
from tests.fakes import Clock
from tests.servers import address, refused, start, wait_for_phase

ARTISTS = ("artist_a", "artist_b", "artist_c")
WIRE = STYLE_FEATURE_DIM  # feature width of a real server's set-up round (its plan, from its model)


def _moments(value: float, width: int = 4) -> dict[str, np.ndarray]:
    return {
        "clients": np.array([1.0]),
        "feature_mean": np.full(width, value),
        "feature_sq_mean": np.full(width, value * value),
    }


def _exact_sum(codec, vectors) -> np.ndarray:
    """The decoded masked sum is exactly the sum of the fixed-point encodings."""
    return codec.dequantize(sum(codec.quantize(v) for v in vectors))


def _session_id(plan: Plan) -> int:
    """The masking session id of a masking phase's plan."""
    assert plan.masking is not None  # a masking phase's plan always carries its session's parameters
    return plan.masking.session_id


def _last_sum(coordinator: Coordinator) -> SecureSum:
    """The coordinator's last decoded masked sum (the caller has just completed a masked round)."""
    assert coordinator.last_sum is not None
    return coordinator.last_sum


def _as_message(plan: Plan, schedule: Schedule) -> pb.RoundPlan:
    """What the server would send for ``plan`` (the fields the masking client reads)."""
    message = pb.RoundPlan(
        round_id=plan.round_id,
        secure_mode=schedule.secure_mode,
        participants=list(plan.participants),
        phase=plan.phase.value,
        value_low=plan.value_range[0],
        value_high=plan.value_range[1],
        seed=schedule.seed,
        attempt=plan.attempt,
    )
    if plan.masking is not None:
        message.masking.CopyFrom(
            pb.MaskingParameters(
                session_id=plan.masking.session_id, threshold=plan.masking.threshold, degree=plan.masking.degree
            )
        )
    return message


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keys") / "set", ARTISTS + ("artist_d", "artist_e"))


# --------------------------------------------------------------------------- coordinator only


class _Federation:
    """A coordinator plus one masking client per artist, exchanging bytes as the servicer does."""

    def __init__(self, keys: Path, roster: tuple[str, ...], **schedule) -> None:
        server_keys = load_server_keys(keys)
        self.schedule = Schedule(
            **{
                "rounds": 1,
                "quorum": 2,
                "phase_seconds": 10,
                "startup_seconds": 0,  # the fake clock plays every deadline, the first phase's too
                "masking_seconds": 5,
                "max_retries": 1,
                "secure_mode": "secagg",
                **schedule,
            }
        )
        shape = FederationShape(feature_dim=4, embedding_dim=4, public_count=2, model=ModelShape.everything(5))
        state = initial_state(len(roster), 4, np.zeros(5, np.float32))
        self.c = Coordinator(
            schedule=self.schedule,
            roster=roster,
            state=state,
            shape=shape,
            identity_publics={a: server_keys.identity_public_keys[a] for a in roster},
        )
        self.c.start(now=0.0)
        self.clients = {
            a: MaskingClient(a, k.identity_key, k.identity_public_keys)
            for a in roster
            for k in [load_artist_keys(keys, a)]
        }
        self.vectors: dict[str, np.ndarray] = {}

    def step(self, artists, now: float, values: dict[str, float] | None = None) -> None:
        """Every artist in ``artists`` does its part of the current masking phase."""
        plan = self.c.plan()
        message = _as_message(plan, self.schedule)
        for artist in artists:
            client = self.clients[artist]
            if plan.phase is Phase.ADVERTISE:
                vector, layout = pack(_moments((values or {}).get(artist, 1.0)))
                self.vectors[artist] = vector
                self.c.submit_masking(
                    artist, plan.round_id, "advertise", client.advertise(message, vector), layout, new_nonce(), now
                )
            else:
                incoming = self.c.masking_message(artist, plan.round_id, FETCH_NAMES[plan.phase.value])
                assert incoming is not None  # every artist stepped through the phase before: its message is there
                self.c.submit_masking(
                    artist, plan.round_id, plan.phase.value, client.respond(message, incoming), None, new_nonce(), now
                )

    def codec(self) -> FixedPointCodec:
        masking = self.c._masking
        assert masking is not None and masking._server is not None  # a masking session is under way
        return masking._server.config.codec  # the session's fixed-point codec


def test_all_phases_sum_exactly_and_the_plan_names_each_masking_phase(keys):
    f = _Federation(keys, ARTISTS)
    values = {"artist_a": 1.0, "artist_b": 2.0, "artist_c": 4.0}
    seen = []
    for _ in range(5):
        seen.append(f.c.plan().phase.value)
        assert _session_id(f.c.plan()) >> 32 == 0  # round 0
        if f.c.plan().phase is Phase.UNMASK:
            codec = f.codec()
        f.step(ARTISTS, now=1.0, values=values)
    assert seen == ["advertise", "share", "masked_input", "consistency", "unmask"]
    assert _last_sum(f.c).contributors == ARTISTS and _last_sum(f.c).dropped == ()
    np.testing.assert_array_equal(_last_sum(f.c).total, _exact_sum(codec, f.vectors.values()))
    assert f.c.standardisation is not None
    np.testing.assert_allclose(f.c.standardisation[0], 7 / 3, rtol=1e-6)
    next_plan = f.c.plan()
    assert (next_plan.round_id, next_plan.phase, _session_id(next_plan) >> 32) == (1, Phase.ADVERTISE, 1)


def test_dropout_in_masked_input_proceeds_at_the_deadline_with_the_survivors_sum(keys):
    f = _Federation(keys, ARTISTS)
    f.step(ARTISTS, now=1.0)
    f.step(ARTISTS, now=1.0)
    f.step(("artist_a", "artist_b"), now=1.0)  # artist_c vanishes before sending its masked input
    assert f.c.plan().phase is Phase.MASKED_INPUT and not f.c.tick(5.0)
    assert f.c.tick(6.5)  # masked_input opened at 1.0 with masking_seconds = 5
    with pytest.raises(PastDeadline, match="closed at its deadline"):  # too late: the phase closed without it
        f.c.submit_masking("artist_c", 0, "masked_input", b"late", None, new_nonce(), 7.0)
    with pytest.raises(WrongRound, match="dropped out"):  # and nothing is addressed to it any more
        f.c.masking_message("artist_c", 0, "survivors")
    codec = f.codec()
    f.step(("artist_a", "artist_b"), now=7.0)  # consistency: both sign the survivor set
    f.step(("artist_a", "artist_b"), now=7.0)
    assert _last_sum(f.c).contributors == ("artist_a", "artist_b") and _last_sum(f.c).dropped == ("artist_c",)
    np.testing.assert_array_equal(
        _last_sum(f.c).total, _exact_sum(codec, [f.vectors["artist_a"], f.vectors["artist_b"]])
    )


def test_an_artist_retiring_before_it_advertised_does_not_hold_the_session_until_the_deadline(keys):
    """An artist that withdraws at a round's start (a budget or lifetime refusal) stayed among those the
    masking session waited for: the round stood still until the advertise deadline (417 s measured in a
    walkthrough: phase_seconds + startup_seconds).  Its withdrawal now completes the phase at once."""
    f = _Federation(keys, ARTISTS)
    f.step(("artist_a", "artist_b"), now=1.0)
    assert f.c.plan().phase is Phase.ADVERTISE  # artist_c has not answered yet
    assert f.c.retire("artist_c", "lifetime privacy budget")
    assert f.c.tick(1.5) and f.c.plan().phase is Phase.SHARE  # long before the deadline (10 s)
    for _ in range(4):
        f.step(("artist_a", "artist_b"), now=2.0)
    assert _last_sum(f.c).contributors == ("artist_a", "artist_b")


def test_below_threshold_aborts_and_the_retry_is_a_fresh_session(keys):
    """secagg over 5 artists needs t = 4 shares; 3 masked inputs cannot be unmasked."""
    roster = ARTISTS + ("artist_d", "artist_e")
    f = _Federation(keys, roster, quorum=3)
    first = _session_id(f.c.plan())
    f.step(roster, 1.0)
    f.step(roster, 1.0)
    f.step(roster[:3], 1.0)
    assert f.c.tick(7.0)  # masked-input deadline: 3 of 5 contributed, threshold 4
    assert f.c.attempt == 1 and "threshold is 4" in f.c.last_error and f.c.plan().phase is Phase.ADVERTISE
    retry = _session_id(f.c.plan())
    assert retry != first and retry >> 32 == 0
    f.step(roster, 8.0)  # every artist takes part in the retry (a fresh session)
    assert f.c.plan().phase is Phase.SHARE
    stale = _as_message(f.c.plan(), f.schedule)
    stale.masking.session_id = first
    with pytest.raises(SecureAggregationError, match="already used"):  # an artist never reuses a session id
        f.clients["artist_a"].advertise(stale, np.zeros(9))


def test_secagg_plus_sparse_graph_survives_a_dropout(keys):
    roster = ARTISTS + ("artist_d", "artist_e")
    f = _Federation(keys, roster, secure_mode="secagg+", masking_degree=2, quorum=3)
    f.step(roster, 1.0)
    f.step(roster, 1.0)
    assert f.c._masking is not None and f.c._masking._server is not None
    assert max(len(n) for n in f.c._masking._server.config.neighbours.values()) == 2  # a ring, not complete
    f.step(roster[1:], 1.0)
    assert f.c.tick(7.0)
    codec = f.codec()
    f.step(roster[1:], 8.0)
    f.step(roster[1:], 8.0)
    assert _last_sum(f.c).contributors == roster[1:]
    np.testing.assert_array_equal(_last_sum(f.c).total, _exact_sum(codec, [f.vectors[a] for a in roster[1:]]))


def test_coordinator_refusals(keys):
    f = _Federation(keys, ARTISTS)
    plan = _as_message(f.c.plan(), f.schedule)
    vector, layout = pack(_moments(1.0))
    advert = f.clients["artist_b"].advertise(plan, vector)
    with pytest.raises(Forbidden, match="as 'artist_b'"):
        f.c.submit_masking("artist_a", 0, "advertise", advert, layout, new_nonce(), 1.0)
    with pytest.raises(WrongRound, match="not 'share'"):
        f.c.submit_masking("artist_b", 0, "share", advert, None, new_nonce(), 1.0)
    with pytest.raises(Malformed, match="must declare the layout"):
        f.c.submit_masking("artist_b", 0, "advertise", advert, None, new_nonce(), 1.0)
    with pytest.raises(Malformed, match="expects"):
        f.c.submit_masking(
            "artist_b", 0, "advertise", advert, pack({"weighted_params": np.zeros(3)})[1], new_nonce(), 1.0
        )
    with pytest.raises(Malformed, match="unknown masking phase"):
        f.c.submit_masking("artist_b", 0, "contribute", advert, None, new_nonce(), 1.0)
    f.c.submit_masking("artist_b", 0, "advertise", advert, layout, new_nonce(), 1.0)
    assert f.c.masking_message("artist_b", 0, "roster") is None  # not yet: the caller waits


# --------------------------------------------------------------------------- gRPC, loopback, real keys


def test_malformed_and_misplaced_masking_messages_are_refused_and_the_round_completes(keys, tmp_path):
    clock = Clock()
    running = start(keys, tmp_path, Schedule(rounds=1, quorum=3, phase_seconds=60, secure_mode="secagg"), clock)
    channels = []
    try:
        sessions, clients = {}, {}
        for artist in ARTISTS + ("artist_d", "artist_e"):
            artist_keys = load_artist_keys(keys, artist)
            channels.append(open_channel(address(running), artist_keys.tls_pem()))
            sessions[artist] = ArtistSession.register(channels[-1], artist_keys)
            clients[artist] = MaskingClient(artist, artist_keys.identity_key, artist_keys.identity_public_keys)
        a = sessions["artist_a"]
        plan = a.plan()
        assert (plan.phase, plan.masking.session_id >> 32, plan.masking.threshold) == (
            "advertise",
            0,
            pytest.approx(2 / 3),
        )
        vectors = {artist: pack(_moments(float(i + 1), WIRE))[0] for i, artist in enumerate(sessions)}
        layout = pack(_moments(1.0, WIRE))[1]
        adverts = {artist: clients[artist].advertise(plan, vectors[artist]) for artist in sessions}

        refused(
            lambda: a.submit_masking(0, "advertise", b"FSMK\x01garbage", layout),
            grpc.StatusCode.INVALID_ARGUMENT,
            "does not decode",
        )
        refused(
            lambda: a.submit_masking(0, "advertise", adverts["artist_a"][:-5], layout),
            grpc.StatusCode.INVALID_ARGUMENT,
            "does not decode",
        )
        forged = parse_message(adverts["artist_a"])
        assert isinstance(forged, AdvertiseKeys)
        bad_signature = AdvertiseKeys(
            forged.round_id, forged.sender, forged.enc_public, forged.enc_public, forged.contribution, forged.signature
        ).to_bytes()
        refused(
            lambda: a.submit_masking(0, "advertise", bad_signature, layout),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not signed by its identity key",
        )
        refused(
            lambda: a.submit_masking(0, "advertise", adverts["artist_b"], layout),
            grpc.StatusCode.PERMISSION_DENIED,
            "as 'artist_b'",
        )
        refused(
            lambda: a.submit_masking(0, "share", adverts["artist_a"]),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not 'share'",
        )
        huge = Layout((("clients", (1,)), ("feature_mean", (2_000_000,)), ("feature_sq_mean", (4,))))
        refused(
            lambda: a.submit_masking(0, "advertise", adverts["artist_a"], huge),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "max_message_bytes",
        )
        refused(
            lambda: a.submit_masking(4, "advertise", adverts["artist_a"], layout),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not the current round",
        )
        refused(
            lambda: a.fetch_masking(0, "roster", timeout=2), grpc.StatusCode.DEADLINE_EXCEEDED, ""
        )  # long poll: not yet there
        nonce = new_nonce()
        a.submit_masking(0, "advertise", adverts["artist_a"], layout, nonce=nonce)
        refused(
            lambda: a.submit_masking(0, "advertise", adverts["artist_a"], layout, nonce=nonce),
            grpc.StatusCode.ALREADY_EXISTS,
            "replayed",
        )
        refused(
            lambda: a.submit_masking(0, "advertise", adverts["artist_a"], layout),
            grpc.StatusCode.ALREADY_EXISTS,
            "already submitted",
        )
        for artist in ("artist_b", "artist_c", "artist_d", "artist_e"):
            sessions[artist].submit_masking(0, "advertise", adverts[artist], layout)

        phases = ("advertise", "share", "masked_input", "consistency", "unmask")
        for prior, phase in itertools.pairwise(phases):
            plan = a.plan(0, prior, wait_seconds=5)
            assert plan.phase == phase
            replies = {
                artist: clients[artist].respond(plan, sessions[artist].fetch_masking(0, FETCH_NAMES[phase]))
                for artist in sessions
            }
            if phase == "masked_input":
                short = MaskedInput(plan.masking.session_id, "artist_a", np.zeros(3, dtype=np.uint32)).to_bytes()
                refused(
                    partial(a.submit_masking, 0, "masked_input", short),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "vector of length 3",
                )
                refused(
                    lambda: a.submit_masking(0, "masked_input", b""),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "does not decode",
                )
            for artist, reply in replies.items():
                sessions[artist].submit_masking(0, phase, reply)
        codec = round_config(
            "secagg", list(sessions), (plan.value_low, plan.value_high), _params(plan), vectors["artist_a"].size
        ).codec
        last = _last_sum(running.servicer.coordinator)
        assert last.round_id == 0 and last.contributors == tuple(sorted(sessions))
        np.testing.assert_array_equal(last.total, _exact_sum(codec, vectors.values()))
        assert a.plan(0, "unmask", wait_seconds=5).round_id == 1  # the set-up round completed
    finally:
        running.stop(0)
        for channel in channels:
            channel.close()


def _params(plan: pb.RoundPlan):
    from fedstyle_secure.transport.artist.masking import params_from_plan

    return params_from_plan(plan)


# --------------------------------------------------------------------------- whole federations


@pytest.fixture
def recorded(monkeypatch):
    """Record every packed vector an artist masks and every sum the server unmasks."""
    vectors: dict[tuple[int, str], np.ndarray] = {}
    sums: dict[int, tuple[tuple[str, ...], np.ndarray, object]] = {}
    lock = threading.Lock()
    advertise, finish = MaskingClient.advertise, MaskingRound.finish

    def recording_advertise(self, plan, vector):
        with lock:
            vectors[(plan.round_id, self.artist_id)] = np.array(vector)
        return advertise(self, plan, vector)

    def recording_finish(self):
        outcome = finish(self)
        sums[self.params.session_id >> 32] = (outcome.contributors, outcome.total, self._server.config.codec)
        return outcome

    monkeypatch.setattr(MaskingClient, "advertise", recording_advertise)
    monkeypatch.setattr(MaskingRound, "finish", recording_finish)
    return vectors, sums


def _check_exact_sums(recorded, rounds: int) -> dict[int, tuple[str, ...]]:
    vectors, sums = recorded
    assert sorted(sums) == list(range(rounds + 1))  # set-up + training rounds
    for round_id, (contributors, total, codec) in sums.items():
        np.testing.assert_array_equal(total, _exact_sum(codec, [vectors[(round_id, a)] for a in contributors]))
    return {r: s[0] for r, s in sums.items()}


@pytest.mark.parametrize("secure_mode", ["secagg", "secagg+"])
def test_masked_federation_completes_with_exact_sums(tmp_path, data, recorded, secure_mode):
    schedule = Schedule(
        rounds=2, quorum=3, phase_seconds=30, masking_seconds=15, secure_mode=secure_mode, refreshes=frozenset({0, 1})
    )
    federation = start_loopback(tmp_path / "run", data, schedule, cache_dir=data.parent / "cache", epochs=1)
    try:
        assert federation.join(timeout=120)
        coordinator = federation.server.servicer.coordinator
    finally:
        federation.close()
    artists = ("artist_00", "artist_01", "artist_02")
    assert federation.results == {a: 0 for a in artists}
    assert coordinator.failed is None and coordinator.state.round == 3 and coordinator.state.known.all()
    assert _check_exact_sums(recorded, rounds=2) == {0: artists, 1: artists, 2: artists}
    assert coordinator.state.params is not None and np.isfinite(coordinator.state.params).all()


class Vanished(RuntimeError):
    """The artist process stops (as if killed) in the masked-input phase."""


def test_artist_vanishing_in_masked_input_leaves_the_survivors_exact_sum(tmp_path, data, recorded, monkeypatch):
    respond = MaskingClient.respond

    def vanish(self, plan, server_message):
        if self.artist_id == "artist_02" and plan.round_id == 1 and plan.phase == "masked_input":
            raise Vanished("artist_02 stops after receiving its shares, before sending its masked input")
        return respond(self, plan, server_message)

    monkeypatch.setattr(MaskingClient, "respond", vanish)
    schedule = Schedule(
        rounds=1, quorum=2, phase_seconds=10, masking_seconds=3, secure_mode="secagg", refreshes=frozenset({0})
    )  # the final publication waits phase_seconds for artist_02; the first phase gets startup_seconds more
    federation = start_loopback(tmp_path / "run", data, schedule, cache_dir=data.parent / "cache", epochs=1)
    try:
        assert federation.join(timeout=120)
        coordinator = federation.server.servicer.coordinator
    finally:
        federation.close()
    assert federation.results["artist_00"] == 0 and federation.results["artist_01"] == 0
    assert isinstance(federation.results["artist_02"], Vanished)
    assert coordinator.failed is None and coordinator.state.round == 2
    contributors = _check_exact_sums(recorded, rounds=1)
    assert contributors == {0: ("artist_00", "artist_01", "artist_02"), 1: ("artist_00", "artist_01")}
    assert _last_sum(coordinator).dropped == ("artist_02",)


def test_an_aborted_round_is_announced_as_a_new_attempt_with_a_fresh_session(keys, tmp_path):
    """Quorum 5 but only one artist advertises: at the deadline the round is retried; the artist
    that already acted on (round 0, advertise) is woken by the new attempt, not left waiting."""
    clock = Clock()
    running = start(
        keys, tmp_path, Schedule(rounds=1, quorum=5, phase_seconds=60, startup_seconds=0, secure_mode="secagg"), clock
    )
    try:
        artist_keys = load_artist_keys(keys, "artist_a")
        with open_channel(address(running), artist_keys.tls_pem()) as channel:
            session = ArtistSession.register(channel, artist_keys)
            client = MaskingClient("artist_a", artist_keys.identity_key, artist_keys.identity_public_keys)
            first = session.plan()
            vector, layout = pack(_moments(1.0, WIRE))
            session.submit_masking(0, "advertise", client.advertise(first, vector), layout)
            clock.now += 61  # the advertise deadline passes with 1 of 5 (quorum 5)
            retry = session.plan(0, "advertise", wait_seconds=10, after_attempt=first.attempt)
            assert (retry.round_id, retry.phase, retry.attempt) == (0, "advertise", 1)
            assert retry.masking.session_id != first.masking.session_id and retry.masking.session_id >> 32 == 0
            assert "quorum 5" in session.stub.GetStatus(pb.StatusRequest(), timeout=5).last_error
            session.submit_masking(
                0, "advertise", client.advertise(retry, vector), layout
            )  # the retry is a new session
    finally:
        running.stop(0)


# --------------------------------------------------------------------------- a lying server over gRPC


@pytest.fixture(scope="module")
def three_keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keys3") / "set", ARTISTS)


def test_lying_server_over_grpc_gets_no_share_from_the_real_artists(three_keys, tmp_path, monkeypatch):
    """The filer's attack (n = 3, t = 2) by a server process that deviates: in the consistency phase it
    shows the target "only you survived" and each other artist "the target and you", then relays
    every signature it got with the matching lie.  The artists are the real transport code
    (``masking_step`` over mutual TLS): none reveals a share and their state shows nothing revealed."""
    target, roster = "artist_a", ARTISTS
    lying_servers: list[MaskingServer] = []
    shown_by_server: dict[int, dict[str, set[str]]] = {}  # id(lying server) -> the survivor set it showed each artist

    def lie_survivors(self: MaskingServer) -> dict[str, SurvivorSet]:
        lying_servers.append(self)
        self.phase = MaskingPhase.CONSISTENCY
        shown = {a: {target} if a == target else {target, a} for a in sorted(self._inputs)}
        shown_by_server[id(self)] = shown
        n, rid = len(self.config.roster), self.config.round_id
        return {a: SurvivorSet(rid, a, n, survivor_bitmap(self.config.roster, s)) for a, s in shown.items()}

    def keep_any_signature(self: MaskingServer, message) -> None:
        self._signatures[message.sender] = message.signature

    def lie_unmask(self: MaskingServer) -> dict[str, UnmaskRequest]:
        forged = tuple((a, os.urandom(64)) for a in roster if a not in self._signatures)  # pad to everyone
        everyone = tuple(sorted(tuple(self._signatures.items()) + forged))
        for artist, shown in shown_by_server[id(self)].items():
            dropped = tuple(sorted(set(roster) - shown))
            self._requests[artist] = UnmaskRequest(
                self.config.round_id, artist, tuple(sorted(shown)), dropped, everyone
            )
        self.phase = MaskingPhase.UNMASK
        return dict(self._requests)

    monkeypatch.setattr(MaskingServer, "close_masked_inputs", lie_survivors)
    monkeypatch.setattr(MaskingServer, "_accept_survivor_signature", keep_any_signature)
    monkeypatch.setattr(MaskingServer, "close_consistency", lie_unmask)
    clock = Clock()
    schedule = Schedule(rounds=1, quorum=2, phase_seconds=60, masking_seconds=30, secure_mode="secagg", max_retries=1)
    keys = three_keys
    running = start(keys, tmp_path, schedule, clock)
    channels = []
    try:
        sessions, clients = {}, {}
        for artist in roster:
            artist_keys = load_artist_keys(keys, artist)
            channels.append(open_channel(address(running), artist_keys.tls_pem()))
            sessions[artist] = ArtistSession.register(channels[-1], artist_keys)
            clients[artist] = MaskingClient(artist, artist_keys.identity_key, artist_keys.identity_public_keys)
        vectors = {a: _moments(float(i + 1), WIRE) for i, a in enumerate(roster)}
        for phase in ("advertise", "share", "masked_input", "consistency"):
            for artist in roster:
                plan = wait_for_phase(sessions[artist], phase)
                send = masking_step(clients[artist], sessions[artist], plan, partial(pack, vectors[artist]))
                send(sessions[artist])
        coordinator = running.servicer.coordinator
        if coordinator.plan().phase.value == "consistency":
            clock.now += 31  # the consistency deadline passes without the target: the liar moves to "unmask"
        for artist in roster:
            plan = wait_for_phase(sessions[artist], "unmask")
            send = masking_step(clients[artist], sessions[artist], plan, partial(pack, vectors[artist]))
            send(sessions[artist])
        assert lying_servers[0]._responses == {} and coordinator._collect.items == {}  # no share reached the server
        assert set(lying_servers[0]._signatures) == {"artist_b", "artist_c"}  # the target refused to sign {T}
        for artist, client in clients.items():
            assert client._unmasked_rounds == set()
            assert client._current is not None
            expected = MaskingPhase.CONSISTENCY if artist == target else MaskingPhase.UNMASK
            assert client._current.machine.phase is expected  # signed at most, revealed nothing
        clock.now += 31  # nobody answered the unmasking request: the round is aborted and retried
        retry = sessions[target].plan(0, "unmask", wait_seconds=10)
        assert (retry.phase, retry.attempt) == ("advertise", 1)
        assert "unmask" in coordinator.last_error
    finally:
        running.stop(0)
        for channel in channels:
            channel.close()


def test_server_faking_an_abort_after_unmasking_gets_no_second_session_from_restarted_artists(
    three_keys, tmp_path, monkeypatch
):
    """A server decodes round 0's sum, fakes an abort and retries the round: the artists that answered
    the unmasking request refuse the retry -- and so do the same artists restarted from their
    state_dir (a restarted DP artist resends its stored contribution, so two sums of one round would
    give the server one artist's vector).  Real server, real masking clients over mutual TLS."""
    roster, decoded = ARTISTS, []
    honest_finish = MaskingRound.finish

    def decode_then_fake_an_abort(self: MaskingRound):
        decoded.append(honest_finish(self))
        raise SecureAggregationError("faked abort after decoding")

    monkeypatch.setattr(MaskingRound, "finish", decode_then_fake_an_abort)
    schedule = Schedule(rounds=1, quorum=2, phase_seconds=60, masking_seconds=30, secure_mode="secagg", max_retries=2)
    running = start(three_keys, tmp_path, schedule, Clock())
    channels = []
    try:
        sessions, keys = {}, {a: load_artist_keys(three_keys, a) for a in roster}
        for artist in roster:
            channels.append(open_channel(address(running), keys[artist].tls_pem()))
            sessions[artist] = ArtistSession.register(channels[-1], keys[artist])
        first = {a: masking_client(keys[a], tmp_path / a) for a in roster}
        vectors = {a: pack(_moments(float(i + 1), WIRE)) for i, a in enumerate(roster)}

        def take_part(clients: dict[str, MaskingClient], phase: str) -> None:
            for artist, client in clients.items():
                plan = wait_for_phase(sessions[artist], phase)
                masking_step(client, sessions[artist], plan, partial(vectors.__getitem__, artist))(sessions[artist])

        for phase in ("advertise", "share", "masked_input", "consistency", "unmask"):
            take_part(first, phase)
        coordinator = running.servicer.coordinator
        assert len(decoded) == 1 and decoded[0].contributors == roster  # the server has round 0's sum
        retry = sessions["artist_a"].plan(0, "unmask", wait_seconds=10)
        assert (retry.round_id, retry.phase, retry.attempt) == (0, "advertise", 1)
        take_part(first, "advertise")  # the same processes remember
        restarted = {a: masking_client(keys[a], tmp_path / a) for a in roster}  # new processes, same state_dir
        take_part(restarted, "advertise")
        plan = coordinator.plan()  # the retried session got no advertisement, so it never moved on
        assert (plan.phase, plan.attempt, coordinator._collect.items) == (Phase.ADVERTISE, 1, {})
        assert all(c._current is None for c in restarted.values())
    finally:
        running.stop(0)
        for channel in channels:
            channel.close()


@pytest.mark.parametrize(
    ("secure_mode", "lowered", "words"),
    [
        ("secagg", {"masking_threshold": 0.51}, "masking threshold 0.51 is below my floor 0.6667"),
        ("secagg+", {"masking_degree": 2}, "SecAgg+ degree 2 is below my floor 4 for 5 participants"),
    ],
)
def test_server_lowering_the_threshold_or_degree_gets_no_advertisement(
    keys, tmp_path, secure_mode, lowered, words, caplog
):
    """The server announces the masking threshold and the SecAgg+ degree; lowered below the defaults
    (t = 3 of 5 instead of 4; neighbourhoods of 3 instead of 5) a round tolerates fewer colluding
    share holders.  Real artists' masking clients refuse to advertise keys under such a plan (their
    floors come from their own config); one configured to accept it does, so the plan is otherwise fine."""
    roster = ARTISTS + ("artist_d", "artist_e")
    schedule = Schedule(rounds=1, quorum=5, phase_seconds=60, masking_seconds=30, secure_mode=secure_mode, **lowered)
    running = start(keys, tmp_path, schedule, Clock())
    channels = []
    try:
        for artist in roster:
            artist_keys = load_artist_keys(keys, artist)
            channels.append(open_channel(address(running), artist_keys.tls_pem()))
            session = ArtistSession.register(channels[-1], artist_keys)
            permissive = artist == "artist_e"
            client = masking_client(artist_keys, None, 0.51, 2) if permissive else masking_client(artist_keys, None)
            plan = wait_for_phase(session, "advertise")
            with caplog.at_level("WARNING"):
                masking_step(client, session, plan, lambda: pack(_moments(1.0, WIRE)))(session)
            assert (client._current is not None) == permissive
        assert set(running.servicer.coordinator._collect.items) == {"artist_e"}
        assert words in caplog.text
    finally:
        running.stop(0)
        for channel in channels:
            channel.close()


def test_server_announcing_a_two_participant_session_gets_no_advertisement_below_the_floor(
    keys, tmp_path, caplog, monkeypatch
):
    """Attack: a server deviating from the protocol treats all but two of its five roster artists as
    retired, so the masking session has two participants and the sum it decodes -- and broadcasts as
    the next model -- is two inputs, one of which the other participant knows.  An artist whose
    ``client.min_quorum`` is 3 refuses to advertise keys in it, before any local training; one at the
    default floor 2 joins, so the plan is otherwise fine."""
    monkeypatch.setattr(Coordinator, "participants", property(lambda self: ("artist_a", "artist_b")))
    schedule = Schedule(rounds=1, quorum=2, phase_seconds=60, masking_seconds=30, secure_mode="secagg")
    running = start(keys, tmp_path, schedule, Clock())
    channels, clients = [], {}
    try:
        for artist, floor in (("artist_a", 3), ("artist_b", 2)):
            artist_keys = load_artist_keys(keys, artist)
            channels.append(open_channel(address(running), artist_keys.tls_pem()))
            session = ArtistSession.register(channels[-1], artist_keys)
            clients[artist] = (session, masking_client(artist_keys, None, min_quorum=floor))
        packed: list[str] = []

        def pack_once(artist: str) -> tuple[np.ndarray, Layout]:
            packed.append(artist)
            return pack(_moments(1.0, WIRE))

        for artist, (session, client) in clients.items():
            plan = wait_for_phase(session, "advertise")
            assert sorted(plan.participants) == ["artist_a", "artist_b"]
            with caplog.at_level("WARNING"):
                masking_step(client, session, plan, functools.partial(pack_once, artist))(session)
        assert clients["artist_a"][1]._current is None and clients["artist_b"][1]._current is not None
        assert packed == ["artist_b"]  # the refusing artist never packed (nor trained) for the round
        assert set(running.servicer.coordinator._collect.items) == {"artist_b"}
        assert "can reveal a sum of only 2 inputs, below my floor 3 (client.min_quorum)" in caplog.text
    finally:
        running.stop(0)
        for channel in channels:
            channel.close()


@pytest.mark.parametrize(
    ("participants", "threshold", "floor", "joins"),
    [
        (3, 2 / 3, 3, False),  # t = 2: a survivor set of two can be decoded
        (3, 1.0, 3, True),  # t = 3: every participant's input is in any decodable sum
        (4, 2 / 3, 3, True),  # t = 3
        (4, 2 / 3, 4, False),
        (2, 1.0, 2, True),  # the default floor admits a two-artist federation
    ],
)
def test_the_floor_is_on_the_smallest_sum_a_session_can_reveal(keys, participants, threshold, floor, joins):
    """No share is revealed before t share holders signed one survivor set, and only members sign,
    so the smallest decodable sum holds t inputs: the floor is checked against t, not against the
    participant count (three participants at threshold 2/3 can still reveal a sum of two)."""
    roster = (ARTISTS + ("artist_d", "artist_e"))[:participants]
    artist_keys = load_artist_keys(keys, "artist_a")
    client = masking_client(artist_keys, None, min_threshold=0.5, min_quorum=floor)
    plan = pb.RoundPlan(
        round_id=1, secure_mode="secagg", participants=list(roster), phase="advertise", value_low=-1.0, value_high=1.0
    )
    plan.masking.CopyFrom(pb.MaskingParameters(session_id=(1 << TAG_BITS) | 7, threshold=threshold))
    if joins:
        client.check_can_advertise(plan)
    else:
        with pytest.raises(SecureAggregationError, match=f"below my floor {floor} \\(client.min_quorum\\)"):
            client.check_can_advertise(plan)
