"""Known answers and properties of the project's accountant and the independent recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy import optimize
from scipy.stats import norm

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.accounting import RDP_ORDERS, compute_epsilon
from fedstyle_secure.privacy.mechanisms import (
    DpSgdSteps,
    GaussianRelease,
    Mechanism,
    history_from_list,
    history_to_list,
)
from fedstyle_secure.privacy.recompute import recompute_epsilon_pld, recompute_epsilon_rdp

DELTA = 1e-5
# (sample rate, noise multiplier, steps, PLD epsilon, RDP epsilon) of a Poisson-subsampled Gaussian.
KNOWN_ANSWERS = [(0.01, 1.0, 1000, 1.83, 2.10), (0.00427, 1.1, 14062, 2.38, 2.60)]


def sgd(q: float, sigma: float, steps: int, round_id: int = 0, sampler: str = "poisson") -> DpSgdSteps:
    return DpSgdSteps(
        sample_rate=q, noise_multiplier=sigma, steps=steps, clip_norm=1.0, round_id=round_id, sampler=sampler
    )


@pytest.mark.parametrize(("q", "sigma", "steps", "pld", "rdp"), KNOWN_ANSWERS)
def test_known_answers_of_both_libraries(q: float, sigma: float, steps: int, pld: float, rdp: float) -> None:
    history = [sgd(q, sigma, steps)]
    assert compute_epsilon(history, DELTA, "prv") == pytest.approx(pld, rel=0.01)
    assert compute_epsilon(history, DELTA, "rdp") == pytest.approx(rdp, rel=0.01)
    assert recompute_epsilon_pld(history, DELTA) == pytest.approx(pld, rel=0.01)
    assert recompute_epsilon_rdp(history, DELTA) == pytest.approx(rdp, rel=0.01)


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 1.0, 1000), (0.2, 3.0, 7), (0.05, 1.5, 3000)])
def test_project_rdp_matches_dp_accounting_rdp(q: float, sigma: float, steps: int) -> None:
    """Same orders and the same improved conversion: agreement to 1e-4, not just 1 %."""
    history: list[Mechanism] = [
        sgd(q, sigma, steps),
        GaussianRelease(sensitivity=1.0, sigma=40.0, round_id=0, what="prototype"),
    ]
    assert compute_epsilon(history, DELTA, "rdp") == pytest.approx(recompute_epsilon_rdp(history, DELTA), rel=1e-4)


def test_at_large_epsilon_dp_accounting_rdp_is_looser_but_within_tolerance() -> None:
    """dp_accounting 0.6 drops small fractional orders whose series fails its convergence test
    (q=0.05, sigma=0.8: orders 1.1-1.3), so its RDP is slightly looser than Opacus's; both stay
    sound (above the tight PLD value)."""
    history = [sgd(0.05, 0.8, 300)]
    ours, theirs = compute_epsilon(history, DELTA, "rdp"), recompute_epsilon_rdp(history, DELTA)
    assert recompute_epsilon_pld(history, DELTA) < ours <= theirs < ours * 1.01


def test_improved_rdp_conversion_is_tighter_than_the_classic_one() -> None:
    """Classic eps = min_a rdp(a) + log(1/delta)/(a-1) gives 2.54 here; the improved one 2.10."""
    rdp = opacus_rdp.compute_rdp(q=0.01, noise_multiplier=1.0, steps=1000, orders=list(RDP_ORDERS))
    classic = float(np.min(rdp + math.log(1 / DELTA) / (np.asarray(RDP_ORDERS) - 1)))
    assert classic == pytest.approx(2.54, rel=0.01)
    assert compute_epsilon([sgd(0.01, 1.0, 1000)], DELTA, "rdp") < 0.85 * classic


def analytic_gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism (Balle & Wang 2018, Thm. 8)."""

    def excess(epsilon: float) -> float:
        a, b = 1 / (2 * noise_multiplier), epsilon * noise_multiplier
        return norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b) - delta

    return optimize.brentq(excess, 0.0, 100.0)


def test_gaussian_release_is_a_full_batch_step_and_matches_the_analytic_gaussian() -> None:
    release = GaussianRelease(sensitivity=0.5, sigma=1.5, round_id=2, what="style-prototype")
    assert release.noise_multiplier == 3.0
    step = sgd(1.0, 3.0, 1)
    exact = analytic_gaussian_epsilon(3.0, DELTA)
    for accountant in ("prv", "rdp", "gdp"):
        assert compute_epsilon([release], DELTA, accountant) == pytest.approx(
            compute_epsilon([step], DELTA, accountant)
        )
    assert recompute_epsilon_pld([release], DELTA) == pytest.approx(exact, rel=0.01)
    assert compute_epsilon([release], DELTA, "prv") == pytest.approx(exact, abs=0.011)  # PRV eps_error 0.01
    assert compute_epsilon([release], DELTA, "gdp") == pytest.approx(exact, rel=1e-6)  # mu-GDP is exact here
    assert recompute_epsilon_rdp([release], DELTA) > exact


def test_gdp_underestimates_where_pld_is_the_sound_reference() -> None:
    history = [sgd(0.01, 1.0, 1000)]
    assert compute_epsilon(history, DELTA, "gdp") < 0.9 * recompute_epsilon_pld(history, DELTA)


def test_heterogeneous_history_agrees_between_libraries() -> None:
    history = [sgd(0.02, 1.0, 100, r) for r in range(3)] + [
        GaussianRelease(sensitivity=1.0, sigma=4.0, round_id=r, what="prototype") for r in range(3)
    ]
    assert compute_epsilon(history, DELTA, "prv") == pytest.approx(recompute_epsilon_pld(history, DELTA), rel=0.01)
    assert compute_epsilon(history, DELTA, "rdp") == pytest.approx(recompute_epsilon_rdp(history, DELTA), rel=1e-4)


def test_empty_history_spends_nothing() -> None:
    assert compute_epsilon([], DELTA, "prv") == 0.0


def test_non_poisson_sampler_is_refused_by_both_accountings() -> None:
    history = [sgd(0.01, 1.0, 10, sampler="shuffle")]
    with pytest.raises(PrivacyError, match="Poisson"):
        compute_epsilon(history, DELTA)
    with pytest.raises(PrivacyError, match="Poisson"):
        recompute_epsilon_pld(history, DELTA)


def test_invalid_parameters_are_named() -> None:
    with pytest.raises(PrivacyError, match="unknown accountant 'moments'"):
        compute_epsilon([sgd(0.01, 1.0, 10)], DELTA, "moments")
    with pytest.raises(PrivacyError, match="sample_rate"):
        sgd(1.5, 1.0, 10)
    with pytest.raises(PrivacyError, match="sigma"):
        GaussianRelease(sensitivity=1.0, sigma=0.0, round_id=0, what="x")
    with pytest.raises(PrivacyError, match="delta"):
        compute_epsilon([sgd(0.01, 1.0, 10)], 1.0)


def test_history_round_trips_through_json_dicts() -> None:
    history = (sgd(0.01, 1.0, 10, 3, "uniform"), GaussianRelease(sensitivity=0.5, sigma=2.0, round_id=3, what="p"))
    assert history_from_list(history_to_list(history)) == history
    with pytest.raises(PrivacyError, match="unknown mechanism kind"):
        history_from_list([{"kind": "laplace"}])


mechanisms = st.one_of(
    st.builds(sgd, st.floats(0.001, 0.2), st.floats(0.6, 5.0), st.integers(1, 300)),
    st.builds(GaussianRelease, st.floats(0.1, 2.0), st.floats(0.5, 20.0), st.just(0), st.just("p")),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(mechanisms, min_size=1, max_size=4), mechanisms, st.sampled_from(["rdp", "gdp"]))
def test_epsilon_never_decreases_when_mechanisms_are_added(history, extra, accountant: str) -> None:
    before = compute_epsilon(history, DELTA, accountant)
    after = compute_epsilon([*history, extra], DELTA, accountant)
    assert after >= before
    assert compute_epsilon([extra, *history], DELTA, accountant) == pytest.approx(after)  # order-free


def test_absurd_budget_gets_a_clear_error_naming_the_prv_accountant():
    """Opacus's PRV breaks down numerically for tiny noise; the user must learn why, not see its RuntimeError."""
    from fedstyle_secure.privacy.plan import DpConfig, plan_dp

    with pytest.raises(PrivacyError, match="prv accountant cannot evaluate noise multiplier .*--accountant rdp"):
        plan_dp(
            DpConfig(epsilon=1e4, min_training_artworks=1),
            dataset_size=50,
            batch_size=16,
            local_epochs=2,
            rounds=5,
            training_releases=3,
        )
    assert (
        plan_dp(DpConfig(epsilon=1e4, accountant="rdp", min_training_artworks=1), 50, 16, 2, 5, 3).noise_multiplier > 0
    )


def test_a_plan_whose_reports_the_intake_would_refuse_is_refused_before_the_run():
    """The bounds of an auditable history (mechanisms.MAX_RUN_ROUNDS, MAX_DP_SGD_STEPS): an honest
    artist learns at planning, not when the server refuses its reports mid-run."""
    from fedstyle_secure.privacy.mechanisms import MAX_RUN_ROUNDS
    from fedstyle_secure.privacy.plan import DpConfig, plan_dp

    with pytest.raises(PrivacyError, match=f"at most {MAX_RUN_ROUNDS} rounds, got {MAX_RUN_ROUNDS + 1}"):
        plan_dp(DpConfig(epsilon=8.0), 500, 16, 1, MAX_RUN_ROUNDS + 1, 0)
    with pytest.raises(PrivacyError, match="2000000 DP-SGD steps, more than an auditable history holds"):
        plan_dp(DpConfig(epsilon=8.0), 10**6, 1, 2, 1, 0)  # two epochs of a million batches of one artwork


def test_announced_refreshes_outside_the_run_or_beyond_the_cap_are_refused_before_planning():
    """A dishonest server's release rounds (ninth attack review): refreshes past the run's end reserve
    budget never spent, and each announced refresh is calibrated before the artist acts."""
    from fedstyle_secure.privacy.plan import MAX_PROTOTYPE_REFRESHES, DpConfig, plan_dp

    rule = DpConfig(epsilon=8.0)
    with pytest.raises(
        PrivacyError, match=r"refreshes at rounds \[3, 1000\] lie outside the run's training rounds 0..2"
    ):
        plan_dp(rule, 50, 16, 1, 3, 3, frozenset({0, 3, 1000}))
    many = frozenset(range(MAX_PROTOTYPE_REFRESHES + 1))
    with pytest.raises(PrivacyError, match=f"at most {MAX_PROTOTYPE_REFRESHES} prototype refreshes per run"):
        plan_dp(rule, 50, 16, 1, 100, len(many), many)
    with pytest.raises(PrivacyError, match=f"prototype refreshes must be in 0..{MAX_PROTOTYPE_REFRESHES}"):
        DpConfig(epsilon=8.0, prototype_refreshes=MAX_PROTOTYPE_REFRESHES + 1).validate()
    assert plan_dp(rule, 50, 16, 1, 3, 2, frozenset({0, 2})).release_sigma is not None  # inside the run: planned


@pytest.mark.parametrize(
    ("round_id", "release", "final", "latest", "words"),
    [
        (0, False, False, None, None),  # DP-SGD of round 0
        (1, True, False, 0, None),  # the announced refresh of round 1, after round 0's charges
        (3, True, True, 2, None),  # the final publication at the final round
        (1, True, False, 1, None),  # a release in the round that was just trained
        (0, True, False, 3, "round 0 comes after round 3 was charged"),  # a refresh after the final one
        (4, True, True, 3, "round 4 is past the plan's final round 3"),  # a second final publication
        (3, False, False, 2, "no DP-SGD in the final round 3"),
        (1, True, True, 0, "the final publication at round 1"),
        (3, True, False, 2, "a training-time release at round 3"),
        (2, True, False, 1, "a prototype release at round 2 that the announced plan did not count"),
    ],
)
def test_a_charge_outside_the_plans_schedule_is_refused(round_id, release, final, latest, words):
    """Pure rule of ``DpPlan.charge_refusal`` (3 training rounds, refreshes at 0 and 1, the final
    publication at round 3): charges come in round order and end with the final publication."""
    from fedstyle_secure.privacy.plan import DpConfig, plan_dp

    plan = plan_dp(DpConfig(epsilon=8.0, min_training_artworks=1), 50, 16, 2, 3, 2, frozenset({0, 1}))
    assert plan.final_round == 3
    refusal = plan.charge_refusal(round_id, release=release, final=final, latest_charged=latest)
    assert refusal is None if words is None else words in (refusal or "")


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_every_announcement_is_planned_alike_on_both_sides_of_the_portfolio_size_rule(accountant):
    """A participation plan's refusal must not depend on the side of ``min_training_artworks`` (it
    would tell the server the side before any report covers the count): for small epsilons with a
    refresh, a plan without DP-SGD could not fit what a DP-SGD plan could (0.55-0.65 at one refresh),
    and a DP-SGD plan with an announced noise multiplier was accepted unchecked, over the budget."""
    from fedstyle_secure.errors import PrivacyError
    from fedstyle_secure.privacy.accounting import compute_epsilon
    from fedstyle_secure.privacy.plan import DpConfig, plan_participation
    from fedstyle_secure.training.local import LocalConfig

    def outcome(epsilon: float, size: int, multiplier: float | None) -> str:
        rule = DpConfig(
            epsilon=epsilon, delta=1e-5, accountant=accountant, noise_multiplier=multiplier, min_training_artworks=100
        )
        try:
            plan = plan_participation(rule, size, LocalConfig(), 2, frozenset({0}))
        except PrivacyError:
            return "refused"
        assert compute_epsilon(plan.run_mechanisms(), plan.delta, accountant) <= epsilon * 1.01
        return "planned"

    for epsilon, multiplier in [(e, None) for e in (0.45, 0.55, 0.6, 0.65, 0.8)] + [(0.5, 1.0), (2.0, 0.8), (8.0, 0.3)]:
        below, above = outcome(epsilon, 99, multiplier), outcome(epsilon, 150, multiplier)
        assert below == above, f"epsilon {epsilon}, multiplier {multiplier}: {below} below the rule, {above} above it"
