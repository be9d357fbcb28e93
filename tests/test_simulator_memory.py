"""The simulator's clients share one model object and train in turn (``TurnTaking``): the same results
as one model per client, with per-client state reduced to parameters (personal models) or nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fedstyle_secure.federation import simulator
from fedstyle_secure.federation.simulator import SimulationConfig, TurnTaking, make_clients, run_simulation
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.training.local import LocalConfig


class OneModelPerClient(TurnTaking):
    """REFERENCE (the simulator before sharing): every client trains its own copy; nothing is swapped."""

    def load(self, client) -> None:
        pass

    def save(self, client) -> None:
        pass

    def model_of(self, client):
        return copy.deepcopy(client.model)


def _run(data, algorithm: str, dp: DpConfig | None):
    config = SimulationConfig(
        algorithm=algorithm,
        rounds=2,
        local=LocalConfig(epochs=1),
        dp=dp,
        public_pretrain_steps=0,
        insecure_seeded_noise=dp is not None,  # reproducible DP draws, so two runs can be compared
    )
    result = run_simulation(config, data)
    # losses as repr: a round in which no artist trains (DP plan without DP-SGD) has loss NaN, and NaN != NaN
    return result.metrics.as_dict(), [(repr(r.mean_loss), r.metrics) for r in result.history], result


@pytest.mark.parametrize(
    "algorithm,dp", [("local", None), ("fedproto", None), ("fedstyle", None), ("central", None), ("local", 8.0)]
)
def test_shared_model_gives_the_results_of_one_model_per_client(tiny_federation, monkeypatch, algorithm, dp):
    config = None if dp is None else DpConfig(epsilon=dp, min_training_artworks=1)  # DP-SGD even on 12 artworks
    shared = _run(tiny_federation, algorithm, config)

    original = simulator.make_clients
    monkeypatch.setattr(simulator, "TurnTaking", OneModelPerClient)
    monkeypatch.setattr(simulator, "make_clients", lambda c, d, m, r, turns=None: original(c, d, m, r, None))
    reference = _run(tiny_federation, algorithm, config)
    assert shared[:2] == reference[:2]

    if shared[2].personal_models is not None:  # personal models stay distinct after sharing one object
        params = [get_flat_params(m) for m in shared[2].personal_models]
        assert len(params) == len(tiny_federation.clients) and not np.array_equal(params[0], params[1])
        reference_params = [get_flat_params(m) for m in reference[2].personal_models]
        assert all(np.array_equal(a, b) for a, b in zip(params, reference_params))


def test_clients_share_one_model_object_and_averaging_keeps_no_parameters(tiny_federation):
    config = SimulationConfig(algorithm="fedavg", rounds=1)
    template = simulator.make_initial_model(
        config.encoder,
        tiny_federation.bank,
        tiny_federation.public,
        len(tiny_federation.artists),
        seed=0,
        pretrain_steps=0,
    )
    turns = TurnTaking(copy.deepcopy(template), keeps_own=False)
    clients = make_clients(config, tiny_federation, template, np.random.default_rng(0), turns)
    assert len(clients) == 5 and {id(c.model) for c in clients} == {id(turns.workspace)}
    for client in clients:
        turns.save(client)
    assert turns.kept_bytes() == {}  # parameter averaging: the broadcast supplies every client's start
    personal = TurnTaking(copy.deepcopy(template), keeps_own=True)
    personal.save(clients[0])
    n_params = sum(p.numel() for p in template.parameters() if p.requires_grad)
    assert personal.kept_bytes() == {clients[0].client_id: 4 * n_params}  # float32, nothing else
