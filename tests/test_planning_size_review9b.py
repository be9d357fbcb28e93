"""A dishonest server against the ninth review's planning-size fixes (a second helper, the same day):
the Flower path over the in-process FAKE grid, and ``ArtistPrivacy.open`` alone with FAKE clients."""

from __future__ import annotations

from typing import cast

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.flower.apps import ArtistRefused
from fedstyle_secure.flower.records import PHASE_ACTIONS, ServerMessage
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.state import ArtistStateStore
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio, fake_style_client
from tests.test_flower_app import ARTISTS, outside_runtime  # noqa: F401 (fixture)
from tests.test_flower_masking_attacks import Run

TARGET = ARTISTS[0]


def _contribute_at(run: Run, round_id: int | None, kind: pb.RoundKind, phase: str = "contribute") -> ServerMessage:
    """The dishonest server's FIRST message to the target: a ``phase`` plan of ``round_id`` (default: the
    final publication's) and ``kind``, with the genuine DP announcement and round 1's broadcast."""
    servicer = run.federation.servicer
    with servicer._cond:
        wire = servicer._plan_message()
        broadcast = servicer._broadcast_body(1)
    round_id = wire.total_rounds + 1 if round_id is None else round_id
    wire.round_id, wire.phase, wire.kind = round_id, phase, kind
    broadcast.round_id = round_id
    return ServerMessage(wire, broadcast)


def _outcome(run: Run, inbox: ServerMessage) -> str:
    try:
        reply = run.grid.replay(run.nodes[TARGET], PHASE_ACTIONS[inbox.plan.phase], inbox)
    except ArtistRefused:
        return "refused"
    uploaded = f" +{len(reply.reports)} report(s)" if reply.reports else ""
    if reply.withdrawal is not None:
        return "withdrew" + uploaded
    return ("answered" if (reply.upload or reply.publication or reply.masking) else "silent") + uploaded


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("secure,phase", [("none", "contribute"), ("secagg", "advertise")])
def test_a_final_round_contribute_as_first_message_is_answered_alike_whatever_the_plan(tmp_path, data, secure, phase):
    """A first message ``contribute`` (under secagg ``advertise``) at the final publication's round id
    (kind FINAL).  With DP-SGD in the plan the artist sat it out (no DP-SGD in the final round); without
    (planning size below ``client.min_training_artworks``) it took the no-DP-SGD shortcut and answered:
    so its answer told ``planning size >= min_training_artworks`` before any report covered the count.
    Both plans now make the same schedule checks first and sit it out alike."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size trains / none does
        run = Run(tmp_path / f"run-{min_training}", data, secure, 8.0)
        toml = run.configs.artists[TARGET]
        toml.write_text(
            toml.read_text().replace("min_training_artworks = 1", f"min_training_artworks = {min_training}")
        )
        outcomes[min_training] = _outcome(run, _contribute_at(run, None, pb.ROUND_KIND_FINAL, phase))
        stored = ArtistStateStore(run.state[TARGET]).load()
        assert stored is not None and stored.ledger is not None and stored.ledger["mechanisms"]  # the count, charged
    assert outcomes[1] == outcomes[1000] == "silent", f"the answer depends on the plan: {outcomes}"


# ---------------------------------------------------------------- unit level: ArtistPrivacy.open alone


def _fake_keys():
    """FAKE ArtistKeys: an id and an identity key (the report writer signs with it)."""
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return SimpleNamespace(artist_id="artist_00", identity_key=Ed25519PrivateKey.generate())


def _dp_plan(epsilon: float) -> pb.RoundPlan:
    dp = pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="rdp")
    return pb.RoundPlan(round_id=1, kind=pb.ROUND_KIND_TRAIN, total_rounds=2, phase="contribute", dp=dp)


def _seen(open_once) -> str:
    try:
        privacy = open_once()
    except Exception as exc:  # Flower: ArtistRefused; gRPC: the artist process ends
        return f"raised {type(exc).__name__}"
    return f"withdraws: {privacy.refusal}" if privacy is not None and privacy.refusal else "takes part"


def test_an_artist_whose_own_budget_cannot_pay_the_count_tells_the_planning_size_rule_uncharged(tmp_path, monkeypatch):
    """``client.budget_epsilon`` 0.3 is below the planning count's own cost (0.375 under rdp at 1e-5), so
    this artist can never take part under DP.  The server announces epsilon 0.6, at which only a plan
    without DP-SGD fits (planning size below ``min_training_artworks`` = 100).  Below the rule the plan
    is accepted and ``new_ledger`` raises (an exception: Flower's ArtistRefused, a gRPC artist ends);
    at or above it the plan is refused, ``_refusing`` finds the count over the budget and returns a
    plain refusal (a Withdrawal) -- nothing charged, nothing reported, nothing retired, on every
    message.  The server reads ``planning size >= 100`` off the kind of answer, a bit of a count whose
    epsilon (0.375) is above the artist's whole budget, in no ledger and no report."""
    from fedstyle_secure.transport.artist import privacy as artist_privacy
    from fedstyle_secure.transport.config import ClientConfig

    keys = _fake_keys()
    seen = {}
    for size in (80, 120):  # FAKE draws: the same artist (n = 100) with either planning size
        monkeypatch.setattr(artist_privacy, "noisy_portfolio_size", lambda n, noise, s=size: s)
        config = ClientConfig(
            keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / f"state-{size}", budget_epsilon=0.3
        )
        seen[size] = [
            _seen(lambda c=config: artist_privacy.ArtistPrivacy.open(c, keys, fake_style_client(100), _dp_plan(0.6)))
            for _ in range(3)
        ]
        stored = ArtistStateStore(tmp_path / f"state-{size}").load()
        assert stored is not None and stored.plan == {"planning_size": size} and stored.ledger is None
    assert seen[80] == seen[120], f"the answer tells the server which side of the rule the planning size is: {seen}"


def test_a_state_rolled_back_to_nothing_after_an_accepted_plan_draws_a_second_planning_size(tmp_path, monkeypatch):
    """The ninth review: "a state rolled back to nothing is refused before a new draw".  That holds after
    a refusal (``_refusing`` records the charge count beside the reports) or after a charged result, but
    not after an accepted plan alone: ``_restore`` charges the count to a new ledger and saves it, and
    nothing records that count beside the reports, so a state folder restored from before the first
    message (the count charged, maybe a bit of it told, see the final-round test above) draws again."""
    from fedstyle_secure.transport.artist import privacy as artist_privacy
    from fedstyle_secure.transport.artist.state import STATE_FILE
    from fedstyle_secure.transport.config import ClientConfig

    drawn: list[int] = []
    real = artist_privacy.noisy_portfolio_size

    def spy(n, noise):  # SPY: records each draw
        drawn.append(real(n, noise))
        return drawn[-1]

    monkeypatch.setattr(artist_privacy, "noisy_portfolio_size", spy)
    keys = _fake_keys()
    state = tmp_path / "state"
    config = ClientConfig(
        keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=state, reports_dir=tmp_path / "reports"
    )
    privacy = artist_privacy.ArtistPrivacy.open(config, keys, fake_style_client(200), _dp_plan(8.0))
    assert privacy is not None and privacy.refusal is None and len(privacy.ledger.history) == 1  # the count, charged
    for suffix in ("", "-wal", "-shm"):  # the state folder restored from before the first message
        (state / (STATE_FILE + suffix)).unlink(missing_ok=True)
    outcome = _seen(lambda: artist_privacy.ArtistPrivacy.open(config, keys, fake_style_client(200), _dp_plan(8.0)))
    assert len(drawn) == 1, f"a second planning size was drawn after the rollback ({outcome}): {drawn}"


@pytest.mark.usefixtures("outside_runtime")
def test_an_honest_server_announcing_more_than_32_refreshes_is_refused_at_start_not_by_retiring_artists(tmp_path, data):
    """``[federation] refreshes`` (an explicit list) was not checked by the server against the artists'
    rule (``check_release_rounds``: at most 32 refreshes per run): an honest operator's run of 34 rounds
    refreshing every round started, and every DP artist refused its first plan, kept as a retirement
    for the run.  The server now refuses such a schedule when it loads its config."""
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.transport.config import load_server_config
    from tests.test_flower_app import machines

    configs = machines(tmp_path / "run", data, "none", 8.0, rounds=34, refreshes=list(range(34)))
    with pytest.raises(ConfigError, match="at most 32 prototype refreshes per run, the plan has 34"):
        load_server_config(configs.server)


# ---------------------------------------------- a third pass (the same day): where the count is reported


def _run(tmp_path, data, secure: str, min_training: int) -> Run:
    run = Run(tmp_path / f"run-{secure}-{min_training}", data, secure, 8.0)
    toml = run.configs.artists[TARGET]
    toml.write_text(toml.read_text().replace("min_training_artworks = 1", f"min_training_artworks = {min_training}"))
    return run


def _low_threshold(inbox: ServerMessage) -> ServerMessage:
    inbox.plan.masking.threshold = 0.01  # below every artist's client.min_masking_threshold
    return inbox


def _no_broadcast(inbox: ServerMessage) -> ServerMessage:
    return ServerMessage(inbox.plan, None)


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize(
    "secure,phase,spoil",
    [("secagg", "advertise", _low_threshold), ("none", "contribute", _no_broadcast)],
)
def test_a_first_contribution_refused_after_the_gate_uploads_alike_whatever_the_plan(
    tmp_path, data, secure, phase, spoil
):
    """A first message ``advertise`` that the masking client refuses (a threshold below the artist's
    floor) or a ``contribute`` without its broadcast, then the genuine round 1 ``publish`` (a training
    round without a refresh: sat out by both plans).  Without DP-SGD the gate signed the count's
    report and put it in the reply before the contribution was refused; with DP-SGD the report is
    signed only after training, so nothing was uploaded: the replies told ``planning size >=
    min_training_artworks`` while the DP-SGD artist held no signed report of its count.  Both now sign
    it at the same point, just before the contribution leaves."""
    outcomes = {}
    for min_training in (1, 1000):
        run = _run(tmp_path, data, secure, min_training)
        first = _outcome(run, spoil(_contribute_at(run, 1, pb.ROUND_KIND_TRAIN, phase)))
        second = _outcome(run, _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish"))
        outcomes[min_training] = (first, second)
    assert outcomes[1] == outcomes[1000], f"the replies depend on the plan: {outcomes}"


@pytest.mark.parametrize("phase", ["share", "masked-input", "unmask", "advertise", "contribute"])
def test_the_gate_uploads_alike_whatever_the_plan(tmp_path, phase):
    """``ArtistPrivacy.admit`` on a first plan of round 1 whose phase charges the round's DP-SGD.  Without
    DP-SGD the gate signs and uploads the count's report itself; with DP-SGD the report is signed in
    ``contribution`` after training.  A gRPC artist reaches ``contribution`` only if nothing fails in
    between: a first ``share`` / ``masked-input`` / ``unmask`` (no masking session: sat out), an
    ``advertise`` its masking client refuses (threshold, degree, quorum, a used session id), a
    ``contribute`` whose broadcast download the server refuses.  The server then receives a
    ``SubmitReport`` exactly when the planning size is below ``min_training_artworks``, and a DP-SGD
    artist holds no signed report of its count."""
    from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
    from fedstyle_secure.transport.config import ClientConfig
    from tests.test_dp_artist_attacks import FakeSession

    seen = {}
    for min_training in (1, 1000):
        state = tmp_path / f"state-{min_training}"
        config = ClientConfig(
            keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=state, min_training_artworks=min_training
        )
        plan = _dp_plan(8.0)
        plan.phase = phase
        privacy = ArtistPrivacy.open(config, _fake_keys(), fake_style_client(200), plan)
        assert privacy is not None and privacy.refusal is None
        assert privacy.plan.trains == (min_training == 1)
        server = FakeSession()
        admitted = privacy.admit(cast(ArtistSession, server), plan)
        seen[min_training] = (admitted, [r for r, _ in server.uploaded], len(server.withdrawals))
    assert seen[1] == seen[1000], f"the server's view depends on the plan before any report: {seen}"


# ---------------------------------------------------------------- honest runs with plans without DP-SGD


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize(
    "secure,refreshes",
    [("none", [1]), ("secagg", [0, 1, 2]), pytest.param("ckks", [0, 1, 2], marks=pytest.mark.slow)],
)
def test_an_honest_run_with_plans_without_dp_sgd_takes_every_artist_in_every_round(
    tmp_path, data, monkeypatch, secure, refreshes
):
    """Honest server, 3 rounds: artists 0 and 1 plan without DP-SGD, artist 2 with; every artist answers
    every phase of every round (no sit-out, no withdrawal, no refusal) and the reports audit clean."""
    from fedstyle_secure.cli.main import main
    from fedstyle_secure.flower import server as flower_server
    from fedstyle_secure.flower.apps import client_app
    from fedstyle_secure.flower.server import FlowerFederation, bind_nodes
    from fedstyle_secure.secure.keys.keystore import load_server_keys
    from fedstyle_secure.transport.config import load_server_config
    from fedstyle_secure.transport.server.servicer import new_servicer
    from tests.test_flower_app import InProcessGrid, machines

    work = tmp_path / "run"
    configs = machines(work, data, secure, 8.0, rounds=3, refreshes=refreshes)
    for artist, min_training in zip(ARTISTS, (1000, 1000, 1)):
        toml = configs.artists[artist]
        toml.write_text(
            toml.read_text().replace("min_training_artworks = 1", f"min_training_artworks = {min_training}")
        )
    config = load_server_config(configs.server)
    keys = load_server_keys(config.keys)
    grid = InProcessGrid(client_app([configs.artists[a] for a in ARTISTS]), len(ARTISTS))
    federation = FlowerFederation(grid, new_servicer(config, keys), bind_nodes(grid, keys, 10.0))
    answered: dict[tuple[int, str], set[str]] = {}
    real = flower_server.apply_reply

    def spy(servicer, artist, reply):  # SPY: which artists answered which phase
        plan = servicer.coordinator.plan()
        if reply.upload or reply.publication or reply.masking or reply.commit:
            answered.setdefault((plan.round_id, plan.phase.value), set()).add(artist)
        assert reply.withdrawal is None, f"{artist} withdrew: {reply.withdrawal}"
        return real(servicer, artist, reply)

    monkeypatch.setattr(flower_server, "apply_reply", spy)
    federation.run()
    coordinator = federation.coordinator
    assert coordinator.failed is None and federation.refusals == []
    missing = {k: sorted(set(ARTISTS) - v) for k, v in answered.items() if v != set(ARTISTS) and k[1] != "decrypt"}
    assert not missing, f"phases some artists sat out: {missing}"
    committees = [len(v) for k, v in answered.items() if k[1] == "decrypt"]  # ckks: only the committee decrypts
    assert all(size == COMMITTEE_SIZE for size in committees), committees
    assert {r for r, _ in answered} == {1, 2, 3, 4}, sorted(answered)
    assert main(["audit", str(configs.server.parent / "reports"), "--keys", str(work / "keys")]) == 0


@pytest.mark.usefixtures("outside_runtime")
def test_a_contribute_after_the_final_publication_is_answered_alike_on_both_sides_of_the_rule(tmp_path, data):
    """First message: the final publication (both plans release and report); second: a ``contribute``
    at the final round.  A DP-SGD plan sits it out (no DP-SGD in the final round); a plan without
    DP-SGD took its "released in this round" shortcut, meant for the rounds where a DP-SGD plan charges
    its DP-SGD ahead of the release, and raised (a helper's note, 2026-12-01; after the final report,
    so the charges were reported, but one side raised).  The shortcut now holds before the final round
    only, and both sit it out."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        first = _outcome(run, _contribute_at(run, None, pb.ROUND_KIND_FINAL, "publish"))
        second = _outcome(run, _contribute_at(run, None, pb.ROUND_KIND_FINAL, "contribute"))
        outcomes[min_training] = (first, second)
    assert outcomes[1] == outcomes[1000], f"the answer depends on the side of the rule: {outcomes}"
    assert outcomes[1][1] == "silent", outcomes
