"""A dishonest server against the DP artist's planning size and announced plan (ninth attack review,
2026-12-01): real servicer, real ClientApp (a new start from the artist's state folder per message,
as a gRPC artist's restart), real DP planning and reports, over the in-process FAKE grid of
:mod:`tests.test_flower_app`."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.flower.records import PHASE_ACTIONS
from fedstyle_secure.privacy.plan import PORTFOLIO_SIZE_RELEASE
from fedstyle_secure.privacy.report_store import report_path
from fedstyle_secure.transport.artist import privacy as artist_privacy
from fedstyle_secure.transport.artist.state import ArtistStateStore
from tests.test_flower_app import ARTISTS, outside_runtime  # noqa: F401 (fixture)
from tests.test_flower_masking_attacks import Run, copied

TARGET = ARTISTS[0]


@pytest.mark.usefixtures("outside_runtime")
def test_a_flower_artist_refusing_the_dp_plan_draws_its_planning_size_once(tmp_path, data, monkeypatch):
    """The planning size n + N(0, 10^2) is meant to be drawn once per ledger and charged (README,
    *Planning size*).  A server announces epsilon 0.6: only a plan without DP-SGD fits it (the size's
    count plus the final release already spend more), so the plan is unusable exactly when the
    planning size reaches ``client.min_training_artworks``, and the artist refuses.  The refusal is
    not kept: the next message (a resend of the same one) starts a new ClientApp, which finds no
    ledger and draws a NEW planning size, charged nowhere.  The server sees one bit
    ``n + Z_i >= K`` per message until the artist accepts (a geometric count of refusals: for K = 100
    uncharged epsilon(1e-5) 0.7 at n = 90, 2.6 at n = 120, 3.8 at n = 130, against an announced 0.6,
    computed by the reviewer from the geometric law of the refusals).  Now the size is kept before the
    plan reads it, and a refusal is kept as a retirement whose report (the size's count) is signed
    before the withdrawal leaves.  (At epsilon 0.6 a size above the rule now plans without DP-SGD
    instead of refusing, see the next test, so the refusal here is a FAKE planner's, for every size.)"""
    drawn: list[int] = []
    real = artist_privacy.noisy_portfolio_size

    def no_plan_fits(*args, **kwargs):  # FAKE plan_participation: this announcement fits no planning size
        raise PrivacyError("no noise fits (fake planner)")

    monkeypatch.setattr(artist_privacy, "plan_participation", no_plan_fits)

    def spy(n, noise):  # SPY: records each draw, then draws as the artist does
        size = real(n, noise)
        drawn.append(size)
        return size

    run = Run(tmp_path / "run", data, "none", 0.6)
    phase = run.federation.coordinator.plan().phase.value
    run.federation.run_phase()  # the genuine first DP message: every artist refuses the plan
    inbox, reply = run.grid.sent(PHASE_ACTIONS[phase], run.nodes[TARGET])
    assert reply.withdrawal is not None and reply.upload is None
    stored = ArtistStateStore(run.state[TARGET]).load()
    assert stored is not None and stored.retired is not None and stored.ledger is not None
    assert [m.get("what") for m in stored.ledger["mechanisms"]] == [PORTFOLIO_SIZE_RELEASE]  # the count, charged
    reports = run.configs.artists[TARGET].parent / "reports"
    assert report_path(reports, TARGET, 0).is_file(), "the count is reported before the withdrawal leaves"

    monkeypatch.setattr(artist_privacy, "noisy_portfolio_size", spy)
    refusals = 0
    for _ in range(5):  # the server resends the message
        again = run.deliver(TARGET, phase, copied(inbox))
        refusals += again.withdrawal is not None
    assert refusals == 5
    # one planning size per ledger: the first message's (kept), never a fresh uncharged one per message
    assert drawn == [], f"the artist drew {len(drawn)} new planning sizes, none charged: {drawn}"


@pytest.mark.usefixtures("outside_runtime")
def test_an_announcement_only_a_plan_without_dp_sgd_fits_is_answered_alike_on_both_sides_of_the_rule(tmp_path, data):
    """Epsilon 0.6: the size's count plus the final release leave nothing for DP-SGD.  A size above
    ``client.min_training_artworks`` refused the plan (a withdrawal and the count's report) while a
    size below it was accepted and sat a non-refresh publish out silently: the answer told the side of
    the rule (a fourth review, 2026-12-01).  Where no DP-SGD fits, a participation plan now runs
    without it, on both sides alike."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = Run(tmp_path / f"run-{min_training}", data, "none", 0.6)
        toml = run.configs.artists[TARGET]
        toml.write_text(
            toml.read_text().replace("min_training_artworks = 1", f"min_training_artworks = {min_training}")
        )
        phase = run.federation.coordinator.plan().phase.value
        run.federation.run_phase()  # the genuine first DP message
        _, reply = run.grid.sent(PHASE_ACTIONS[phase], run.nodes[TARGET])
        stored = ArtistStateStore(run.state[TARGET]).load()
        assert stored is not None and stored.retired is None
        outcomes[min_training] = (phase, reply.withdrawal is None, bool(reply.upload), bool(reply.publication))
    assert outcomes[1] == outcomes[1000], f"the answer depends on the side of the rule: {outcomes}"
    assert outcomes[1][1], "a plan without DP-SGD takes part"


@pytest.mark.usefixtures("outside_runtime")
def test_a_contribution_read_off_the_planning_size_leaves_only_under_a_signed_report(tmp_path, data):
    """A DP artist whose planning size is below ``client.min_training_artworks`` runs no DP-SGD and
    sends the broadcast back in every training round: what leaves depends on the planning size, a DP
    count charged to its ledger.  No report is signed before that contribution leaves (only DP-SGD or
    a release signs one), so a server ending the run after the training rounds leaves the artist
    with a charged ledger and no report at all, which the audit reads as an artist that never joined
    (README: "Every DP artist signs at least the report of its planning count")."""
    run = Run(tmp_path / "run", data, "none", 8.0)
    toml = run.configs.artists[TARGET]
    toml.write_text(toml.read_text().replace("min_training_artworks = 1", "min_training_artworks = 1000"))
    run.until("contribute", round_id=1)
    run.federation.run_phase()
    _, reply = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[TARGET])
    assert reply.upload is not None and reply.withdrawal is None  # the contribution left
    stored = ArtistStateStore(run.state[TARGET]).load()
    assert stored is not None and stored.ledger is not None
    assert stored.ledger["mechanisms"], "the planning size's count is charged"
    reports = run.configs.artists[TARGET].parent / "reports" / TARGET
    signed = sorted(reports.glob("round-*.json")) if reports.is_dir() else []
    assert reply.reports or signed, "a charged ledger whose planning size shaped a contribution, and no signed report"


@pytest.mark.usefixtures("outside_runtime")
def test_a_dp_plan_announcing_release_rounds_outside_the_run_is_refused(tmp_path, data, monkeypatch):
    """The announced ``release_rounds`` are read unchecked (``announced_dp``): a plan of 1 training round
    may list any number of refreshes at rounds that never come.  Each one is planned (and calibrated:
    ``_plan_with_epsilons`` evaluates every prefix of them, quadratic), so a plan message of a few
    hundred KB keeps an artist's planning busy for hours, at every Flower message (measured by the
    reviewer: 1,000 phantom rounds 49 s plain, 100 rounds 60 s with ``compact_memory``), and the
    budget they reserve is never spent (the final release's sigma 0.605 -> 0.727 for one phantom
    round).  An artist refuses release rounds outside its run (``check_release_rounds``)."""
    run = Run(tmp_path / "run", data, "none", 8.0)
    servicer = run.federation.servicer
    genuine = servicer._dp_parameters

    def phantom():  # the dishonest server's announcement: 40 refreshes after the run's last round
        announced = genuine()
        assert announced is not None
        announced.release_rounds.extend(range(1000, 1040))
        return announced

    monkeypatch.setattr(servicer, "_dp_parameters", phantom)
    phase = run.federation.coordinator.plan().phase.value
    run.federation.run_phase()
    inbox, reply = run.grid.sent(PHASE_ACTIONS[phase], run.nodes[TARGET])
    assert len(inbox.plan.dp.release_rounds) >= 40 and inbox.plan.total_rounds < 1000
    assert reply.upload is None and reply.publication is None, "planned 40 refreshes that never come, took part"
    assert reply.withdrawal is not None
