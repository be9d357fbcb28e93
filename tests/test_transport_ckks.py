"""CKKS over real gRPC + mutual TLS on loopback, real TenSEAL, real key files: a server that deviates
from the protocol gets no plaintext, and a crafted ciphertext is refused without touching the sum.

The artists are the real :class:`~fedstyle_secure.transport.artist.runner.ArtistRunner` (encryption,
signatures, every check of the decrypt phase); only their model is a stand-in
(:class:`FeatureMomentsOnly`: the set-up round's feature moments are fixed numbers).  The server
is the real one; an attack replaces one of its coordinator's methods, since the server is the
attacker here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import grpc
import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.client import StyleClient
from fedstyle_secure.federation.coordinator import Coordinator, Phase, Schedule
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.federation.round_layout import FederationShape, round_layout
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.secure.ckks import decryption as ckks_decryption
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    SignedContribution,
    decryption_committee,
    layout_bytes,
    payload_digest,
    sign_commit,
    sign_contribution,
)
from fedstyle_secure.secure.ckks.primitives import CkksAggregator, CkksContext, CkksParams, EncryptedVector, encrypt
from fedstyle_secure.secure.keys.keystore import ArtistKeys, load_artist_keys
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel
from fedstyle_secure.transport.artist.ckks import CkksClient, ckks_client, contribute_step
from fedstyle_secure.transport.artist.runner import ArtistRunner
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.server import servicer as server_module
from fedstyle_secure.transport.wire import pb
from tests.ckks_key_recovery import decrypt_first_chunk, recover_key
from tests.fakes import Clock, fake_portfolio
from tests.servers import ARTISTS, address, refused, start

VALUES = {"artist_a": 1.0, "artist_b": 2.0, "artist_c": 4.0}
FIVE = ("artist_a", "artist_b", "artist_c", "artist_d", "artist_e")  # the roster of ``five_keys``


def _value(artist: str) -> float:
    """The fixed feature value of ``artist`` (powers of two: every sum of distinct artists differs)."""
    return VALUES.get(artist, 2.0 ** FIVE.index(artist))


def _moments(value: float, width: int = STYLE_FEATURE_DIM) -> dict[str, np.ndarray]:
    return {
        "clients": np.array([1.0]),
        "feature_mean": np.full(width, value),
        "feature_sq_mean": np.full(width, value * value),
    }


class FeatureMomentsOnly:
    """Stands in for the artist's StyleClient (its model) in the set-up round: fixed feature moments,
    packed in the layout of the server's plan (``shape``)."""

    spec = algorithm_spec("fedstyle")
    retired_reason: str | None = None

    def __init__(self, value: float, shape: FederationShape) -> None:
        self.value, self._shape = value, shape

    def shape(self) -> FederationShape:
        return self._shape

    def feature_moments(self) -> dict[str, np.ndarray]:
        return _moments(self.value, self._shape.feature_dim)


@dataclass
class Party:
    keys: ArtistKeys
    channel: grpc.Channel
    session: ArtistSession
    runner: ArtistRunner


class Federation:
    """A real server and three real artist runners, stepped phase by phase by the test."""

    def __init__(
        self,
        keys: Path,
        tmp_path: Path,
        quorum: int = 3,
        floors: dict[str, int] | None = None,
        artists: tuple[str, ...] = ARTISTS,
        committee_size: int = COMMITTEE_SIZE,
    ) -> None:
        self.clock = Clock()
        self.patches = pytest.MonkeyPatch()  # the attacks replace coordinator methods; undone by close()
        schedule = Schedule(
            rounds=1,
            quorum=quorum,
            committee_size=committee_size,
            phase_seconds=60,
            max_retries=2,
            secure_mode="ckks",
        )
        self.running = start(keys, tmp_path, schedule, self.clock)
        self.coordinator = self.running.servicer.coordinator
        self.artists = artists
        self.parties: dict[str, Party] = {}
        for artist in artists:
            artist_keys = load_artist_keys(keys, artist)
            channel = open_channel(address(self.running), artist_keys.tls_pem())
            runner = ArtistRunner(
                ClientConfig(keys=keys, data=fake_portfolio(tmp_path), artist=artist),
                artist_keys,
                client=cast(StyleClient, FeatureMomentsOnly(_value(artist), self.coordinator.shape)),  # test fake
            )
            runner.ckks = CkksClient(artist_keys, min_quorum=(floors or {}).get(artist, 2), clock=self.clock)
            self.parties[artist] = Party(artist_keys, channel, ArtistSession.register(channel, artist_keys), runner)

    def act(self, artists) -> None:
        """Each artist acts on its current plan, concurrently (committee members wait for each other)."""
        errors: list[BaseException] = []

        def one(party: Party) -> None:
            try:
                party.runner.act(party.session, party.session.plan())
            except BaseException as exc:  # re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(self.parties[a],)) for a in artists]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        if errors:
            raise errors[0]

    def contribute(self, artists: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Every artist uploads its signed ciphertext; the decryption committee the server announces."""
        self.act(self.artists if artists is None else artists)
        plan = self.coordinator.plan()
        assert plan.phase is Phase.DECRYPT, self.coordinator.last_error
        return plan.decryptors

    def turn_malicious(self) -> None:
        """The server drops its own checks of the decrypt phase: it keeps any commitment, shows every
        member every commitment it holds, and takes (records) any plaintext it is sent."""
        self.commitments: dict[str, tuple[bytes, bytes]] = {}
        self.stolen: dict[str, bytes] = {}
        c = self.coordinator

        def commit(artist: str, round_id: int, attempt: int, digest: bytes, signature: bytes) -> None:
            self.commitments[artist] = (digest, signature)

        def take(artist: str, round_id: int, payload: bytes, nonce: bytes, now: float) -> None:
            self.stolen[artist] = payload

        self.patches.setattr(c, "commit_decryption", commit)
        self.patches.setattr(c, "decryption_commits", lambda artist, round_id: (c.attempt, dict(self.commitments)))
        self.patches.setattr(c, "submit_decrypted", take)

    def ckks(self, artist: str) -> CkksClient:
        """The artist runner's CKKS client (every runner here has one)."""
        ckks = self.parties[artist].runner.ckks
        assert ckks is not None
        return ckks

    def refusal(self, artist: str) -> str:
        return self.ckks(artist).last_refusal or ""

    def close(self) -> None:
        for party in self.parties.values():
            party.channel.close()
        self.running.stop(0)
        self.patches.undo()


@pytest.fixture
def federation(keys, tmp_path):
    running = Federation(keys, tmp_path)
    yield running
    running.close()


def _no_plaintext_reached_the_server(f: Federation) -> None:
    assert not f.stolen and not f.coordinator._collect.items and f.coordinator.standardisation is None


def _serve_listing(
    f: Federation, listing: Callable[[str, list[SignedContribution], dict[str, int]], list[SignedContribution]]
) -> None:
    """The attacking server (see :meth:`Federation.turn_malicious`) serves the real listing rewritten by ``listing``."""
    f.turn_malicious()
    real = f.coordinator.contribution_set

    def lying(artist: str, round_id: int):
        attempt, contributions, sizes = real(artist, round_id)
        return attempt, listing(artist, contributions, sizes), sizes

    f.patches.setattr(f.coordinator, "contribution_set", lying)


def test_honest_round_committee_decrypts_the_verified_sum(federation):
    f = federation
    committee = f.contribute()
    at = Attempt(0, 0, f.coordinator.ckks.fingerprint, COMMITTEE_SIZE)
    assert committee == decryption_committee(at, ARTISTS) and len(committee) == 2
    f.act(ARTISTS)  # the non-member does nothing; the members check, commit, sum, decrypt
    mean, std = f.coordinator.standardisation
    np.testing.assert_allclose(mean, 7 / 3, rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt((1 + 4 + 16) / 3 - (7 / 3) ** 2), rtol=1e-5)
    assert f.coordinator.plan().round_id == 1 and all(f.refusal(a) == "" for a in ARTISTS)


def test_server_refuses_misplaced_committee_calls_and_the_round_still_completes(federation):
    """An honest server's own checks of the decrypt phase, against artists that misbehave."""
    f = federation
    x, y = f.contribute()
    outsider = next(a for a in ARTISTS if a not in (x, y))
    member = f.parties[x]
    at = Attempt(0, 0, member.keys.ckks.fingerprint, COMMITTEE_SIZE)
    digest = f.coordinator._ckks_round.digest

    refused(
        lambda: f.parties[outsider].session.contribution_set(0),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not on round 0's decryption committee",
    )
    refused(
        lambda: f.parties[outsider].session.contribution(0, x),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not on round 0's decryption committee",
    )
    refused(
        lambda: member.session.upload(0, pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE, b"\0" * 8 * 9),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not every committee member has committed",
    )
    wrong = b"\1" * 32
    refused(
        lambda: member.session.commit_decryption(0, 0, wrong, sign_commit(member.keys.identity_key, at, wrong)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not this attempt's set",
    )
    refused(
        lambda: member.session.commit_decryption(0, 0, digest, b"\0" * 64),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not its signature on this set",
    )
    refused(
        lambda: member.session.commit_decryption(0, 1, digest, sign_commit(member.keys.identity_key, at, digest)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "at attempt 0, not 1",
    )
    assert f.coordinator._ckks_round.commitments == {} and not f.coordinator._collect.items  # nothing kept
    f.act((x, y))
    np.testing.assert_allclose(f.coordinator.standardisation[0], 7 / 3, rtol=1e-6)


@pytest.mark.parametrize("announced_quorum, enforced", [(3, 3), (1, 2)])
def test_server_serving_one_artists_ciphertext_as_the_set_gets_no_plaintext(federation, announced_quorum, enforced):
    """The reproduced oracle: the server hands a committee member another artist's ciphertext alone,
    also after announcing quorum 1 (the artist keeps its own floor, client.min_quorum = 2)."""
    f = federation
    committee = f.contribute()
    other = next(a for a in ARTISTS if a not in committee)
    f.coordinator.schedule = replace(f.coordinator.schedule, quorum=announced_quorum)
    _serve_listing(f, lambda artist, contributions, sizes: [c for c in contributions if c.artist == other])
    f.act(committee)
    _no_plaintext_reached_the_server(f)
    assert all(f"1 artists, fewer than the quorum {enforced}" in f.refusal(a) for a in committee)


def test_a_contributor_whose_floor_exceeds_the_committee_size_withdraws_and_the_round_goes_on(keys, tmp_path):
    """An artist whose own floor (client.min_quorum = 3) is above the announced committee size 2: under
    ckks the committee size, not the set size, bounds every combination of a round's decrypted sums,
    so it signs no contribution.  The committee size is a run parameter, so it withdraws from the run
    (signed, naming the setting to change) and the round goes on at once with the two others
    (fails without the check: its ciphertext is in the set; and without the withdrawal -- a user
    walkthrough, sixteenth review -- every phase waited for it until its deadline)."""
    strict = ARTISTS[0]
    f = Federation(keys, tmp_path, quorum=2, floors={strict: 3})
    try:
        f.act(ARTISTS)
        assert f.coordinator.plan().phase is Phase.DECRYPT and f.coordinator._ckks_round is not None  # no waiting
        assert {c.artist for c in f.coordinator._ckks_round.contributions} == set(ARTISTS) - {strict}
        reason = f.coordinator.state.retired[strict]
        assert "committee size 2 is below my floor 3" in reason and "committee_size must be at least 3" in reason
        client = f.parties[strict].runner.client
        assert client is not None and client.retired_reason == reason  # exit status 3 (EXIT_RETIRED)
    finally:
        f.close()


class _GreedyCkksClient(CkksClient):
    """Test fake of a malicious artist: signs an impossible floor without checking the committee size."""

    def declines(self, plan: pb.RoundPlan) -> str | None:
        return None

    def _attempt(self, plan: pb.RoundPlan) -> Attempt:
        return Attempt(plan.round_id, plan.attempt, self.keys.ckks.fingerprint, plan.committee_size)


def test_an_impossible_floor_costs_only_its_own_contribution(keys, tmp_path):
    """A malicious artist signs an impossible floor (2**32 - 1) into its contribution to veto every
    set holding it.  The honest server leaves that contribution out when it fixes the set (the
    largest set whose size meets every member's floor), and the round completes on the others'
    (fails if the server lists it: the committee refuses every attempt)."""
    greedy = "artist_c"
    f = Federation(keys, tmp_path, quorum=2)
    greedy_keys = f.parties[greedy].keys
    f.parties[greedy].runner.ckks = _GreedyCkksClient(greedy_keys, min_quorum=2**32 - 1, clock=f.clock)
    try:
        committee = f.contribute()
        assert f.coordinator._ckks_round is not None and f.coordinator._ckks_round.left_out == [greedy]
        assert greedy not in committee
        f.act(committee)
        assert f.coordinator.standardisation is not None
        np.testing.assert_allclose(f.coordinator.standardisation[0], (1.0 + 2.0) / 2, rtol=1e-6)  # a and b
    finally:
        f.close()


def test_server_serving_fewer_than_quorum_or_leaving_the_decryptor_out_gets_no_plaintext(federation):
    f = federation
    first, second = f.contribute()
    other = next(a for a in ARTISTS if a not in (first, second))
    listings = {first: [first, second], second: [first, other]}  # 2 < quorum 3; a set without `second`
    _serve_listing(f, lambda artist, contributions, sizes: [c for c in contributions if c.artist in listings[artist]])
    f.act((first, second))
    _no_plaintext_reached_the_server(f)
    assert "fewer than the quorum 3" in f.refusal(first) and "fewer than the quorum 3" in f.refusal(second)


def test_server_substituting_a_ciphertext_or_a_signature_gets_no_plaintext(federation):
    f = federation
    committee = f.contribute()
    victim = next(a for a in ARTISTS if a not in committee)
    forger = Ed25519PrivateKey.generate()  # a key the server holds: it signs as "the victim"
    real_payload = f.coordinator.contribution_payload

    def substituted(
        artist: str, round_id: int, contributor: str
    ) -> bytes:  # the victim's slot serves a member's ciphertext
        return real_payload(artist, round_id, committee[1] if contributor == victim else contributor)

    def resigned(artist, contributions, sizes):
        return [
            SignedContribution(c.artist, c.digest, forger.sign(b"anything"), c.min_quorum)
            if c.artist == victim and artist == committee[1]
            else c
            for c in contributions
        ]

    f.coordinator.contribution_payload = substituted
    _serve_listing(f, resigned)
    f.act(committee)
    _no_plaintext_reached_the_server(f)
    assert "is not the one it signed" in f.refusal(committee[0])
    assert f"not signed by '{victim}'" in f.refusal(committee[1])


def test_contribution_replayed_from_an_earlier_attempt_gets_no_plaintext(federation):
    """Attempt 0 aborts at its deadline; in attempt 1 the server lists a contribution signed for attempt 0."""
    f = federation
    first_committee = f.contribute()
    captured = {c.artist: c for c in f.coordinator.contribution_set(first_committee[0], 0)[1]}
    f.clock.now += 61
    f.running.servicer.tick()
    assert f.coordinator.attempt == 1 and f.coordinator.plan().phase is Phase.CONTRIBUTE
    committee = f.contribute()
    victim = next(a for a in ARTISTS if a not in committee)
    _serve_listing(
        f, lambda artist, contributions, sizes: [captured[victim] if c.artist == victim else c for c in contributions]
    )
    # the ciphertext is the same in both attempts (one encryption per round); only the signature is old
    assert captured[victim].digest == next(
        c.digest for c in f.coordinator.contribution_set(committee[0], 0)[1] if c.artist == victim
    )
    f.act(committee)
    _no_plaintext_reached_the_server(f)
    assert all(f"not signed by '{victim}'" in f.refusal(a) and "attempt 1" in f.refusal(a) for a in committee)


def test_server_showing_the_two_members_different_sets_gets_no_plaintext(keys, tmp_path):
    """The differencing attack: member X sums {X, Y, Z}, member Y sums {X, Y}; the two plaintexts
    would give Z's vector.  Both sets pass quorum 2 and have the same committee, but the members
    never see each other's commitment to their own set, so neither decrypts."""
    f = Federation(keys, tmp_path, quorum=2)
    try:
        x, y = f.contribute()
        _serve_listing(
            f,
            lambda artist, contributions, sizes: (
                contributions if artist == x else [c for c in contributions if c.artist in (x, y)]
            ),
        )
        threading.Timer(3.0, lambda: setattr(f.clock, "now", f.clock.now + 61)).start()  # the deadline passes
        f.act((x, y))
        assert f.commitments[x][0] != f.commitments[y][0]  # each committed, to its own set, and saw the other's
        _no_plaintext_reached_the_server(f)
        assert all("committed to this set by the deadline" in f.refusal(a) for a in (x, y))
    finally:
        f.close()


@pytest.fixture(scope="module")
def five_keys(tmp_path_factory) -> Path:
    """Fresh key files for the five artists of :data:`FIVE` (nested sets need more than three)."""
    return write_fresh_keys(tmp_path_factory.mktemp("keys5") / "set", FIVE)


def test_server_decrypting_two_nested_sets_by_disjoint_committees_learns_no_sum_below_the_floor(
    five_keys, tmp_path, monkeypatch
):
    """The nested-set difference: five artists, every floor 3.  The server lists the whole set S1 to
    its committee and S2 = S1 minus that committee to S2's own (disjoint) committee, and would read
    the sum of S1's committee from the difference of the two plaintexts.  Under the old fixed
    committee of two, S2 held three artists (meeting every floor) and both sets were decrypted: a
    sum of two artists, below their floor of 3.  Now the committee has the announced size 3 (which
    every artist checks against its floor), so S2 holds two artists, fewer than its committee, and
    nobody decrypts it: the server gets S1's sum alone."""
    f = Federation(five_keys, tmp_path, quorum=3, floors=dict.fromkeys(FIVE, 3), artists=FIVE, committee_size=3)
    try:
        committee = f.contribute()
        assert len(committee) == 3
        rest = tuple(a for a in FIVE if a not in committee)
        f.turn_malicious()
        real_listing, real_plan = f.coordinator.contribution_set, f.coordinator.plan
        f.patches.setattr(
            f.coordinator, "_decrypting", lambda artist, round_id: f.coordinator._ckks_round
        )  # serves all

        def nested(artist: str, round_id: int):
            attempt, contributions, sizes = real_listing(committee[0], round_id)  # the whole set S1
            return attempt, [c for c in contributions if artist in committee or c.artist in rest], sizes

        f.patches.setattr(f.coordinator, "contribution_set", nested)
        f.patches.setattr(f.coordinator, "plan", lambda: replace(real_plan(), decryptors=FIVE))  # all are asked
        monkeypatch.setattr(Coordinator, "decryption_committed", property(lambda c: len(f.commitments) >= 3))
        f.act(FIVE)
        assert set(f.stolen) == set(committee)  # S1's sum, the protocol's output, and nothing else
        sums = {np.frombuffer(payload, dtype=np.float64)[0].round(3) for payload in f.stolen.values()}
        assert len(sums) == 1
        assert all("the contribution set has 2 artists, fewer than the" in f.refusal(a) for a in rest)
    finally:
        f.close()


def _plan_with(party: Party, **fields) -> pb.RoundPlan:
    """The server's current plan for ``party``, with ``fields`` rewritten (a dishonest server's plan)."""
    plan = party.session.plan()
    for name, value in fields.items():
        setattr(plan, name, value)
    return plan


@pytest.mark.parametrize("size", [0, 1, 4, 65, 2**32 - 1])
def test_a_committee_size_no_committee_of_the_roster_can_have_gets_no_signature(federation, size):
    """K below 2 (a one-member committee isolates an artist), above the roster of 3 or above the limit
    64: the artist signs nothing, pins nothing and withdraws naming the committee size (red-team
    review, sixteenth)."""
    f = federation
    party = f.parties["artist_a"]
    party.runner.act(party.session, _plan_with(party, committee_size=size))
    assert f.coordinator._ckks_round is None or not f.coordinator._ckks_round.contributions
    assert "committee size" in f.coordinator.state.retired["artist_a"]  # it withdrew, saying why
    assert f.ckks("artist_a").guard.to_dict()["committee_size"] is None


def test_a_decrypt_plan_under_another_committee_size_is_refused_before_any_signature_is_checked(federation):
    """The contributions were signed under K = 2; the server's decrypt plan announces K = 3.  Each
    member refuses by its pinned size, naming it (before the fix it failed later, as a forged
    signature, which misled the operator)."""
    f = federation
    committee = f.contribute()
    f.turn_malicious()
    for member in committee:
        party = f.parties[member]
        party.runner.act(party.session, _plan_with(party, committee_size=3))
        assert "I acted under decryption committee size 2 in this round" in f.refusal(member)
    assert not f.stolen


def test_contributions_signed_under_two_committee_sizes_are_never_summed_together(keys, tmp_path, monkeypatch):
    """A dishonest server announces K = 3 to artist_c and K = 2 to the others, and keeps all three
    contributions (it skips its own signature check): the K = 2 committee refuses the set, since
    artist_c's signature covers K = 3 (sets under two sizes could be differenced below either)."""
    f = Federation(keys, tmp_path, quorum=3)
    try:
        f.turn_malicious()
        odd = f.parties["artist_c"]
        monkeypatch.setattr(ckks_decryption, "verify_contribution", lambda *args, **kwargs: None)  # server side
        odd.runner.act(odd.session, _plan_with(odd, committee_size=3))
        f.act(("artist_a", "artist_b"))
        monkeypatch.undo()
        plan = f.coordinator.plan()
        assert plan.phase is Phase.DECRYPT
        f.act(plan.decryptors)
        assert not f.stolen
        assert all("not signed by 'artist_c'" in f.refusal(m) for m in plan.decryptors if m != "artist_c")
    finally:
        f.close()


def test_a_server_restarted_with_another_committee_size_is_refused_naming_it(keys, tmp_path):
    """An operator raises committee_size mid-run (an artist asked for it) and restarts the server on
    the run's state_db: the artists that signed in the round pinned the old size and would refuse
    every attempt, so the restart is refused, naming committee_size, instead of a run that fails on
    a quorum message (red-team review, sixteenth)."""
    f = Federation(keys, tmp_path, quorum=2, floors={"artist_a": 3})
    try:
        f.act(ARTISTS)  # b and c sign under K = 2; a withdraws, naming the setting
        assert "committee_size must be at least 3" in f.coordinator.state.retired["artist_a"]
        f.running.stop(0)
        schedule = replace(f.coordinator.schedule, committee_size=3)
        with pytest.raises(ConfigError, match="committee_size 2 -> 3"):
            start(keys, tmp_path, schedule, f.clock)
    finally:
        f.close()


@pytest.mark.parametrize("quorum, size, warned", [(2, 3, True), (3, 2, False)])
def test_the_server_says_when_a_failed_decrypt_phase_cannot_be_retried(caplog, quorum, size, warned):
    """Five artists: a retry runs without the K committee members, and every set needs max(quorum, K)
    artists, so quorum 2 with K = 3 (3 > 5 - 3) cannot be retried; quorum 3 with K = 2 can."""
    caplog.set_level(logging.WARNING, logger=server_module.__name__)
    server_module._warn_if_ckks_retries_cannot_complete(
        Schedule(secure_mode="ckks", quorum=quorum, committee_size=size, max_retries=2), len(FIVE)
    )
    assert ("cannot be retried" in caplog.text) is warned


def test_a_plan_switching_the_run_to_no_secure_mode_is_refused_by_the_artist(federation):
    """After the artists sent their encrypted contributions, the server hands one of them a plan of
    the same round with ``secure_mode = "none"``, asking for the contribution in the clear.  The
    artist's runner pinned ``ckks`` at the run's first plan (in memory: no state_dir here) and refuses;
    nothing reaches the server (fails without the pin: the artist uploads its vector)."""
    f = federation
    f.contribute()
    party = f.parties["artist_a"]
    crafted = party.session.plan()
    crafted.phase, crafted.secure_mode = "contribute", "none"
    crafted.ClearField("decryptors")

    with pytest.raises(ConfigError, match="secure_mode 'none', but this run began with 'ckks'"):
        party.runner.act(party.session, crafted)
    assert f.coordinator.plan().phase is Phase.DECRYPT and not f.coordinator._collect.items


def test_server_answering_every_commit_poll_at_once_gets_no_busy_wait_and_no_plaintext(keys, tmp_path, monkeypatch):
    """The server says the committee has committed (its long poll returns at once) but shows each
    member only its own commitment -- plus, on every poll, a fresh "commitment" credited to the artist
    outside the committee, so that no two answers look alike -- with a deadline of its choosing.  A
    member must neither decrypt nor spin: it polls at most about once a second, whatever a poll
    brings (here a fake sleep advances the fake clock), until the deadline, and then refuses.
    Without the pause it polls as fast as the server answers (stopped here after 500 polls)."""
    f = Federation(keys, tmp_path)
    try:
        x, y = f.contribute()
        f.turn_malicious()
        monkeypatch.setattr(Coordinator, "decryption_committed", property(lambda c: True))
        polls = {x: 0, y: 0}

        outsider = next(a for a in ARTISTS if a not in (x, y))

        def only_own(artist: str, round_id: int):
            polls[artist] += 1
            if polls[artist] > 500:  # the busy loop: end it at the deadline
                f.clock.now = f.coordinator.plan().phase_deadline + 1
            own = {artist: f.commitments[artist]} if artist in f.commitments else {}
            junk = {outsider: (f.commitments[artist][0], os.urandom(64))} if own else {}  # new on every poll
            return f.coordinator.attempt, {**own, **junk}

        monkeypatch.setattr(f.coordinator, "decryption_commits", only_own)

        def fake_sleep(seconds: float) -> None:
            f.clock.now += seconds

        for member in (x, y):
            f.ckks(member).sleep = fake_sleep
        f.act((x, y))

        _no_plaintext_reached_the_server(f)
        assert all("by the deadline" in f.refusal(a) for a in (x, y))
        assert all(polls[a] <= 2 * 60 + 2 for a in (x, y)), polls  # the phase lasts 60 s: about a poll a second
    finally:
        f.close()


def test_server_faking_an_abort_after_a_decryption_gets_no_second_sum(keys, tmp_path, monkeypatch):
    """Attempt 0: the committee decrypts the sum of all three; the server keeps the plaintexts and
    fakes an abort.  Attempt 1 would be the same round without one artist (quorum 2), giving that
    artist's vector by difference -- but the two members who committed in attempt 0 contribute to
    no other attempt of the round, so no set of two can be formed again."""
    f = Federation(keys, tmp_path, quorum=2)
    try:
        x, y = f.contribute()
        f.turn_malicious()
        monkeypatch.setattr(Coordinator, "decryption_committed", property(lambda c: len(f.commitments) == 2))
        f.act((x, y))
        assert set(f.stolen) == {x, y}  # attempt 0's sum of all three (the protocol's output)
        f.clock.now += 61
        f.running.servicer.tick()
        assert f.coordinator.attempt == 1 and f.coordinator.plan().phase is Phase.CONTRIBUTE
        f.act(ARTISTS)
        assert f.coordinator.plan().phase is Phase.CONTRIBUTE  # still waiting: one signed contribution, quorum 2
        assert set(f.coordinator._collect.items) == set(ARTISTS) - {x, y}
        assert all("not contributing to another attempt" in f.refusal(a) for a in (x, y))
    finally:
        f.close()


def test_committee_restarted_after_a_decryption_still_joins_no_retry(keys, tmp_path, monkeypatch):
    """As above, but the two members' processes restart after attempt 0's decryption (same state_dir):
    their guard comes back from it, so they still sit attempt 1 out and no second sum can be formed."""
    f = Federation(keys, tmp_path, quorum=2)
    try:
        for artist, party in f.parties.items():
            party.runner.ckks = ckks_client(party.keys, tmp_path / artist, clock=f.clock)
        x, y = f.contribute()
        f.turn_malicious()
        monkeypatch.setattr(Coordinator, "decryption_committed", property(lambda c: len(f.commitments) == 2))
        f.act((x, y))
        assert set(f.stolen) == {x, y}  # attempt 0's sum of all three
        f.clock.now += 61
        f.running.servicer.tick()
        assert f.coordinator.attempt == 1 and f.coordinator.plan().phase is Phase.CONTRIBUTE
        for member in (x, y):  # new processes: nothing in memory, the same state_dir
            party = f.parties[member]
            config = ClientConfig(keys=keys, data=fake_portfolio(tmp_path), artist=member, state_dir=tmp_path / member)
            party.runner = ArtistRunner(config, party.keys, client=party.runner.client)
            party.runner.ckks = ckks_client(party.keys, config.state_dir, clock=f.clock)
        f.act(ARTISTS)
        assert f.coordinator.plan().phase is Phase.CONTRIBUTE  # still waiting: one signed contribution, quorum 2
        assert set(f.coordinator._collect.items) == set(ARTISTS) - {x, y}
        assert all("not contributing to another attempt" in f.refusal(a) for a in (x, y))
    finally:
        f.close()


def test_server_solving_for_the_key_from_the_committees_plaintext_reads_no_contribution(keys, tmp_path, monkeypatch):
    """Li & Micciancio's passive attack on what an honest round gives the server: every ciphertext
    and the committee's decrypted sum.  Exact decrypted slots of two full ciphertexts are linear
    equations in the shared secret key (see tests/ckks_key_recovery.py, which shows the attack
    working on an exact decryption); each member's upload is flooded, so the solved "key" decrypts
    nothing -- here the contribution of the artist that is not on the committee."""
    f = Federation(keys, tmp_path)
    try:
        c, context = f.coordinator, f.coordinator.ckks
        assert context is not None  # a CKKS run: the server holds the public context
        params = context.params
        wide = replace(c.shape, feature_dim=params.slots)  # the set-up round spans two full ciphertexts
        layout = round_layout(c.spec, wide, "setup")
        assert layout is not None
        c.shape, c._layout = wide, layout
        monkeypatch.setattr(server_module, "expected_layout", lambda *_: layout)  # upload limits follow
        for party in f.parties.values():
            assert isinstance(party.runner.client, FeatureMomentsOnly)
            party.runner.client._shape = wide
        committee = f.contribute()
        collector = c._ckks_round
        assert collector is not None
        payloads = {a: collector.payload(a) for a in ARTISTS}
        released: dict[str, np.ndarray] = {}
        honest_submit = c.submit_decrypted

        def recorded(artist: str, round_id: int, payload: bytes, nonce: bytes, now: float) -> None:
            released[artist] = np.frombuffer(payload, dtype="<f8")
            honest_submit(artist, round_id, payload, nonce, now)

        monkeypatch.setattr(c, "submit_decrypted", recorded)
        f.act(ARTISTS)
        assert sorted(released) == sorted(committee) and c.plan().round_id == 1  # an honest, completed round
        assert c.standardisation is not None
        np.testing.assert_allclose(c.standardisation[0], 7 / 3, rtol=1e-6)
        total = CkksAggregator(context, layout.size)
        for artist in ARTISTS:
            total.add(payloads[artist], what=artist)
        target = next(a for a in ARTISTS if a not in committee)
        truth = pack(_moments(VALUES[target], params.slots))[0][: params.slots]
        ciphertext = EncryptedVector.load(context, payloads[target])
        for member, plaintext in released.items():
            read = decrypt_first_chunk(params, recover_key(params, total.result(), plaintext), ciphertext)
            assert np.median(np.abs(read - truth)) > 1e3, f"{member}'s upload gave away the key"
    finally:
        f.close()


# --------------------------------------------------------------------------- crafted ciphertexts (item 5)


def _crafted(context: CkksContext, vector: np.ndarray, how: str) -> bytes:
    """What a malicious artist (holding the shared secret context) could upload instead of encrypt()."""
    if how == "scale":
        chunk = ts.ckks_vector(context.tenseal, vector.tolist(), scale=2.0**30)
    elif how == "level":
        chunk = ts.ckks_vector(context.tenseal, vector.tolist()) * 1.0  # rescaled: one prime dropped
    else:  # another parameter set behind this key set's fingerprint
        other = CkksContext.generate(CkksParams(8192, (50, 30, 50), 30))
        data = encrypt(other, vector).serialize()
        return data[:5] + context.fingerprint + data[5 + 32 :]
    return EncryptedVector(context, [chunk], vector.size).serialize()


def test_crafted_first_ciphertexts_are_refused_and_the_honest_sum_is_unchanged(federation):
    f = federation
    attacker = f.parties["artist_c"]
    vector, layout = pack(_moments(VALUES["artist_c"]))
    at = Attempt(0, 0, attacker.keys.ckks.fingerprint, COMMITTEE_SIZE)
    for how, words in (
        ("scale", "scale 1.07374e+09, expected 2**40"),
        ("level", "not the fresh level"),
        ("params", "TenSEAL rejected"),
    ):
        payload = _crafted(attacker.keys.ckks, vector, how)
        signature = sign_contribution(
            attacker.keys.identity_key, at, "artist_c", layout_bytes(layout.fields), payload_digest(payload), 0
        )
        with pytest.raises(grpc.RpcError) as refused:
            attacker.session.upload(0, pb.PAYLOAD_KIND_CKKS_CIPHERTEXT, payload, layout, signature=signature)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "contribution of artist_c refused" in refused.value.details() and words in refused.value.details()
        assert not f.coordinator._collect.items  # nothing kept
    unsigned = encrypt(attacker.keys.ckks, vector).serialize()
    with pytest.raises(grpc.RpcError) as refused:
        attacker.session.upload(0, pb.PAYLOAD_KIND_CKKS_CIPHERTEXT, unsigned, layout, signature=b"\0" * 64)
    assert "not signed by 'artist_c'" in refused.value.details()
    f.act(("artist_a", "artist_b"))  # the honest uploads are accepted as if nothing had happened
    assert (
        sorted(f.coordinator._collect.items) == ["artist_a", "artist_b"]
        and f.coordinator.plan().phase is Phase.CONTRIBUTE
    )
    committee = f.contribute(("artist_c",))  # now c behaves: it is refused nothing
    f.act(committee)
    np.testing.assert_allclose(f.coordinator.standardisation[0], 7 / 3, rtol=1e-6)  # the honest sum
    assert f.coordinator.plan().round_id == 1


def test_a_contribute_plan_for_an_earlier_round_gets_no_second_ciphertext(keys):
    """After sending round 2's contribution, a plan asking for round 1's would make the artist train
    and encrypt again: a second signed ciphertext of this artist for the server to combine.  It is
    refused (nothing packed, nothing sent); the round already sent is resent as is, not re-encrypted."""
    client = CkksClient(load_artist_keys(keys, "artist_a"))
    vector = np.arange(4.0)
    layout = pack({"v": vector})[1]
    packs: list[int] = []

    def pack_once():
        packs.append(1)
        return vector, layout

    client.contribution(2, pack_once)
    sent = client.sent
    send = contribute_step(client, 1, pack_once)

    # the refused send may touch neither the session nor the plan: None fails loudly if it does
    no_session, no_plan = cast(ArtistSession, None), cast(pb.RoundPlan, None)
    assert send(no_session, no_plan) is None and "refusing an earlier round" in (client.last_refusal or "")
    assert client.contribution(2, pack_once) is sent and len(packs) == 1


def test_an_artist_declining_the_committee_size_at_its_first_plan_opens_no_privacy_state(keys, tmp_path, monkeypatch):
    """The decline depends only on settings (committee size, floor, roster), so it comes before the
    artist's privacy state opens: under DP that opening charges the planning size's count to the run
    and lifetime ledgers, for a run the artist then never takes part in (red-team review, sixteenth;
    fails without the order: the state opened)."""
    from fedstyle_secure.transport.artist import runner as runner_module

    f = Federation(keys, tmp_path, quorum=2)
    try:
        strict, opened = ARTISTS[0], []
        party = f.parties[strict]
        fake = FeatureMomentsOnly(_value(strict), f.coordinator.shape)
        monkeypatch.setattr(runner_module, "build_style_client", lambda *args, **kwargs: fake)  # test fake
        monkeypatch.setattr(runner_module.ArtistPrivacy, "open", lambda *args, **kwargs: opened.append(args))
        config = ClientConfig(keys=keys, data=fake_portfolio(tmp_path / "p"), artist=strict, min_quorum=3)
        ArtistRunner(config, party.keys).act(party.session, party.session.plan())
        assert not opened and "committee size 2 is below my floor 3" in f.coordinator.state.retired[strict]
    finally:
        f.close()
