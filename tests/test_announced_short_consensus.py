"""A short broadcast consensus (a helper's review, 2026-12-01): ``check_broadcast_tables`` checked its
width and values, not its number of rows.  FedStyle's public-set alignment
(``training.local.public_loss``) indexes the consensus with public-image indices, so a consensus
shorter than the public set raised ``IndexError`` inside ``train_local``, which only a DP-SGD plan
runs.  On round 1's ``contribute`` the DP-SGD plan signs the count's report only after training, so
above ``client.min_training_artworks`` the artist raised with no report (Flower: ArtistRefused),
below it answered with the count's report and the broadcast back.  The consensus must now have one
row per public image, checked by every plan before it acts.  Flower path over the in-process FAKE
grid (the 9b harness)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.transport.wire import from_tensor, pb, to_tensor
from tests.test_flower_app import outside_runtime  # noqa: F401 (fixture)
from tests.test_planning_size_review9b import _contribute_at, _outcome, _run


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("rows", [0, 1])
def test_a_first_contribution_with_a_short_consensus_is_answered_alike_on_both_sides_of_the_rule(tmp_path, data, rows):
    outcomes = {}
    for min_training in (1, 1000):  # every planning size is above the rule / below it
        run = _run(tmp_path, data, "none", min_training)
        inbox = _contribute_at(run, 1, pb.ROUND_KIND_TRAIN, "contribute")  # the genuine round 1 contribute
        assert inbox.broadcast is not None
        dim = from_tensor(inbox.broadcast.prototypes, "prototypes").shape[1]
        unit = np.full((rows, dim), 1.0 / np.sqrt(dim), dtype=np.float32)  # finite unit rows: passes every check
        inbox.broadcast.consensus.CopyFrom(to_tensor(unit))
        outcomes[min_training] = [_outcome(run, inbox) for _ in range(2)]
    assert outcomes[1] == outcomes[1000], f"the answer tells the side of the rule: {outcomes}"
