"""A dishonest server changes the DP announcement after an artist accepted a plan, before the
count's first report: the Flower path (a new ClientApp from the artist's state folder per message,
as a gRPC artist's restart) over the in-process FAKE grid, real planning and reports."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.flower.records import PHASE_ACTIONS, ServerMessage
from fedstyle_secure.privacy.jsonio import read_json
from fedstyle_secure.privacy.report_store import report_path
from fedstyle_secure.transport.wire import pb
from tests.test_flower_app import ARTISTS, outside_runtime  # noqa: F401 (fixture)
from tests.test_flower_masking_attacks import Run
from tests.test_planning_size_review9b import _contribute_at, _outcome, _run

TARGET = ARTISTS[0]


def _withdrawal(run: Run, inbox: ServerMessage) -> tuple[str | None, int]:
    """The target's withdrawal reason (``None``: it did not withdraw) and the reports its reply carries."""
    reply = run.grid.replay(run.nodes[TARGET], PHASE_ACTIONS[inbox.plan.phase], inbox)
    return (None if reply.withdrawal is None else reply.withdrawal.reason), len(reply.reports)


@pytest.mark.usefixtures("outside_runtime")
def test_a_changed_announcement_after_an_accepted_plan_is_refused_alike_on_both_sides_of_the_rule(tmp_path, data):
    """First message: round 1's ``publish`` of a 1-round run at epsilon 8 (a training round without a
    refresh), sat out by both plans: the plan is accepted and the count charged in the ledger on disk,
    no report.  Second message: the same with epsilon 0.6, 2 rounds and a refresh at round 0 announced
    (``client.budget_epsilon`` stays 8).  A planning size at or above ``client.min_training_artworks``
    plans DP-SGD there, the plan differs from the stored one and the artist withdrew after the count's
    report, signed with the changed plan's final round; below the rule no plan fits (the refresh, the
    final release and the count spend more than 0.6), so ``_refusing`` found an accepted plan and
    withdrew with no report.  Report or none (and the reason) told the side of the rule while that
    artist's charged count was in no report.  Both now refuse it as a changed plan under the stored
    one: the count's report (its final round the accepted plan's), then the withdrawal."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        first = _outcome(run, _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish"))
        changed = _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish")
        changed.plan.dp.epsilon_budget = 0.6
        changed.plan.dp.release_rounds[:] = [0]
        changed.plan.total_rounds = 2
        second = _withdrawal(run, changed)
        path = report_path(run.configs.artists[TARGET].parent / "reports", TARGET, 0)
        final_round = read_json(path)["final_round"] if path.is_file() else None
        outcomes[min_training] = (first, second, final_round)
    assert outcomes[1] == outcomes[1000], f"the replies depend on the side of the rule: {outcomes}"
    first, (reason, reports), final_round = outcomes[1]
    assert first == "silent" and reason is not None and reports == 1 and final_round == 1, outcomes


@pytest.mark.usefixtures("outside_runtime")
def test_a_first_announcement_only_dp_sgd_fitted_is_answered_alike_on_both_sides_of_the_rule(tmp_path, data):
    """First message: round 2's ``publish`` of a 2-round run at epsilon 0.6 with a refresh at round 0.
    A plan without DP-SGD gave the final publication 80 % of epsilon and then could not fit the count
    and the refresh, while a DP-SGD plan (64 % + 16 % for the releases) could: a size above
    ``client.min_training_artworks`` sat the message out silently, one below withdrew with the count's
    report (a helper's review, 2026-12-01).  A plan without DP-SGD now takes the DP-SGD plan's release
    split where its own does not fit, so both sides plan it and answer alike."""
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        inbox = _contribute_at(run, 2, pb.ROUND_KIND_TRAIN, "publish")
        inbox.plan.dp.epsilon_budget = 0.6
        inbox.plan.dp.release_rounds[:] = [0]
        inbox.plan.total_rounds = 2
        outcomes[min_training] = _outcome(run, inbox)
    assert outcomes[1] == outcomes[1000], f"the answer depends on the side of the rule: {outcomes}"
