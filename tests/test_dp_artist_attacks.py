"""A dishonest server against a DP artist's guarantees (red-team review of 2026-11-30, night).

Each test plays the attack through the artist's real code: :class:`ArtistPrivacy` (``open``,
``admit``, ``contribution``, ``publication``), a real :class:`StyleClient` (residual head, Opacus
DP-SGD with ghost clipping, noise from the OS-keyed CSPRNG), the real ledger, accountant and signed
reports.  Named fakes: :class:`FakeSession` (the server's end of the wire, recording what it
receives) and the artists' style features (random arrays standing in for the frozen backbone's
output; DP-SGD runs on them as on real ones).  Each test fails on the code before its defence.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import shutil
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.errors import ConfigError, ModelError, PrivacyError
from fedstyle_secure.federation.client import Broadcast, StyleClient
from fedstyle_secure.federation.strategy import CONTRIBUTION_RANGE, algorithm_spec
from fedstyle_secure.models.factory import make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.calibration import default_delta
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.training import dp_noise
from fedstyle_secure.training.local import LocalConfig, LocalData
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.plan_checks import accepted_broadcast_standardisation
from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
from fedstyle_secure.transport.artist.withdrawal import send_withdrawal
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio

ARTIST = "artist_00"
ROSTER = 2
FEATURES = 24
EMBED = 8
FLT_MAX = float(np.finfo(np.float32).max)


class FakeSession:
    """Fake (named): what ArtistPrivacy talks to; records reports and withdrawals (the server's view)."""

    def __init__(self) -> None:
        self.uploaded: list[tuple[int, bytes]] = []
        self.withdrawals: list[Any] = []
        self.metadata = ()
        self.stub = SimpleNamespace(
            Withdraw=lambda request, metadata=None, timeout=None: self.withdrawals.append(request)
        )

    def report(self, round_id: int, signed_json: bytes, timeout: float = 30.0) -> None:
        self.uploaded.append((round_id, signed_json))


def _keys() -> ArtistKeys:
    return cast(ArtistKeys, SimpleNamespace(artist_id=ARTIST, identity_key=Ed25519PrivateKey.generate()))


def _client(dp: DpConfig, views: np.ndarray, batch_size: int = 16) -> StyleClient:
    """A real StyleClient over the style features ``views (V, n, F)`` of one artist."""
    rng = np.random.default_rng(0)
    bank = InputBank(views=views, kind="features")
    public = InputBank(views=rng.normal(size=(3, 40, views.shape[2])).astype(np.float32), kind="features")
    torch.manual_seed(0)
    encoder = dataclasses.replace(encoder_config_for(dp), embedding_dim=EMBED, hidden_dim=16)
    return StyleClient(
        client_id=ARTIST,
        data=LocalData(bank=bank, labels=np.zeros(len(bank), dtype=np.int64)),
        spec=algorithm_spec("fedstyle"),
        model=make_model(encoder, bank, public, ROSTER),
        config=LocalConfig(epochs=1, batch_size=batch_size),
        public_inputs=public.take(0, np.arange(len(public))),
        n_artists=ROSTER,
        rng=np.random.default_rng([0, 0]),
    )


def _broadcast(round_id: int, params: np.ndarray | None = None) -> Broadcast:
    return Broadcast(round_id, params, None, np.zeros((ROSTER, EMBED)), np.zeros(ROSTER, dtype=bool))


def _plan(round_id: int, kind: int, phase: str, total_rounds: int, dp: pb.DpParameters) -> pb.RoundPlan:
    return pb.RoundPlan(
        round_id=round_id,
        kind=cast(pb.RoundKind, kind),
        phase=phase,
        total_rounds=total_rounds,
        dp=dp,
        participants=[ARTIST],
    )


def _detector_params(client: StyleClient, target: np.ndarray) -> np.ndarray:
    """The attack: the starting model with one hidden unit of the first layer (which DP-SGD does not
    train) turned into a detector of the candidate artwork ``target (V, F)``, scaled so that its
    pre-activation overflows float32 to +inf on the target alone.  Every value sent is finite."""
    model = copy.deepcopy(client.model)
    head = model.projection_head()
    first = cast(torch.nn.Linear, head.fc1)
    mean, std = head.input_mean.numpy().astype(np.float64), head.input_std.numpy().astype(np.float64)
    t = ((target - mean) / std).mean(axis=0)
    norm2 = float(t @ t)
    scale = FLT_MAX / (0.55 * norm2)  # target: 0.7 / 0.55 > 1 -> inf; an unrelated artwork stays far below
    with torch.no_grad():
        first.weight[0] = torch.from_numpy(scale * t).float()
        first.bias[0] = float(-scale * 0.3 * norm2)
    return get_flat_params(model)


def test_a_crafted_broadcast_cannot_make_dp_sgd_reveal_when_an_artwork_was_sampled(tmp_path, monkeypatch):
    """Per-artwork clipping bounds an artwork's influence only while every loss and gradient is finite.
    The attack: finite first-layer weights that overflow float32 on one candidate artwork made its
    loss NaN, Opacus's clip factor NaN, and the whole noised contribution NaN exactly in the rounds
    the candidate was Poisson-sampled (measured before the defence: NaN in rounds [T, T, T, T, F, F],
    sampled in [T, T, T, T, F, F]; never without the artwork) -- no (epsilon, delta) holds.  The
    defence: an artist takes from a broadcast only the entries its plan trains, each checked finite
    and inside the contribution range; the others stay its own (the public warm start under DP)."""
    sampled: list[bool] = []  # observation only: was the candidate (row 0) in a step's Poisson batch?
    batches = dp_noise.PoissonBatchSampler.__iter__

    def observed(self: dp_noise.PoissonBatchSampler) -> Iterator[list[int]]:
        for batch in batches(self):
            sampled.append(0 in batch)
            yield batch

    monkeypatch.setattr(dp_noise.PoissonBatchSampler, "__iter__", observed)
    rng = np.random.default_rng(7)
    n, features, rounds = 100, 1024, 6
    base = rng.normal(size=(1, n, features)).astype(np.float32)
    views = np.concatenate([base, base + 0.05 * rng.normal(size=(2, n, features)).astype(np.float32)])
    announced = pb.DpParameters(epsilon_budget=8.0, clip_norm=1.0, accountant="prv")
    client = _client(DpConfig(epsilon=8.0), views, batch_size=64)
    config = ClientConfig(
        keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state", min_training_artworks=50
    )
    privacy = ArtistPrivacy.open(
        config, _keys(), client, _plan(1, pb.ROUND_KIND_TRAIN, "contribute", rounds, announced)
    )
    assert privacy is not None and privacy.refusal is None and privacy.plan.trains
    poisoned = _detector_params(client, views[:, 0, :].astype(np.float64))
    assert np.all(np.isfinite(poisoned))
    session, finite, target_used = cast(ArtistSession, FakeSession()), list[bool](), list[bool]()
    for round_id in range(1, rounds + 1):
        sampled.clear()
        plan = _plan(round_id, pb.ROUND_KIND_TRAIN, "contribute", rounds, announced)
        assert privacy.admit(session, plan)
        broadcast = _broadcast(round_id, poisoned)
        sent = privacy.contribution(session, plan, lambda: broadcast)  # noqa: B023 (called at once)
        finite.append(all(bool(np.isfinite(a).all()) for a in sent.values()))
        target_used.append(any(sampled))
    assert any(target_used)  # P = 1 - (1/2)^2 per round: the attack had its chances ...
    assert all(finite)  # ... and the server saw nothing but finite contributions


def test_a_broadcast_outside_what_an_honest_server_sends_is_refused():
    """Trained parameters outside the contribution range (values the artist could never send back)
    and non-unit or non-finite prototypes are refused before anything is computed, naming the field."""
    client = _client(DpConfig(epsilon=8.0), np.random.default_rng(1).normal(size=(3, 20, FEATURES)).astype(np.float32))
    shape = client.shape().model
    assert shape is not None
    honest = get_flat_params(client.model)
    client.fit(_broadcast(0, honest))  # below the DP-SGD threshold: checks the broadcast, trains nothing
    trained_entry = shape.trained[0][0]
    crafted = honest.copy()
    crafted[trained_entry] = 2 * CONTRIBUTION_RANGE[1]
    with pytest.raises(ModelError, match="broadcast of round 0: trained params: 1 value"):
        client.fit(_broadcast(0, crafted))
    crafted[trained_entry] = np.nan
    with pytest.raises(ModelError, match="non-finite or outside"):
        client.publish(_broadcast(0, crafted), final=True)
    nan_prototypes = _broadcast(0, honest)
    nan_prototypes.prototypes[1, 0] = np.inf
    with pytest.raises(ModelError, match="broadcast of round 0: prototypes"):
        client.fit(nan_prototypes)


def test_layers_dp_sgd_does_not_train_are_never_taken_from_a_broadcast():
    """Under DP the untrained layers keep the artist's own values whatever the broadcast says; only
    the privately trained slice is loaded (the detector above sits in a layer outside it)."""
    views = np.random.default_rng(2).normal(size=(3, 20, FEATURES)).astype(np.float32)
    client = _client(DpConfig(epsilon=8.0), views)
    client.dp = SimpleNamespace(private_layers="last", trains=False, releases_at=lambda r: True)  # type: ignore[assignment]
    shape = client.shape().model
    assert shape is not None and shape.trained_count < shape.param_count
    own = get_flat_params(client.model)
    sent = own + 0.5  # every entry moved, all inside the range
    client._load_global(_broadcast(0, sent))
    loaded = get_flat_params(client.model)
    trained = np.zeros(shape.param_count, dtype=bool)
    for start, stop in shape.trained:
        trained[start:stop] = True
    np.testing.assert_array_equal(loaded[trained], sent[trained])
    np.testing.assert_array_equal(loaded[~trained], own[~trained])


def test_a_dp_artist_refuses_a_server_chosen_standardisation():
    """A tiny std on a feature one candidate artwork stands out in would overflow a forward pass on
    that artwork alone; under DP an artist standardises with public statistics only."""
    mean, std = np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="under DP the inputs are standardised with public-set statistics"):
        accepted_broadcast_standardisation((mean, std), private=True)
    assert accepted_broadcast_standardisation((mean, std), private=False)[1] is std
    for bad_std in (np.full(4, 1e-30, dtype=np.float32), np.full(4, np.inf, dtype=np.float32)):
        with pytest.raises(ConfigError, match="not one a set-up round gives"):
            accepted_broadcast_standardisation((mean, bad_std), private=False)


def test_a_server_cannot_make_an_approximate_accountant_enforce_an_artists_budget(tmp_path):
    """A server announcing ``accountant = "gdp"`` had an artist with 100 artworks and its own budget
    of 8 spend 9.0 by PRV (10.2 by RDP): the CLT approximation underestimates subsampled DP-SGD.
    Budgets are enforced only with sound accountants; the announced plan is refused at once."""
    announced = pb.DpParameters(epsilon_budget=8.0, clip_norm=1.0, accountant="gdp")
    config = ClientConfig(
        keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state", budget_epsilon=8.0
    )
    client = _client(DpConfig(epsilon=8.0), np.random.default_rng(3).normal(size=(3, 100, FEATURES)).astype(np.float32))
    with pytest.raises(ConfigError, match="accountant.*must be one of prv, rdp"):
        ArtistPrivacy.open(config, _keys(), client, _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, announced))
    with pytest.raises(PrivacyError, match="cannot enforce a privacy budget"):
        DpConfig(epsilon=8.0, accountant="gdp").validate()


def test_an_announced_delta_just_below_one_over_n_does_not_become_the_artists(tmp_path):
    """A server announcing delta = 0.9 / n had an artist with a budget of 4 release at a noise that
    spends 7.8 at the project's delta, with clean reports.  The artist now calibrates and enforces
    with the smaller of the announced delta and its own, and the server learns nothing about n."""
    n = 40
    announced = pb.DpParameters(epsilon_budget=4.0, delta=0.9 / n, clip_norm=1.0, accountant="prv")
    config = ClientConfig(
        keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state", budget_epsilon=4.0
    )
    client = _client(DpConfig(epsilon=4.0), np.random.default_rng(4).normal(size=(3, n, FEATURES)).astype(np.float32))
    server = FakeSession()
    session = cast(ArtistSession, server)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, announced)
    privacy = ArtistPrivacy.open(config, _keys(), client, first)
    assert privacy is not None and privacy.refusal is None
    assert privacy.ledger.budget.delta == privacy.plan.delta == default_delta(n)
    assert privacy.admit(session, first)
    privacy.contribution(session, first, lambda: _broadcast(1))
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, announced)
    assert privacy.admit(session, final)
    privacy.publication(session, final, lambda: _broadcast(2))
    assert privacy.ledger.epsilon_spent <= 4.0 and not server.withdrawals


def test_a_rolled_back_state_dir_is_refused_instead_of_releasing_again(tmp_path):
    """A restored backup of ``client.state_dir`` forgot the final release: the restarted artist
    released a second, freshly noised prototype (two releases spend 5.9 against a budget of 4) and,
    its report file existing already, signed nothing new -- the audit stayed clean.  An artist whose
    own reports (kept outside ``state_dir``) sign more charges than its ledger holds now refuses to run."""
    epsilon, n = 4.0, 40
    announced = pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv")
    state = tmp_path / "state"
    config = ClientConfig(
        keys=tmp_path,
        data=fake_portfolio(tmp_path),
        state_dir=state,
        reports_dir=tmp_path / "reports",
        budget_epsilon=epsilon,
    )
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, announced)
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, announced)
    views = np.random.default_rng(5).normal(size=(3, n, FEATURES)).astype(np.float32)
    keys, session = _keys(), cast(ArtistSession, FakeSession())

    def artist_process() -> ArtistPrivacy:
        privacy = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=epsilon), views), first)
        assert privacy is not None and privacy.refusal is None
        return privacy

    privacy = artist_process()
    assert privacy.admit(session, first)
    privacy.contribution(session, first, lambda: _broadcast(1))
    shutil.copytree(state, tmp_path / "backup")  # last night's backup of the state folder
    assert privacy.admit(session, final)
    privacy.publication(session, final, lambda: _broadcast(2))
    assert len(privacy.ledger.history) == 2  # the planning size's count and the final release, charged and reported
    artist_process()  # an ordinary restart resumes
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "backup", state)  # the state goes back; the reports folder does not
    with pytest.raises(ConfigError, match="show 2: the state was rolled back"):
        artist_process()


def test_a_rollback_inside_a_round_is_refused_too(tmp_path):
    """A round's prototype refresh is signed into a report only at the round's next charge (its
    DP-SGD).  A state folder restored from a backup taken before the refresh (a crash between
    publish and contribute) agreed with the reports, and the artist released the same round's
    prototype again with fresh noise, the round's report then signing one release of two (a
    helper's review, 2026-11-30).  The charge count kept beside the reports before each charged
    result leaves the artist catches it."""
    epsilon, n = 4.0, 100
    announced = pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv", release_rounds=[0, 1])
    state = tmp_path / "state"
    config = ClientConfig(
        keys=tmp_path,
        data=fake_portfolio(tmp_path),
        state_dir=state,
        reports_dir=tmp_path / "reports",
        budget_epsilon=epsilon,
    )
    views = np.random.default_rng(5).normal(size=(3, n, FEATURES)).astype(np.float32)
    keys, session = _keys(), cast(ArtistSession, FakeSession())
    r1_pub, r1_con, r2_pub = (
        _plan(1, pb.ROUND_KIND_TRAIN, "publish", 2, announced),
        _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 2, announced),
        _plan(2, pb.ROUND_KIND_TRAIN, "publish", 2, announced),
    )

    def artist_process() -> ArtistPrivacy:
        privacy = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=epsilon), views), r1_pub)
        assert privacy is not None and privacy.refusal is None
        return privacy

    privacy = artist_process()
    for plan in (r1_pub, r1_con):
        assert privacy.admit(session, plan)
    privacy.publication(session, r1_pub, lambda: _broadcast(1))
    privacy.contribution(session, r1_con, lambda: _broadcast(1))
    shutil.copytree(state, tmp_path / "backup")  # the nightly backup, after round 1
    assert privacy.admit(session, r2_pub)
    privacy.publication(session, r2_pub, lambda: _broadcast(2))  # round 2's refresh: charged, not yet reported
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "backup", state)  # the machine died in round 2's training; the state goes back
    with pytest.raises(ConfigError, match="the state was rolled back"):
        artist_process()


@pytest.mark.parametrize("first_run_left", ["reports", "a withdrawal only"])
def test_a_reports_folder_reused_for_a_new_run_is_refused_saying_so_not_as_a_rollback(tmp_path, first_run_left):
    """A second run given a fresh state_dir but the first run's client.reports_dir was refused as "the
    state was rolled back (a restored backup?)", which sent the user looking for a backup; and when the
    first run had left only a withdrawal (no charge recorded), the second ran in the same folder, its
    own withdrawal replaced the first's and the first run's audit lost it (a walkthrough, 2026-12-02).
    A new run, and a withdrawal, now refuse a folder holding another run's records, naming it; a state
    deleted within the same run is still a rollback."""
    epsilon, n = 4.0, 100
    announced = pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv")
    views = np.random.default_rng(5).normal(size=(3, n, FEATURES)).astype(np.float32)
    keys, session = _keys(), FakeSession()

    def plans(run_id: str, total_rounds: int = 1) -> tuple[pb.RoundPlan, pb.RoundPlan]:
        first, final = (
            pb.RoundPlan(
                round_id=r,
                kind=kind,
                phase=phase,
                total_rounds=total_rounds,
                dp=announced,
                participants=[ARTIST],
                run_id=run_id,
            )
            for r, kind, phase in ((1, pb.ROUND_KIND_TRAIN, "contribute"), (2, pb.ROUND_KIND_FINAL, "publish"))
        )
        return first, final

    def artist_process(state: str, run_id: str, total_rounds: int = 1) -> ArtistPrivacy | None:
        config = ClientConfig(
            keys=tmp_path,
            data=fake_portfolio(tmp_path),
            state_dir=tmp_path / state,
            reports_dir=tmp_path / "reports",
            budget_epsilon=epsilon,
            lifetime_ledger=tmp_path / f"lifetime-{state}.sqlite",
        )
        first, final = plans(run_id, total_rounds)
        privacy = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=epsilon), views), first)
        if privacy is not None and privacy.admit(cast(ArtistSession, session), final):
            privacy.publication(cast(ArtistSession, session), final, lambda: _broadcast(2))
        return privacy

    first_run, second_run = "a1" * 16, "b2" * 16
    if first_run_left == "reports":
        done = artist_process("state-1", first_run)
        assert done is not None and done.refusal is None and len(done.ledger.history) == 2  # count + release
    else:  # a plan no portfolio could use: refused before any state, with a withdrawal kept in the folder
        refused = artist_process("state-1", first_run, total_rounds=10_000)
        assert refused is not None and refused.refusal is not None and len(session.withdrawals) == 1
    kept = sorted(p.name for p in (tmp_path / "reports" / ARTIST).iterdir())
    refusal = f"reports_dir.*another run \\({first_run}\\).*fresh client.reports_dir"
    with pytest.raises(ConfigError, match=refusal):
        artist_process("state-2", second_run)
    with pytest.raises(ConfigError, match=refusal):  # a decline of the new run sent before its privacy opens
        send_withdrawal(session, keys, plans(second_run)[0], "declined", tmp_path / "reports")
    assert sorted(p.name for p in (tmp_path / "reports" / ARTIST).iterdir()) == kept  # nothing of run 2 in it
    if first_run_left == "reports":
        shutil.rmtree(tmp_path / "state-1")  # the same run, its state lost: a rollback, as before
        with pytest.raises(ConfigError, match="the state was rolled back"):
            artist_process("state-1", first_run)


class FinishingSession(FakeSession):
    """Fake (named): :class:`FakeSession` whose every plan poll answers ``finished``."""

    artist_id = ARTIST
    roster = (ARTIST, "artist_01")

    def plan(self, *args: Any, **kwargs: Any) -> pb.RoundPlan:
        return pb.RoundPlan(finished=True)


@pytest.mark.parametrize(
    ("n", "releases"),
    [(120, [0, 1]), (40, [0, 1, 2]), (40, [0])],
    ids=["trains-then-refresh", "refreshes-only", "one-refresh"],
)
def test_a_run_ended_right_after_a_release_leaves_no_release_unreported(tmp_path, n, releases):
    """A dishonest server asked for a prototype refresh and then answered ``finished`` (or dropped the
    artist, or stopped answering): the refresh had been signed into no report, on the artist's disk
    either, since a round's report was signed only at its next charge (red-team review, 2026-12-01,
    measured before the fix: ledger 2.034 against 1.984 certified for n = 120; 2.108 spent and no
    report at all for one refresh, which the audit read as an artist that spent nothing).  Now every
    charged result leaves only after the signed report covering it: the audit certifies what the
    ledger holds.  Real ArtistPrivacy, StyleClient with Opacus DP-SGD, ReportWriter, ArtistRunner
    and audit."""
    from fedstyle_secure.privacy.audit import LoadedReport, audit_reports
    from fedstyle_secure.privacy.reports import public_key_to_text
    from fedstyle_secure.transport.artist.runner import ArtistRunner

    epsilon, rounds = 4.0, 3
    announced = pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv", release_rounds=releases)
    config = ClientConfig(
        keys=tmp_path,
        data=fake_portfolio(tmp_path),
        state_dir=tmp_path / "state",
        reports_dir=tmp_path / "reports",
        budget_epsilon=epsilon,
    )
    keys = _keys()
    views = np.random.default_rng(5).normal(size=(3, n, FEATURES)).astype(np.float32)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "publish", rounds, announced)
    privacy = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=epsilon), views), first)
    assert privacy is not None and privacy.refusal is None
    server = FinishingSession()
    session = cast(ArtistSession, server)
    last = max(releases) + 1  # the round id of the last refresh: the server ends the run right after it
    for round_id in range(1, last + 1):
        if round_id - 1 in releases:
            plan = _plan(round_id, pb.ROUND_KIND_TRAIN, "publish", rounds, announced)
            assert privacy.admit(session, plan)
            privacy.publication(session, plan, functools.partial(_broadcast, round_id))
        if round_id < last:
            plan = _plan(round_id, pb.ROUND_KIND_TRAIN, "contribute", rounds, announced)
            assert privacy.admit(session, plan)
            privacy.contribution(session, plan, functools.partial(_broadcast, round_id))
    runner = ArtistRunner(config, keys, client=privacy.client, privacy=privacy)
    assert runner.run_session(session, threading.Event()).finished  # the run ends: nothing more is signed
    public = public_key_to_text(keys.identity_key.public_key())
    uploaded = [LoadedReport(f"server:{r}", json.loads(raw)) for r, raw in server.uploaded]
    result = audit_reports(uploaded, {"artists": {ARTIST: {"public_key": public}}}, roster=[ARTIST])
    assert uploaded and all(report.ok for report in result.reports)
    latest = max(uploaded, key=lambda report: report.data["round"]).data
    assert len(latest["mechanisms"]) == len(privacy.ledger.history)  # every charge is in a signed report
    assert latest["epsilon"]["prv"] == pytest.approx(privacy.ledger.epsilon_spent)


def test_one_artwork_more_or_less_does_not_change_the_mechanism(tmp_path):
    """With the exact portfolio size in the plan, adding or removing one artwork changed the mechanism
    itself (red-team review, 2026-12-01, through ArtistPrivacy): an artist of 99 artworks (rule
    threshold 100) ran no DP-SGD and sent the broadcast back bit for bit, one of 100 ran DP-SGD --
    told apart in every trial; across a batch boundary (113 vs 112 artworks) the update's noise
    variance differed by 11-13 standard deviations.  The plan now reads only a DP count of the
    portfolio, charged first: both neighbours run either plan with close probabilities."""
    from fedstyle_secure.privacy.mechanisms import GaussianRelease
    from fedstyle_secure.privacy.plan import PORTFOLIO_SIZE_RELEASE, noisy_portfolio_size
    from fedstyle_secure.randomness import CsprngNoise

    noise = CsprngNoise()
    trains = {n: {noisy_portfolio_size(n, noise) >= 100 for _ in range(400)} for n in (99, 100)}
    assert trains[99] == trains[100] == {True, False}  # P(differ in 400 draws) < 1e-100 at sigma 10
    announced = pb.DpParameters(epsilon_budget=8.0, clip_norm=1.0, accountant="prv")
    views = np.random.default_rng(3).normal(size=(3, 100, FEATURES)).astype(np.float32)
    config = ClientConfig(
        keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state", min_training_artworks=100
    )
    plan = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 3, announced)
    keys = _keys()
    privacy = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=8.0), views), plan)
    assert privacy is not None and privacy.refusal is None
    size = privacy.plan.planning_size
    assert size is not None and privacy.plan.trains == (size >= 100)  # the rule read the planning size
    first = privacy.ledger.history[0]
    assert isinstance(first, GaussianRelease) and first.what == PORTFOLIO_SIZE_RELEASE  # charged first
    if privacy.plan.trains:  # Opacus divides by the planning size's expected batch, never n's
        assert privacy.plan.expected_batch_size == int(size * privacy.plan.sample_rate)
    reopened = ArtistPrivacy.open(config, keys, _client(DpConfig(epsilon=8.0), views), plan)  # a restart
    assert reopened is not None and reopened.plan.planning_size == size  # drawn once, kept with the ledger
    assert len(reopened.ledger.history) == 1
