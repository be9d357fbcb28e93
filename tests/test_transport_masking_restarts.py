"""A dishonest server against the gRPC artist's pairwise masking across artist restarts.

The gRPC artist (``fedstyle client``) keeps a masking session -- its ephemeral keys, self-mask seed,
the shares it holds -- in memory only; what survives a restart is ``client.state_dir``: the journal
of answered unmasking requests and of the session ids it advertised in.  A restart here is what the
operator's restart builds: a new :func:`masking_client` on the same ``state_dir``.

The artists are the real transport code (:func:`masking_step` / :class:`MaskingClient`, real key
files, real journals).  The server is either the real server over mutual TLS on loopback, or --
where the attack replays or rewrites masking messages, which the real servicer never does -- the
server's own session state machine (:class:`MaskingRound`) plus bytes the lying server crafts from
what it recorded, handed to the artist by :class:`RelayedSession`, a fake of the two calls of
:class:`ArtistSession` that :func:`masking_step` makes (named as such: the lie is in the bytes).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.federation.client import Broadcast, StyleClient
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.masking_rounds import MaskingRound
from fedstyle_secure.federation.masking_session import FETCH_NAMES, MaskingParams, session_id
from fedstyle_secure.federation.packing import Layout, pack
from fedstyle_secure.federation.strategy import CONTRIBUTION_RANGE
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.privacy.budget import BudgetLedger
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.privacy.report_store import latest_reports
from fedstyle_secure.secure.keys.keystore import ArtistKeys, load_artist_keys, load_server_keys
from fedstyle_secure.secure.masking import MaskingPhase
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
    parse_message,
)
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel
from fedstyle_secure.transport.artist.masking import MaskingClient, masking_client, masking_step
from fedstyle_secure.transport.artist.runner import ArtistRunner
from fedstyle_secure.transport.artist.state import MASKING_SESSION_FILE, ArtistStateStore, MaskingJournal
from fedstyle_secure.transport.config import ClientConfig, ServerConfig
from fedstyle_secure.transport.dp_config import dp_parameters
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.wire import pb
from tests.fakes import Clock, charges
from tests.servers import address, start, wait_for_phase

ARTISTS = ("artist_a", "artist_b", "artist_c")  # secagg, n = 3: threshold 2
TARGET = "artist_a"
ROUND = 1
VALUE_RANGE = (-4.0, 4.0)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keys") / "set", ARTISTS)


def _artist_keys(keys: Path) -> dict[str, ArtistKeys]:
    return {a: load_artist_keys(keys, a) for a in ARTISTS}


def _vector(value: float, width: int = 6) -> tuple[np.ndarray, Layout]:
    """A packed contribution (every entry ``value``) and its layout."""
    return pack({"update": np.full(width, value)})


def _plan(session: int, phase: str, round_id: int = ROUND, participants: tuple[str, ...] = ARTISTS) -> pb.RoundPlan:
    """The plan fields the masking client reads, as a (possibly lying) server sends them."""
    plan = pb.RoundPlan(
        round_id=round_id,
        secure_mode="secagg",
        participants=list(participants),
        phase=phase,
        value_low=VALUE_RANGE[0],
        value_high=VALUE_RANGE[1],
    )
    plan.masking.CopyFrom(pb.MaskingParameters(session_id=session, threshold=DEFAULT_THRESHOLD, degree=0))
    return plan


@dataclasses.dataclass
class RelayedSession:
    """Fake :class:`ArtistSession` (only ``fetch_masking`` / ``submit_masking``): downloads are what
    ``serve`` returns for the fetch name -- the server's real session, or a lying server's bytes --
    and the upload, if any, lands in ``uploaded``."""

    artist_id: str
    serve: Callable[[str], bytes]
    uploaded: bytes | None = None

    def fetch_masking(self, round_id: int, name: str) -> bytes:
        return self.serve(name)

    def submit_masking(self, round_id: int, phase: str, message: bytes, layout: Layout | None = None) -> None:
        self.uploaded = message

    def send_masking(self, request: pb.MaskingUpload) -> None:
        self.submit_masking(request.round_id, request.phase, bytes(request.message))


def _act(
    client: MaskingClient, plan: pb.RoundPlan, vector: np.ndarray, layout: Layout, serve: Callable[[str], bytes]
) -> bytes | None:
    """The artist's part of ``plan``'s phase through the real ``masking_step``; its upload, or None
    when it sat the session out."""
    session = RelayedSession(client.artist_id, serve)
    relayed = cast(ArtistSession, session)
    masking_step(client, relayed, plan, lambda: (vector, layout))(relayed)
    return session.uploaded


def _nothing(name: str) -> bytes:
    raise AssertionError(f"the advertise phase fetches nothing, asked for {name!r}")


def _serving(message: bytes) -> Callable[[str], bytes]:
    """A lying server's downloads: ``message``, whatever the artist fetches."""
    return lambda _: message


class HonestSession:
    """The server's real session state machine (:class:`MaskingRound`) driven as the servicer does."""

    def __init__(self, keys: Path, session: int, layout: Layout) -> None:
        self.session, self.layout = session, layout
        publics = load_server_keys(keys).identity_public_keys
        params = MaskingParams(session, DEFAULT_THRESHOLD, 0)
        self.round = MaskingRound("secagg", params, ARTISTS, VALUE_RANGE, publics, layout)

    def phase(
        self, clients: dict[str, MaskingClient], phase: str, vectors: dict[str, np.ndarray], close: bool = True
    ) -> dict[str, bytes]:
        """Every client in ``clients`` does its part of ``phase``; returns their uploads."""
        uploads = {}
        for artist, client in clients.items():
            serve = _nothing if phase == "advertise" else lambda name, a=artist: self.round.download(a, name)
            upload = _act(client, _plan(self.session, phase), vectors[artist], self.layout, serve)
            if upload is not None:
                self.round.receive(artist, phase, upload, self.layout if phase == "advertise" else None)
                uploads[artist] = upload
        if close and phase != "unmask":
            self.round.close(phase)
        return uploads


# --------------------------------------------------------------------------- attack 1: replay a session


def test_a_restarted_artist_refuses_a_session_id_it_already_advertised_in(keys, tmp_path, caplog):
    """Session S of round 1 runs to the masked inputs; the target restarts and the server replays S
    (same id, same round) asking for its retrained vector.  The restarted artist finds S in its
    journal and advertises nothing: one session id, one key set, across restarts as within one process."""
    artist_keys, vectors = _artist_keys(keys), {a: _vector(float(i + 1))[0] for i, a in enumerate(ARTISTS)}
    layout = _vector(0.0)[1]
    s = session_id(ROUND, 0x5EED)
    clients = {a: masking_client(artist_keys[a], tmp_path / a) for a in ARTISTS}
    honest = HonestSession(keys, s, layout)
    for phase in ("advertise", "share", "masked_input"):
        honest.phase(clients, phase, vectors)
    restarted = masking_client(artist_keys[TARGET], tmp_path / TARGET)  # new process, same state_dir
    with caplog.at_level("WARNING"):
        upload = _act(restarted, _plan(s, "advertise"), _vector(0.5)[0], layout, _nothing)
    assert upload is None and restarted._current is None  # no key advertised, no vector packed under S
    assert f"masking session {s:#x} was already used" in caplog.text
    assert not MaskingJournal(tmp_path / TARGET).answered(ROUND)  # it never answered S's unmasking request
    other = session_id(ROUND, 0xD1FF)  # a genuinely new attempt of the round is still joined
    assert _act(restarted, _plan(other, "advertise"), _vector(0.5)[0], layout, _nothing) is not None


def test_a_replayed_session_gets_fresh_masks_so_two_masked_inputs_never_share_a_mask(keys, tmp_path):
    """Artists without a state_dir remember nothing across a restart, so they do join a replayed session
    id.  The attack: S runs to the masked inputs; all three restart and the server replays S; had any
    mask been derived from (artist, session, round) rather than fresh OS randomness, the difference of
    the target's two masked inputs would be the difference of its two vectors.  It is not: every
    advertisement carries new X25519 keys, and the decoded sum of the replay is exact."""
    artist_keys = _artist_keys(keys)
    layout = _vector(0.0)[1]
    s = session_id(ROUND, 0x5EED)
    first = {a: _vector(float(i + 1))[0] for i, a in enumerate(ARTISTS)}
    second = {a: _vector(-float(i + 1) / 2)[0] for i, a in enumerate(ARTISTS)}  # retrained after the restart

    def run(vectors: dict[str, np.ndarray], clients: dict[str, MaskingClient]) -> tuple[HonestSession, dict]:
        honest = HonestSession(keys, s, layout)
        return honest, {p: honest.phase(clients, p, vectors) for p in ("advertise", "share", "masked_input")}

    _, before = run(first, {a: masking_client(artist_keys[a], None) for a in ARTISTS})  # no state_dir
    replay_clients = {a: masking_client(artist_keys[a], None) for a in ARTISTS}  # every artist restarted
    replay, after = run(second, replay_clients)  # the same session id
    words = [parse_message(r["masked_input"][TARGET]) for r in (before, after)]
    assert isinstance(words[0], MaskedInput) and isinstance(words[1], MaskedInput)
    assert replay.round._server is not None
    codec = replay.round._server.config.codec
    leaked = codec.encode(second[TARGET], owner="t") - codec.encode(first[TARGET], owner="t")
    assert not np.array_equal(words[1].words - words[0].words, leaked)  # no shared mask cancels
    adverts = [parse_message(r["advertise"][TARGET]) for r in (before, after)]
    assert isinstance(adverts[0], AdvertiseKeys) and isinstance(adverts[1], AdvertiseKeys)
    assert adverts[0].mask_public != adverts[1].mask_public and adverts[0].enc_public != adverts[1].enc_public
    replay.phase(replay_clients, "consistency", second)
    replay.phase(replay_clients, "unmask", second)
    outcome = replay.round.finish()  # the replay is an ordinary fresh session: its own sum, exactly
    assert outcome.contributors == ARTISTS
    words_sum = sum(codec.quantize(second[a]) for a in ARTISTS)
    assert isinstance(words_sum, np.ndarray)
    exact = codec.dequantize(words_sum)
    np.testing.assert_array_equal(outcome.total, exact)


def test_a_restarted_artist_shown_the_old_peers_of_a_replayed_session_masks_nothing(keys, tmp_path, caplog):
    """Without a state_dir the restarted target joins replayed session S with fresh keys.  The server
    then shows it the peers' advertisements of the first run of S (validly signed for S) and hands it
    the shares they sealed to its pre-restart key -- or none: it opens none, sees fewer than the
    threshold of share holders, and sends no masked input."""
    artist_keys, vectors = _artist_keys(keys), {a: _vector(float(i + 1))[0] for i, a in enumerate(ARTISTS)}
    layout = _vector(0.0)[1]
    s = session_id(ROUND, 0x5EED)
    clients = {a: masking_client(artist_keys[a], None) for a in ARTISTS}
    honest = HonestSession(keys, s, layout)
    adverts = honest.phase(clients, "advertise", vectors)
    honest.phase(clients, "share", vectors)
    old_delivery = parse_message(honest.round.download(TARGET, FETCH_NAMES["masked_input"]))
    assert isinstance(old_delivery, ShareDelivery) and len(old_delivery.sealed) == 2
    old_peers = tuple(parse_message(adverts[a]) for a in ARTISTS if a != TARGET)
    assert all(isinstance(a, AdvertiseKeys) for a in old_peers)
    for delivered in (old_delivery.sealed, ()):
        restarted = masking_client(artist_keys[TARGET], None)
        new_advert = parse_message(_act(restarted, _plan(s, "advertise"), _vector(0.5)[0], layout, _nothing) or b"")
        assert isinstance(new_advert, AdvertiseKeys)
        roster = KeyRoster(s, TARGET, (new_advert, *cast(tuple[AdvertiseKeys, ...], old_peers)))
        shares = _act(restarted, _plan(s, "share"), _vector(0.5)[0], layout, _serving(roster.to_bytes()))
        assert shares is not None  # the old peers' signatures are valid for S: the roster is accepted
        delivery = ShareDelivery(s, TARGET, tuple(delivered))
        with caplog.at_level("WARNING"):
            masked = _act(restarted, _plan(s, "masked_input"), _vector(0.5)[0], layout, _serving(delivery.to_bytes()))
        assert masked is None  # no masked input of the new vector left the artist
        assert restarted._current is not None and restarted._current.machine.phase is MaskingPhase.MASKED_INPUT
    assert "sitting this masking session out" in caplog.text


# --------------------------------------------------------------------------- attack 2: a second share after a restart


def test_after_answering_and_restarting_the_artist_reveals_no_second_share_of_the_round(keys, tmp_path, caplog):
    """Session S runs to the end: everyone survived, so the target revealed its shares of its peers'
    self-mask seeds.  It restarts, and the lying server now claims artist_b dropped and asks for
    artist_b's mask-key share -- in S itself, in S replayed, and in a new session of the round.  The
    restarted artist holds no share of S (they were never written to disk) and its journal keeps it
    out of every session of the round: the server never holds both secrets of one peer."""
    artist_keys, vectors = _artist_keys(keys), {a: _vector(float(i + 1))[0] for i, a in enumerate(ARTISTS)}
    layout = _vector(0.0)[1]
    s = session_id(ROUND, 0x5EED)
    clients = {a: masking_client(artist_keys[a], tmp_path / a) for a in ARTISTS}
    honest = HonestSession(keys, s, layout)
    for phase in ("advertise", "share", "masked_input", "consistency"):
        honest.phase(clients, phase, vectors)
    request = parse_message(honest.round.download(TARGET, FETCH_NAMES["unmask"]))
    assert isinstance(request, UnmaskRequest)
    answered = parse_message(honest.phase(clients, "unmask", vectors)[TARGET])
    assert isinstance(answered, UnmaskResponse)
    assert dict(answered.seed_shares).keys() == set(ARTISTS) and answered.key_shares == ()
    assert honest.round.finish().contributors == ARTISTS
    restarted = masking_client(artist_keys[TARGET], tmp_path / TARGET)  # new process, same state_dir
    lie = UnmaskRequest(s, TARGET, (TARGET, "artist_c"), ("artist_b",), request.signatures)
    with caplog.at_level("WARNING"):
        assert _act(restarted, _plan(s, "unmask"), vectors[TARGET], layout, lambda _: lie.to_bytes()) is None
        assert _act(restarted, _plan(s, "advertise"), vectors[TARGET], layout, _nothing) is None
        assert _act(restarted, _plan(session_id(ROUND, 0xD1FF), "advertise"), vectors[TARGET], layout, _nothing) is None
    assert f"I did not advertise keys in masking session {s:#x}" in caplog.text
    assert caplog.text.count("I already answered an unmasking request of this round") == 2
    assert restarted._current is None and restarted._vectors == {}  # no key set, no vector packed
    assert not (tmp_path / TARGET / MASKING_SESSION_FILE).exists()  # the gRPC artist's shares never touch disk


# --------------------------------------------------------------------------- attack 4: a restart mid-round, over gRPC

WIRE = STYLE_FEATURE_DIM  # a real server's set-up round sums feature moments of this width


def _moments(value: float) -> tuple[np.ndarray, Layout]:
    return pack(
        {
            "clients": np.array([1.0]),
            "feature_mean": np.full(WIRE, value),
            "feature_sq_mean": np.full(WIRE, value * value),
        }
    )


def test_artist_restarted_after_signing_answers_nothing_and_the_round_keeps_its_exact_sum(
    keys, tmp_path, monkeypatch, caplog
):
    """Real server over mutual TLS.  The target sends its masked input and signs the survivor set,
    then its process dies; the restarted process (same state_dir, new registration) is asked for the
    unmasking answer.  It answers nothing -- it holds none of the session's shares -- and journals
    nothing; the others' answers recover its self-mask seed (once; its mask key is revealed by no
    one), so the round's sum is exactly the three vectors: nothing secret lost, nothing revealed twice."""
    decoded: list[tuple[tuple[str, ...], np.ndarray, FixedPointCodec, dict]] = []
    finish = MaskingRound.finish

    def recording_finish(self: MaskingRound):
        outcome = finish(self)
        assert self._server is not None
        decoded.append((outcome.contributors, outcome.total, self._server.config.codec, dict(self._server._responses)))
        return outcome

    monkeypatch.setattr(MaskingRound, "finish", recording_finish)
    clock = Clock()
    schedule = Schedule(rounds=1, quorum=2, phase_seconds=60, masking_seconds=30, secure_mode="secagg", max_retries=1)
    running = start(keys, tmp_path, schedule, clock, session_timeout_seconds=1.0)
    artist_keys = _artist_keys(keys)
    vectors = {a: _moments(float(i + 1)) for i, a in enumerate(ARTISTS)}
    channels = {a: open_channel(address(running), artist_keys[a].tls_pem()) for a in ARTISTS}
    try:
        sessions = {a: ArtistSession.register(channels[a], artist_keys[a]) for a in ARTISTS}
        clients = {a: masking_client(artist_keys[a], tmp_path / a) for a in ARTISTS}
        for phase in ("advertise", "share", "masked_input", "consistency"):
            for artist in ARTISTS:
                plan = wait_for_phase(sessions[artist], phase)
                pack_once = partial(vectors.__getitem__, artist)  # the artist's packed contribution
                masking_step(clients[artist], sessions[artist], plan, pack_once)(sessions[artist])
        channels[TARGET].close()  # the target's process dies after signing
        clock.now += 2  # its old connection times out (the unmasking deadline is 30 s away)
        channels[TARGET] = open_channel(address(running), artist_keys[TARGET].tls_pem())
        sessions[TARGET] = ArtistSession.register(channels[TARGET], artist_keys[TARGET])
        clients[TARGET] = masking_client(artist_keys[TARGET], tmp_path / TARGET)
        with caplog.at_level("WARNING"):
            for artist in ARTISTS:
                plan = wait_for_phase(sessions[artist], "unmask")
                pack_once = partial(vectors.__getitem__, artist)  # the artist's packed contribution
                masking_step(clients[artist], sessions[artist], plan, pack_once)(sessions[artist])
        assert "sitting this masking session out" in caplog.text and "did not advertise keys" in caplog.text
        clock.now += 31  # the unmasking deadline passes without the target
        deadline = time.monotonic() + 20
        while not decoded and time.monotonic() < deadline:
            sessions["artist_b"].plan(0, "unmask", wait_seconds=0.5)  # the server ends the phase on a request
    finally:
        running.stop(0)
        for channel in channels.values():
            channel.close()
    assert len(decoded) == 1
    contributors, total, codec, responses = decoded[0]
    assert contributors == ARTISTS and TARGET not in responses  # the target's vector counted; it answered nothing
    words_sum = sum(codec.quantize(vectors[a][0]) for a in ARTISTS)
    assert isinstance(words_sum, np.ndarray)
    exact = codec.dequantize(words_sum)
    np.testing.assert_array_equal(total, exact)
    for seeds, key_shares in responses.values():
        assert TARGET in seeds and key_shares == {}  # its self-mask seed recovered, its mask key revealed by no one
    assert not MaskingJournal(tmp_path / TARGET).answered(0) and clients[TARGET]._current is None
    assert all(MaskingJournal(tmp_path / a).answered(0) for a in ARTISTS if a != TARGET)


# --------------------------------------------------------------------------- attack 3: roll the round back


def test_a_restarted_artist_refuses_a_round_before_the_latest_it_advertised_in_before_packing(keys, tmp_path, caplog):
    """The target advertised in round 2, then restarts; the server goes back to round 1, whose
    unmasking request the target never answered (so the answered-rounds journal does not stop it).
    It refuses before packing anything: an artist without DP would otherwise retrain the old round
    from its current model and mask it under a second key set."""
    artist_keys, (vector, layout) = _artist_keys(keys), _vector(1.0)
    client = masking_client(artist_keys[TARGET], tmp_path / TARGET)
    assert _act(client, _plan(session_id(2, 0x2), "advertise", round_id=2), vector, layout, _nothing) is not None
    restarted = masking_client(artist_keys[TARGET], tmp_path / TARGET)  # new process, same state_dir
    with caplog.at_level("WARNING"):
        assert _act(restarted, _plan(session_id(1, 0x1), "advertise", round_id=1), vector, layout, _nothing) is None
    assert "round 2 has begun; not joining a session of an earlier round" in caplog.text
    assert restarted._vectors == {} and restarted._current is None  # nothing packed, no key set


DP_ARTISTS = ("artist_00", "artist_01", "artist_02")  # the ``data`` fixture's artists
DP_TARGET = "artist_01"


@dataclasses.dataclass
class FakeDpServer:
    """Fake :class:`ArtistSession` for a DP artist driven by crafted plans (named as such): broadcasts
    the server's starting state (what a lying server may always send), records every submission and
    report, and fails the test on a withdrawal or a masking download."""

    artist_id: str
    roster: tuple[str, ...]
    submitted: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    reports: list[int] = dataclasses.field(default_factory=list)
    embedding_dim: int = 0

    def broadcast(self, round_id: int, max_bytes: int = 0) -> tuple[Broadcast, None]:
        n = len(self.roster)
        zeros = np.zeros((n, self.embedding_dim), dtype=np.float32)
        return Broadcast(
            round=round_id - 1, params=None, consensus=None, prototypes=zeros, known=np.zeros(n, bool)
        ), None

    def report(self, round_id: int, signed_json: bytes) -> None:
        self.reports.append(round_id)

    def publish(self, round_id: int, publication: object) -> None:
        self.submitted.append((round_id, "publish"))

    def submit_masking(self, round_id: int, phase: str, message: bytes, layout: Layout | None = None) -> None:
        self.submitted.append((round_id, phase))

    def send_masking(self, request: pb.MaskingUpload) -> None:
        self.submit_masking(request.round_id, request.phase, bytes(request.message))

    def fetch_masking(self, round_id: int, name: str) -> bytes:
        raise AssertionError(f"round {round_id}: unexpected masking download {name!r}")


def _dp_plan(round_id: int, phase: str, tag: int, embedding_dim: int) -> pb.RoundPlan:
    """A secagg training round's plan under DP (refreshes at rounds 0 and 1), as the server announces it."""
    plan = pb.RoundPlan(
        round_id=round_id,
        phase=phase,
        kind=pb.ROUND_KIND_TRAIN,
        algorithm=Schedule().algorithm,
        seed=Schedule().seed,
        embedding_dim=embedding_dim,
        total_rounds=3,
        participants=list(DP_ARTISTS),
        secure_mode="secagg",
        value_low=CONTRIBUTION_RANGE[0],
        value_high=CONTRIBUTION_RANGE[1],
        public_set=pb.PublicSetReference(name=public_set_name(default_public_set())),
        dp=dp_parameters(DpConfig(epsilon=8.0, min_training_artworks=1), (0, 1)),
        public_pretrain_steps=0,
    )
    plan.masking.CopyFrom(
        pb.MaskingParameters(session_id=session_id(round_id, tag), threshold=DEFAULT_THRESHOLD, degree=0)
    )
    return plan


def _dp_artist(tmp_path: Path, data: Path) -> tuple[ClientConfig, ArtistKeys, FakeDpServer, int]:
    """A DP artist's config (state in ``tmp_path/state``), keys, a fake server and the embedding width."""
    dp_keys = write_fresh_keys(tmp_path / "keys", DP_ARTISTS)
    config = ClientConfig(
        keys=dp_keys,
        data=artist_folders(data, tmp_path)[DP_TARGET],
        cache_dir=data.parent / "cache",
        state_dir=tmp_path / "state",
        min_training_artworks=1,
    )
    dim = ServerConfig(keys=dp_keys, state_db=tmp_path / "s.sqlite").embedding_dim
    return config, load_artist_keys(dp_keys, DP_TARGET), FakeDpServer(DP_TARGET, DP_ARTISTS, embedding_dim=dim), dim


def test_a_dp_artist_refuses_a_lowered_threshold_before_training_so_it_is_charged_nothing(tmp_path, data, caplog):
    """The server announces a masking threshold below the artist's floor.  The artist refuses to
    advertise -- and does so before packing its contribution: the round's DP-SGD is neither run nor
    charged for a session it will not join (before, it trained, was charged, then refused)."""
    config, artist_keys, server, dim = _dp_artist(tmp_path, data)
    plan = _dp_plan(1, "advertise", 0x1, dim)
    plan.masking.threshold = 0.51
    runner = ArtistRunner(config, artist_keys)
    with caplog.at_level("WARNING"):
        runner.act(cast(ArtistSession, server), plan)
    assert "masking threshold 0.51 is below my floor 0.6667" in caplog.text
    assert server.submitted == [] and runner.client is not None and runner.client.ledger is not None
    assert charges(runner.client.ledger.history) == []  # nothing charged (beyond the planning size's count)
    stored = ArtistStateStore(tmp_path / "state").load()
    if stored is not None:  # nothing stored as spent either
        assert stored.results == [] and stored.ledger is not None
        assert charges(BudgetLedger.from_dict(stored.ledger).history) == []


def test_a_restarted_dp_artist_gives_a_rolled_back_round_nothing_and_is_charged_nothing(
    tmp_path, data, caplog, monkeypatch
):
    """A DP artist publishes and trains in rounds 1 and 2 (real Opacus; each charged, stored, reported),
    then restarts.  The server rolls back to round 1 -- its publication and its masked contribution,
    under a fresh session id.  The restarted artist resends nothing and computes nothing: both were
    charged (the ledger says so) and round 1's results are no longer stored, so it sits both phases
    out; its ledger, stored results and reports are exactly those of before the restart."""
    config, artist_keys, server, dim = _dp_artist(tmp_path, data)
    state, fake = tmp_path / "state", cast(ArtistSession, server)
    first = ArtistRunner(config, artist_keys)
    for round_id in (1, 2):
        for phase in ("publish", "advertise"):
            first.act(fake, _dp_plan(round_id, phase, 0x10 + round_id, dim))
    assert server.submitted == [(1, "publish"), (1, "advertise"), (2, "publish"), (2, "advertise")]
    before = ArtistStateStore(state).load()
    assert before is not None and before.ledger is not None
    charged = [(type(m).__name__, m.round_id) for m in charges(BudgetLedger.from_dict(before.ledger).history)]
    assert sorted(charged) == [("DpSgdSteps", 0), ("DpSgdSteps", 1), ("GaussianRelease", 0), ("GaussianRelease", 1)]
    assert {r.round_id for r in before.results} == {2}  # only the latest round's results are kept

    computed: list[str] = []  # every training or release the restarted artist runs
    for name in ("fit", "publish"):
        real = getattr(StyleClient, name)

        def counted(self, *a, _n=name, _f=real, **k):
            computed.append(_n)
            return _f(self, *a, **k)

        monkeypatch.setattr(StyleClient, name, counted)
    restarted = ArtistRunner(config, artist_keys)  # new process, same state_dir
    server.submitted.clear()
    reports = list(server.reports)
    assert reports == [0, 1]  # each charged round reported once
    with caplog.at_level("WARNING"):
        for phase in ("publish", "advertise"):
            restarted.act(fake, _dp_plan(1, phase, 0x99, dim))
    assert restarted.client is not None and restarted.client.ledger is not None
    assert server.submitted == []  # nothing sent for the rolled-back round
    after = ArtistStateStore(state).load()
    assert after is not None and after.ledger == before.ledger  # no new charge
    assert [(r.round_id, r.phase) for r in after.results] == [(r.round_id, r.phase) for r in before.results]
    assert caplog.text.count("already charged but its result is lost; sitting it out") == 2
    assert computed == []  # no training, no release
    assert server.reports == reports  # no new report either


def test_a_dp_artist_charges_rounds_in_order_and_nothing_past_the_final_publication(tmp_path, data, caplog):
    """A dishonest server asks for the final publication first (charged, reported as the final round),
    then for the announced round-0 refresh: charged at an earlier round whose report can no longer be
    written, the release would be in no signed report, and the audit would certify less than was
    spent.  Then it asks for final publications at later rounds (fresh draws of the final prototype,
    within a budget the artist set above the federation's) and a final publication at a training
    round.  The artist sits every one out: nothing charged, released or reported beyond the final
    publication (fails without ``DpPlan.charge_refusal`` in ``ArtistPrivacy.admit``)."""
    config, artist_keys, server, dim = _dp_artist(tmp_path, data)
    config = dataclasses.replace(config, budget_epsilon=64.0)  # the artist's own budget admits more releases
    runner = ArtistRunner(config, artist_keys)
    fake = cast(ArtistSession, server)

    def plan(round_id: int, kind: pb.RoundKind) -> pb.RoundPlan:
        crafted = _dp_plan(round_id, "publish", 0x30 + round_id, dim)
        crafted.kind = kind
        return crafted

    final_round = _dp_plan(1, "publish", 0, dim).total_rounds  # the plan's final publication: round T
    with caplog.at_level("ERROR"):
        runner.act(fake, plan(2, pb.ROUND_KIND_FINAL))  # a final publication at a training round
    assert server.submitted == [] and server.reports == []
    runner.act(fake, plan(final_round + 1, pb.ROUND_KIND_FINAL))
    assert server.submitted == [(final_round + 1, "publish")] and server.reports == [
        0,
        final_round,
    ]  # round 0: the planning count
    with caplog.at_level("ERROR"):
        runner.act(fake, plan(1, pb.ROUND_KIND_TRAIN))  # the announced round-0 refresh, after the final one
        runner.act(fake, plan(final_round + 2, pb.ROUND_KIND_FINAL))  # a second final publication
    assert server.submitted == [(final_round + 1, "publish")] and server.reports == [0, final_round]
    stored = ArtistStateStore(tmp_path / "state").load()
    assert stored is not None and stored.ledger is not None
    history = BudgetLedger.from_dict(stored.ledger).history
    assert [(type(m).__name__, m.round_id) for m in charges(history)] == [("GaussianRelease", final_round)]
    assert f"the final publication at round 1, but the plan's final publication is at round {final_round}" in (
        caplog.text
    )
    assert "round 0's report is signed already: a charge now would be in no report" in caplog.text
    assert f"round {final_round + 1} is past the plan's final round {final_round}" in caplog.text


def test_a_release_asked_after_its_rounds_report_is_signed_is_sat_out(tmp_path, data, caplog):
    """A DP artist signs a round's report as soon as its DP-SGD is charged.  A server asking for the
    round's contribution first and only then for the same round's announced prototype refresh had
    the release charged at a round whose (append-only) report was signed already: retiring next,
    the artist's reports certified epsilon 2.81 where its ledger spent 2.99 (red-team review,
    2026-11-30; continuing, the audit flagged the honest artist instead).  The artist now sits out
    any charge at a round whose report is signed: every charge is in a report."""
    config, artist_keys, server, dim = _dp_artist(tmp_path, data)
    runner = ArtistRunner(config, artist_keys)
    fake = cast(ArtistSession, server)
    runner.act(fake, _dp_plan(1, "advertise", 0x21, dim))  # the round's DP-SGD first: charged and reported
    with caplog.at_level("ERROR"):
        runner.act(fake, _dp_plan(1, "publish", 0x21, dim))  # then the same round's release
    assert server.submitted == [(1, "advertise")]  # nothing released
    assert "round 0's report is signed already: a charge now would be in no report" in caplog.text
    stored = ArtistStateStore(tmp_path / "state").load()
    assert stored is not None and stored.ledger is not None
    history = BudgetLedger.from_dict(stored.ledger).history
    report = latest_reports(tmp_path / "state" / "reports")[DP_TARGET]
    assert [(type(m).__name__, m.round_id) for m in charges(history)] == [("DpSgdSteps", 0)]
    assert len(report["mechanisms"]) == len(history)  # the signed report holds every charge
