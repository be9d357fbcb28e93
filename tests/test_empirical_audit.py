"""Empirical (canary) privacy audit: the one-run lower bound and real Opacus training runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.experiments.canary_audit import CanaryAuditConfig, run_canary_audit, score_guesses
from fedstyle_secure.privacy.empirical import (
    epsilon_lower_bound,
    guess_p_value,
    max_lower_bound,
)

# Small enough for the default test run (about 1 s per training run on 2 cores).
FAST = CanaryAuditConfig(epsilon=1.0, canaries=1000, train_points=100, epochs=8, seed=0)


# --- the bound -------------------------------------------------------------------------------


def test_all_correct_known_answer() -> None:
    # P[Bin(r, p) >= r] = p^r = beta  =>  p = beta^(1/r)
    for r in (10, 100, 1000):
        p = 0.05 ** (1.0 / r)
        assert epsilon_lower_bound(r, r, 0.95) == pytest.approx(math.log(p / (1 - p)), rel=1e-9)
    assert max_lower_bound(1000) == pytest.approx(5.809, abs=1e-3)
    assert max_lower_bound(100) == pytest.approx(3.493, abs=1e-3)


def test_chance_level_gives_zero() -> None:
    assert epsilon_lower_bound(200, 100) == 0.0
    assert epsilon_lower_bound(200, 0) == 0.0
    assert epsilon_lower_bound(1000, 520) < 0.05  # within noise of chance


def test_bound_is_the_boundary_of_the_binomial_test() -> None:
    for r, v in [(200, 150), (1000, 600), (50, 49)]:
        eps = epsilon_lower_bound(r, v, 0.95)
        assert guess_p_value(r, v, eps) == pytest.approx(0.05, rel=1e-6)
        assert guess_p_value(r, v, eps + 0.01) > 0.05  # larger eps: plausible, not refuted
        assert stats.binom.sf(v - 1, r, 1 / (1 + math.exp(-(eps - 0.01)))) < 0.05  # smaller: refuted


def _appendix_d_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's reference loop (App. D), written independently of the vectorised code."""
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    alpha = running = 0.0
    for i in range(1, v + 1):
        running += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, running / i)
    return min(1.0, tail + alpha * delta * 2 * m)


@pytest.mark.parametrize(
    "m, r, v, eps, delta", [(1000, 200, 180, 1.5, 1e-5), (1000, 200, 200, 4.0, 1e-4), (50, 40, 30, 0.3, 1e-3)]
)
def test_delta_p_value_matches_reference_loop(m: int, r: int, v: int, eps: float, delta: float) -> None:
    assert guess_p_value(r, v, eps, canaries=m, delta=delta) == pytest.approx(
        _appendix_d_p_value(m, r, v, eps, delta), rel=1e-9
    )


def test_delta_makes_the_bound_smaller_and_zero_delta_agrees_with_closed_form() -> None:
    pure = epsilon_lower_bound(200, 180)
    assert epsilon_lower_bound(200, 180, canaries=1000, delta=1e-12) == pytest.approx(pure, abs=1e-6)
    with_delta = epsilon_lower_bound(200, 180, canaries=1000, delta=1e-4)
    assert 0 < with_delta < pure
    assert guess_p_value(200, 180, with_delta, canaries=1000, delta=1e-4) == pytest.approx(0.05, rel=1e-6)
    with pytest.raises(PrivacyError, match="canaries >= guesses"):
        epsilon_lower_bound(200, 180, delta=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.data())
def test_monotone_in_correct_and_confidence(r: int, data: st.DataObject) -> None:
    v = data.draw(st.integers(0, r - 1))
    assert epsilon_lower_bound(r, v + 1) >= epsilon_lower_bound(r, v)
    assert epsilon_lower_bound(r, v, 0.99) <= epsilon_lower_bound(r, v, 0.9)
    assert 0.0 <= epsilon_lower_bound(r, v) <= max_lower_bound(r)


def test_bound_is_valid_for_an_exactly_eps_dp_mechanism() -> None:
    """Randomised response with epsilon = 1 on each canary's coin: the 95 % bound may exceed 1
    in at most ~5 % of runs (binomial slack: 400 runs, expected <= 20)."""
    rng = np.random.default_rng(7)
    eps, m, runs = 1.0, 500, 400
    truthful = rng.random((runs, m)) < 1 / (1 + math.exp(-eps))  # RR reports the coin truthfully
    exceed = sum(epsilon_lower_bound(m, int(row.sum())) > eps for row in truthful)
    assert exceed <= 30
    assert np.median([epsilon_lower_bound(m, int(row.sum())) for row in truthful[:50]]) > 0.5  # and not vacuous


def test_invalid_inputs_raise() -> None:
    with pytest.raises(PrivacyError, match="correct"):
        epsilon_lower_bound(10, 11)
    with pytest.raises(PrivacyError, match="confidence"):
        epsilon_lower_bound(10, 5, 1.0)


def test_score_guesses_counts_top_and_bottom() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, False, True, False, True, False])
    # in-guesses: scores 5, 4 (1 right); out-guesses: scores 1, 0 (1 right)
    assert score_guesses(scores, included, 2) == (4, 2)
    assert score_guesses(scores, included, 10) == (6, 4)


# --- real DP-SGD runs (Opacus, train_local) ----------------------------------------------------


def test_honest_run_consistent_and_broken_runs_caught_fast() -> None:
    honest = run_canary_audit("honest", FAST)
    assert honest.claimed_epsilon == pytest.approx(1.0, abs=0.02)
    assert honest.lower_bound <= honest.claimed_epsilon and not honest.violation
    for broken in ("no-noise", "no-clip"):
        result = run_canary_audit(broken, FAST)
        assert result.claimed_epsilon == pytest.approx(honest.claimed_epsilon, abs=0.02)  # the (wrong) honest claim
        assert result.lower_bound > 2.0 * result.claimed_epsilon, result
        assert result.verdict == "VIOLATION"


@pytest.mark.parametrize("epsilon", [2.0, pytest.param(8.0, marks=pytest.mark.slow)])
def test_default_size_audit(epsilon: float) -> None:
    """The audit at its default size (about 6 s at epsilon 2, so CI runs it: when federated rounds'
    default optimiser became SGD the audit's no-noise run fell to 164 of 200 right guesses, and only
    this test, then all slow, could see it)."""
    cfg = CanaryAuditConfig(epsilon=epsilon)
    honest = run_canary_audit("honest", cfg)
    assert honest.lower_bound <= honest.claimed_epsilon
    for broken in ("no-noise", "no-clip"):
        result = run_canary_audit(broken, cfg)
        assert result.lower_bound > 2.5  # far above every honest run measured (< 1 over 5 seeds)
        # a 200-guess audit certifies at most 4.19: it refutes the claim at epsilon 2, not at 8
        assert result.verdict == ("VIOLATION" if epsilon == 2.0 else "untestable")


# --- CLI ---------------------------------------------------------------------------------------


def _cli(*extra: str) -> list[str]:
    return [
        "audit",
        "--empirical",
        "--epsilon",
        "1",
        "--canaries",
        "400",
        "--train-points",
        "100",
        "--epochs",
        "4",
        *extra,
    ]


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli("--config", "honest")) == 0
    assert "consistent" in capsys.readouterr().out
    assert main(_cli("--config", "no-noise", "--json")) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["configuration"] == "no-noise" and row["verdict"] == "VIOLATION"
    assert row["lower_bound"] > row["claimed_epsilon"]


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit"]) == 2
    assert "report file" in capsys.readouterr().err
    assert main(["audit", "--empirical", "somewhere"]) == 2
    assert "no PATH" in capsys.readouterr().err
    assert main(["audit", "--empirical", "--canaries", "1"]) == 2
    assert main(["audit", "--empirical", "--epsilon", "0"]) == 2
    assert "--epsilon" in capsys.readouterr().err
