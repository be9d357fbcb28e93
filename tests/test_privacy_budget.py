"""Budget enforcement, ledger persistence, delta policy and noise calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from opacus.accountants.utils import get_noise_multiplier

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.calibration import (
    calibrate_noise_multiplier,
    calibrate_release_sigma,
    default_delta,
    validate_delta,
)
from fedstyle_secure.privacy.ledger_store import load_ledger, save_ledger
from fedstyle_secure.privacy.mechanisms import DpSgdSteps, GaussianRelease

DELTA = 1e-5


def sgd(steps: int, round_id: int = 0, q: float = 0.01, sigma: float = 1.0, sampler: str = "poisson") -> DpSgdSteps:
    return DpSgdSteps(
        sample_rate=q, noise_multiplier=sigma, steps=steps, clip_norm=1.0, round_id=round_id, sampler=sampler
    )


@pytest.fixture
def ledger() -> BudgetLedger:
    """Budget epsilon 2.0; after 1000 steps at q=0.01, sigma=1 about 1.84 is spent (PRV)."""
    ledger = BudgetLedger(PrivacyBudget(epsilon=2.0, delta=DELTA), dataset_size=1000)
    ledger.record([sgd(1000)])
    return ledger


def test_recorded_spend_is_the_accountants_epsilon(ledger: BudgetLedger) -> None:
    assert ledger.epsilon_spent == pytest.approx(1.84, rel=0.01)
    assert ledger.remaining_epsilon() == pytest.approx(2.0 - ledger.epsilon_spent)


def test_planned_spend_over_budget_is_refused_and_nothing_is_recorded(ledger: BudgetLedger) -> None:
    planned = [sgd(500, round_id=1)]
    decision = ledger.check_can_spend(planned)
    assert not decision.allowed
    assert decision.epsilon_after > 2.0
    assert "would exceed" in decision.reason
    with pytest.raises(PrivacyError, match="privacy budget refused"):
        ledger.record(planned)
    assert ledger.history == (sgd(1000),)
    small = [GaussianRelease(sensitivity=1.0, sigma=50.0, round_id=1, what="style-prototype")]
    assert ledger.check_can_spend(small).allowed


def test_ledger_round_trips_through_json_and_a_restarted_ledger_still_refuses(ledger: BudgetLedger) -> None:
    restored = BudgetLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored.history == ledger.history
    assert restored.budget == ledger.budget and restored.created_at == ledger.created_at
    assert restored.epsilon_spent == pytest.approx(ledger.epsilon_spent)
    assert not restored.check_can_spend([sgd(500, round_id=1)]).allowed


def test_ledger_file_is_written_atomically_and_reloads(ledger: BudgetLedger, tmp_path: Path) -> None:
    path = tmp_path / "client" / "privacy_ledger.json"
    save_ledger(ledger, path)
    ledger.record([GaussianRelease(sensitivity=1.0, sigma=50.0, round_id=1, what="style-prototype")])
    save_ledger(ledger, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["privacy_ledger.json"]  # no temp files left
    reloaded = load_ledger(path)
    assert reloaded.history == ledger.history
    with pytest.raises(PrivacyError, match="privacy budget refused"):
        reloaded.record([sgd(500, round_id=2)])


def test_loading_a_ledger_over_its_budget_or_malformed_fails(ledger: BudgetLedger) -> None:
    state = ledger.to_dict()
    state["budget"]["epsilon"] = 1.0
    with pytest.raises(PrivacyError, match="over its budget"):
        BudgetLedger.from_dict(state)
    with pytest.raises(PrivacyError, match="not a privacy ledger"):
        BudgetLedger.from_dict({"format": "something else"})


def test_non_poisson_spend_is_never_allowed(ledger: BudgetLedger) -> None:
    with pytest.raises(PrivacyError, match="Poisson"):
        ledger.check_can_spend([sgd(1, round_id=1, sampler="shuffle")])


@pytest.mark.parametrize("delta", [1e-3, 2e-3, 0.5])
def test_delta_not_below_one_over_n_is_rejected(delta: float) -> None:
    with pytest.raises(PrivacyError, match=r"not below 1/n = 1/1000") as info:
        BudgetLedger(PrivacyBudget(epsilon=8.0, delta=delta), dataset_size=1000)
    assert "artworks" in str(info.value)


def test_default_delta_policy() -> None:
    assert default_delta(200) == 1e-5
    assert default_delta(1_000_000) == pytest.approx(1e-7)
    # rounded down to a power of ten: the delta every report states does not name n (1/(10 n) did)
    assert default_delta(12_345) == default_delta(99_999) == 1e-6
    for n in (1, 10, 200, 10**6):
        validate_delta(default_delta(n), n)
    with pytest.raises(PrivacyError, match="dataset size"):
        default_delta(0)


def test_invalid_budget_is_rejected() -> None:
    with pytest.raises(PrivacyError, match="epsilon"):
        PrivacyBudget(epsilon=0.0, delta=DELTA)
    with pytest.raises(PrivacyError, match="delta"):
        PrivacyBudget(epsilon=1.0, delta=0.0)


@pytest.mark.parametrize(("accountant", "target"), [("prv", 2.0), ("rdp", 2.0), ("rdp", 8.0)])
def test_calibrated_noise_multiplier_hits_the_target(accountant: str, target: float) -> None:
    multiplier = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=0.01, steps=1000, accountant=accountant
    )
    epsilon = compute_epsilon([sgd(1000, sigma=multiplier)], DELTA, accountant)
    assert 0.99 * target <= epsilon <= target


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")  # Opacus's first bracket
def test_calibration_agrees_with_opacus_get_noise_multiplier() -> None:
    ours = calibrate_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=0.02, steps=500, accountant="rdp")
    opacus = get_noise_multiplier(target_epsilon=3.0, target_delta=DELTA, sample_rate=0.02, steps=500, accountant="rdp")
    assert ours == pytest.approx(opacus, rel=0.02)


def test_calibration_accounts_for_the_history_already_spent() -> None:
    history = [sgd(1000)]
    multiplier = calibrate_noise_multiplier(
        target_epsilon=3.0, delta=DELTA, sample_rate=0.01, steps=1000, accountant="rdp", history=history
    )
    epsilon = compute_epsilon([*history, sgd(1000, round_id=1, sigma=multiplier)], DELTA, "rdp")
    assert 0.99 * 3.0 <= epsilon <= 3.0
    with pytest.raises(PrivacyError, match="already spends"):
        calibrate_noise_multiplier(target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=10, history=history)


def test_calibrated_release_sigma_hits_its_epsilon_share() -> None:
    sigma = calibrate_release_sigma(epsilon=0.5, delta=DELTA, sensitivity=0.25)
    release = GaussianRelease(sensitivity=0.25, sigma=sigma, round_id=0, what="style-prototype")
    assert 0.99 * 0.5 <= compute_epsilon([release], DELTA) <= 0.5


@pytest.mark.parametrize(
    "epsilon_at",
    [
        lambda m: 3.0 / m,  # a power law, as DP-SGD's epsilon nearly is
        lambda m: 40.0 * math.exp(-3.0 * m),  # steep: far from a power law
        lambda m: 5.0 / m**0.5 + 0.2 / m**3,  # two regimes
        lambda m: math.inf if m < 0.1 else 2.0 / m,  # unevaluable below 0.1 (as PRV for tiny noise)
    ],
)
@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
def test_the_noise_search_lands_in_the_band_and_never_returns_an_overspending_multiplier(epsilon_at, target):
    """Unit test of the pure search (fake epsilon curves, no accountant): the returned multiplier's
    epsilon is in ``[0.99 target, target]``, in at most 9 evaluations (plain bisection took up to 13
    on these curves; each evaluation is a PRV composition)."""
    from fedstyle_secure.privacy.calibration import _search_noise_multiplier

    calls: list[float] = []

    def counted(m: float) -> float:
        calls.append(m)
        return epsilon_at(m)

    found = _search_noise_multiplier(counted, target, 0.01)
    assert 0.99 * target <= epsilon_at(found) <= target
    assert len(calls) <= 9, calls
