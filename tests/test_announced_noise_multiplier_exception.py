"""An announced ``noise_multiplier`` the accountant cannot evaluate (a helper's review, 2026-12-01) raised
a plain exception (ZeroDivisionError, OverflowError, MemoryError) on the DP-SGD side of the
portfolio-size rule only: ``plan_dp`` falls back to a plan without DP-SGD on ``PrivacyError`` alone,
and a plan without DP-SGD never reads the multiplier.  So on the FIRST message a planning size above
``client.min_training_artworks`` made ``ArtistPrivacy.open`` raise (Flower: ArtistRefused; gRPC: the
artist process ends), one below was accepted; the size had been stored and no ledger made, so the bit
was told with its count in no ledger, again at every resend.  A multiplier outside
[``MIN_NOISE_MULTIPLIER``, ``MAX_NOISE_MULTIPLIER``] is now refused before any size is drawn, and every
accountant failure is a ``PrivacyError``.  Flower path over the in-process FAKE grid (the 9b harness)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.transport.artist.state import ArtistStateStore
from fedstyle_secure.transport.wire import pb
from tests.test_flower_app import outside_runtime  # noqa: F401 (fixture)
from tests.test_planning_size_review9b import TARGET, _contribute_at, _outcome, _run


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("accountant,multiplier", [("rdp", 1e-300), ("rdp", 1e300), ("prv", 1e-300)])
def test_an_unevaluable_noise_multiplier_is_answered_alike_on_both_sides_of_the_rule(
    tmp_path, data, accountant, multiplier
):
    outcomes, charged = {}, {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        inbox = _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "publish")  # genuine round 1 publish: sat out by both
        inbox.plan.dp.accountant = accountant
        inbox.plan.dp.noise_multiplier = multiplier
        outcomes[min_training] = [_outcome(run, inbox) for _ in range(2)]  # a resend tells it again
        stored = ArtistStateStore(run.state[TARGET]).load()
        drawn = stored is not None and "planning_size" in stored.plan
        charged[min_training] = not drawn or (stored is not None and stored.ledger is not None)
    assert outcomes[1] == outcomes[1000], f"the answer tells the side of the rule: {outcomes}"
    assert charged[1] and charged[1000], f"a planning size was drawn and told without a charge: {charged}"


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_an_accountant_failure_is_a_privacy_error(accountant):
    """What a plan can handle (fall back, or refuse alike on both sides of the rule): never a plain
    arithmetic error from the accountant."""
    from fedstyle_secure.errors import PrivacyError
    from fedstyle_secure.privacy.accounting import evaluate_epsilon
    from fedstyle_secure.privacy.mechanisms import SampledGaussian

    with pytest.raises(PrivacyError, match=f"the {accountant} accountant cannot evaluate"):
        evaluate_epsilon(accountant, (SampledGaussian(0.1, 1e-300, 10),), 1e-5)
