"""Errors only DP-SGD meets, on the first ``contribute`` (a helper's review, 2026-12-01).  The announced
``clip_norm`` was any positive finite float and DP-SGD's noise std is ``noise_multiplier * clip_norm``:
at 1.7e308 (or 1e300 with a multiplier of 1e100) it is ``inf`` and the artist's noise source raised
inside ``train_local``, after the gate and before the DP-SGD plan signs the count's report (round 0's
report comes after training).  A plan without DP-SGD never draws that noise: it answered with the
count's report and its contribution.  So the first ``contribute`` told the side of the portfolio-size
rule (Flower: ArtistRefused vs answered) while the DP-SGD artist's count was in no report, at every
resend.  Now a clip norm above ``MAX_CLIP_NORM`` (and a multiplier outside its bounds) is refused
before any size is drawn, and, for whatever else only DP-SGD can meet, a fit that raises under DP
contributes the round's start like a diverged one (``StyleClient._train``).  Flower path over the
in-process FAKE grid (the 9b harness)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.transport.wire import pb
from tests.test_flower_app import outside_runtime  # noqa: F401 (fixture)
from tests.test_planning_size_review9b import _contribute_at, _outcome, _run


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize(
    "changes",
    [{"clip_norm": 1.7e308}, {"clip_norm": 1e300, "noise_multiplier": 1e100, "accountant": "rdp"}],
    ids=["clip-norm-alone", "clip-norm-and-multiplier"],
)
def test_a_first_contribution_with_an_infinite_noise_std_is_answered_alike_on_both_sides_of_the_rule(
    tmp_path, data, changes
):
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        inbox = _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "contribute")  # the genuine round 1 contribute
        for name, value in changes.items():
            setattr(inbox.plan.dp, name, value)
        outcomes[min_training] = _outcome(run, inbox)
    assert outcomes[1] == outcomes[1000], f"the answer tells the side of the rule: {outcomes}"


@pytest.mark.usefixtures("outside_runtime")
def test_a_dp_sgd_fit_that_raises_is_answered_like_a_plan_without_dp_sgd(tmp_path, data, monkeypatch):
    """Any error inside DP-SGD (here a FAKE ``train_local`` that raises, standing in for one not found
    yet) must not make the first ``contribute`` differ from a plan without DP-SGD's answer."""
    from fedstyle_secure.federation import client as client_module

    def failing_fit(*args, **kwargs):  # FAKE train_local
        raise RuntimeError("an error only DP-SGD meets (fake)")

    monkeypatch.setattr(client_module, "train_local", failing_fit)
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        outcomes[min_training] = _outcome(run, _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "contribute"))
    assert outcomes[1] == outcomes[1000], f"the answer tells the side of the rule: {outcomes}"
    assert outcomes[1].startswith("answered"), outcomes
