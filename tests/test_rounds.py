"""The round rules (federation/rounds.py) that the simulator and the server's coordinator share."""

from __future__ import annotations

import pytest

from fedstyle_secure.federation.coordinator import Coordinator, Schedule
from fedstyle_secure.federation.rounds import (
    FINAL,
    SETUP,
    TRAIN,
    RoundRules,
    plan_round,
    refresh_rounds,
    round_id_of,
    round_kind,
)
from fedstyle_secure.federation.simulator import SimulationConfig, round_rules
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.privacy.plan import DpConfig


def test_one_numbering_setup_training_final() -> None:
    assert [round_kind(i, 3) for i in range(5)] == [SETUP, TRAIN, TRAIN, TRAIN, FINAL]
    assert [plan_round(i) for i in (1, 2, 3, 4)] == [0, 1, 2, 3]  # the final publication is plan round R
    assert all(round_id_of(plan_round(i)) == i for i in range(1, 10))
    with pytest.raises(ValueError, match="set-up round"):
        plan_round(0)


def test_refreshes_are_evenly_spaced_from_round_zero() -> None:
    assert refresh_rounds(6, None) == frozenset(range(6))
    assert refresh_rounds(6, 3) == frozenset({0, 2, 4})
    assert refresh_rounds(2, 3) == frozenset({0, 1})


@pytest.mark.parametrize(
    ("algorithm", "refreshed", "sent"),
    [
        ("fedstyle", {1, 3, 4}, {1, 3, 4}),
        ("fedproto", {1, 3, 4}, {1, 3, 4}),
        ("local", {1, 3, 4}, {4}),
        ("fedavg", {4}, {4}),
    ],
)
def test_who_refreshes_and_who_sends(algorithm: str, refreshed: set[int], sent: set[int]) -> None:
    """Refreshes happen for algorithms that use prototypes; only sharing algorithms send them to the
    server; the final publication (id R + 1) always does both."""
    rules = RoundRules(algorithm_spec(algorithm), rounds=3, refreshes=frozenset({0, 2}))
    assert {i for i in range(5) if rules.refreshes_prototypes(i)} == refreshed
    assert {i for i in range(5) if rules.sends_prototypes(i)} == sent
    assert rules.release_plan_rounds() == frozenset(plan_round(i) for i in refreshed - {rules.final_round_id})


def test_simulator_and_server_derive_the_same_rules() -> None:
    """The simulator's rules from its config and the coordinator's from the schedule the server
    is launched with (`fedstyle launch` passes refresh_rounds of the same DP config)."""
    dp = DpConfig(epsilon=4.0, prototype_refreshes=2)
    config = SimulationConfig(algorithm="fedstyle", rounds=5, dp=dp)
    schedule = Schedule(algorithm="fedstyle", rounds=5, refreshes=refresh_rounds(5, dp.prototype_refreshes))
    coordinator = Coordinator.__new__(Coordinator)  # unit test: only the rules, no roster or state
    coordinator.schedule = schedule
    assert coordinator.rules == round_rules(config)
    assert coordinator.rules.release_plan_rounds() == round_rules(config).release_plan_rounds() == frozenset({0, 2})
