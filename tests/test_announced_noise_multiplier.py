"""An announced ``noise_multiplier`` (a field of the DP announcement the server controls) reached
only a plan WITH DP-SGD (a helper's review, 2026-12-01): a plan without DP-SGD (planning size below
``client.min_training_artworks``) ignores it, and a DP-SGD plan with a given multiplier was never
checked against the budget.  So (1) a first announcement no plan without DP-SGD can fit was planned
above the rule, and (2) a changed multiplier after an accepted plan changed the plan only above the
rule: in both the artist's answer before the count's first report told the side of the rule.  Now a
given multiplier that overspends falls back like any plan where no DP-SGD fits (``_check_fits``),
and the accepted announcement is stored with the plan, so any change to it is refused alike.  Flower
path over the in-process FAKE grid (tests/test_changed_plan_report.py's harness)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.transport.wire import pb
from tests.test_changed_plan_report import _withdrawal
from tests.test_flower_app import outside_runtime  # noqa: F401 (fixture)
from tests.test_planning_size_review9b import _contribute_at, _outcome, _run


@pytest.mark.usefixtures("outside_runtime")
def test_a_first_announcement_with_a_noise_multiplier_is_answered_alike_on_both_sides_of_the_rule(tmp_path, data):
    """First message: round 2's ``publish`` of a 2-round run at epsilon 0.5 (rdp), a refresh at round 0,
    ``noise_multiplier`` 1.0 announced.  Below the rule no release split fits the count and the
    releases (refused: the count's report, then the withdrawal); above it ``_dp_sgd_plan`` takes the
    given multiplier without calibrating, so nothing checks the plan against epsilon and it is
    accepted (and would spend ~5.4): the message is sat out silently."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        inbox = _contribute_at(run, 2, pb.ROUND_KIND_TRAIN, "publish")
        inbox.plan.dp.epsilon_budget = 0.5
        inbox.plan.dp.accountant = "rdp"
        inbox.plan.dp.noise_multiplier = 1.0
        inbox.plan.dp.release_rounds[:] = [0]
        inbox.plan.total_rounds = 2
        outcomes[min_training] = _outcome(run, inbox)
    assert outcomes[1] == outcomes[1000], f"the answer depends on the side of the rule: {outcomes}"


@pytest.mark.usefixtures("outside_runtime")
def test_a_changed_noise_multiplier_after_an_accepted_plan_is_refused_alike_on_both_sides_of_the_rule(tmp_path, data):
    """First message: round 1's ``publish`` of the genuine 1-round run at epsilon 8, sat out silently
    by both plans (the plan is accepted and the count charged, no report).  Second: the same message
    with ``noise_multiplier`` 0.5 announced.  Above the rule the DP-SGD plan's multiplier changes:
    refused as a changed plan, the count's report then the withdrawal.  Below it the plan without
    DP-SGD is unchanged (its summary holds ``noise_multiplier`` 0.0 either way): it goes on, silent,
    no report.  Report + withdrawal or silence tells the side before any report covered the count."""
    outcomes = {}
    for min_training in (1, 1000):
        run = _run(tmp_path, data, "none", min_training)
        first = _outcome(run, _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish"))
        changed = _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish")
        changed.plan.dp.noise_multiplier = 0.5
        outcomes[min_training] = (first, _withdrawal(run, changed))
    assert outcomes[1] == outcomes[1000], f"the replies depend on the side of the rule: {outcomes}"
