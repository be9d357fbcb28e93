"""The simulator gives the same retrieval quality whatever protects the sums."""

import pytest

from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.secure.factory import summation_factory
from fedstyle_secure.training.local import LocalConfig


@pytest.mark.parametrize("mode", ["ckks", "secagg", "secagg+"])
def test_secure_modes_match_plain_metrics(tiny_federation, mode):
    config = SimulationConfig(algorithm="fedstyle", rounds=2, seed=4, local=LocalConfig(epochs=1))
    plain = run_simulation(config, tiny_federation).metrics
    secure = run_simulation(config, tiny_federation, summations=summation_factory(mode)).metrics
    assert secure.artist_accuracy == pytest.approx(plain.artist_accuracy, abs=0.05)
    assert secure.map == pytest.approx(plain.map, abs=0.03)
