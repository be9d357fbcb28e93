"""Server aggregation math works on sums only and gives the hand-computed weighted means."""

import numpy as np
import pytest

from fedstyle_secure.federation.packing import pack, unpack
from fedstyle_secure.federation.strategy import (
    ALGORITHMS,
    ServerOptimizer,
    aggregate,
    client_contribution,
    initial_state,
)
from fedstyle_secure.secure.api import DropoutSchedule, PlainSummation


def test_pack_unpack_roundtrip_and_length_check():
    arrays = {"b": np.arange(6.0).reshape(2, 3), "a": np.array([7.0])}
    vec, layout = pack(arrays)
    assert vec.tolist() == [7.0, 0, 1, 2, 3, 4, 5]
    out = unpack(vec, layout)
    assert np.array_equal(out["b"], arrays["b"]) and np.array_equal(out["a"], arrays["a"])
    with pytest.raises(ValueError, match="layout expects"):
        unpack(vec[:-1], layout)


def test_fedstyle_aggregate_weighted_params_and_consensus():
    spec = ALGORITHMS["fedstyle"]
    p1, p2 = np.array([1.0, 0.0]), np.array([0.0, 4.0])
    pub1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    pub2 = np.array([[1.0, 0.0], [1.0, 0.0]])
    c1 = client_contribution(spec, p1, 1.0, pub1)
    c2 = client_contribution(spec, p2, 3.0, pub2)
    v1, layout = pack(c1)
    v2, _ = pack(c2)
    summed = PlainSummation().sum({"a": v1, "b": v2}, round_id=0)
    plain = ServerOptimizer("avg")  # the weighted mean itself (FedAvg); the default FedAdam steps along it
    state = aggregate(spec, initial_state(3, 2, np.zeros(2)), unpack(summed.total, layout), optimizer=plain)
    assert state.params is not None and state.consensus is not None
    assert np.allclose(state.params, [(1 * 1 + 3 * 0) / 4, (1 * 0 + 3 * 4) / 4])
    # consensus: mean then re-normalised rows: row0 = [1,0]; row1 = [0.5,0.5]/|.|
    assert np.allclose(state.consensus, [[1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)
    assert state.round == 1


def test_plain_summation_respects_dropouts():
    out = PlainSummation().sum(
        {"a": np.ones(3), "b": 2 * np.ones(3), "c": 5 * np.ones(3)},
        round_id=1,
        dropouts=DropoutSchedule({"c": "masked_input"}),
    )
    assert out.contributors == ("a", "b") and np.allclose(out.total, 3.0)
