"""DP-SGD in the federation: calibration, budget enforcement and retirement, signed reports."""

import numpy as np
import pytest

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.plan import DpConfig, plan_dp
from fedstyle_secure.randomness import CsprngNoise
from fedstyle_secure.training.dp_sgd import make_private
from fedstyle_secure.training.local import LocalConfig


def _all_mechanisms(plan, rounds):
    out = [*plan.round_mechanisms(rounds, train=False)]
    for r in range(rounds):
        out += plan.round_mechanisms(r)
    return out


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_plan_spends_the_target_epsilon(epsilon):
    plan = plan_dp(
        DpConfig(epsilon=epsilon, min_training_artworks=1),
        dataset_size=50,
        batch_size=16,
        local_epochs=2,
        rounds=5,
        training_releases=5,
    )
    assert plan.sample_rate == pytest.approx(1 / 4)
    assert plan.steps_per_round == 8
    spent = compute_epsilon(_all_mechanisms(plan, 5), plan.delta, "prv")
    assert 0.97 * epsilon <= spent <= epsilon


def test_make_private_accepts_a_rate_that_rounding_would_break():
    import torch

    plan = plan_dp(
        DpConfig(epsilon=4.0, min_training_artworks=1),
        dataset_size=10,
        batch_size=3,
        local_epochs=1,
        rounds=1,
        training_releases=0,
    )
    model = torch.nn.Linear(4, 2)
    private = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, plan, CsprngNoise())
    try:
        assert plan.sample_rate == pytest.approx(1 / 4)
        assert len(private.loader) == 4
    finally:
        private.close()


def _clipped_mean_gradient(clipping, clip_norm, n=6):
    """One private step's gradient with the noise switched off: the clipped per-artwork mean."""
    import torch

    from fedstyle_secure.models.heads import ProjectionHead
    from fedstyle_secure.privacy.plan import DpPlan

    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4, dropout=0.0)
    x = torch.randn(n, 8) * torch.arange(1, n + 1).view(-1, 1)  # artworks of very different gradient norms
    target = torch.nn.functional.normalize(torch.randn(n, 4), dim=1)
    plan = DpPlan(
        delta=1e-5,
        accountant="prv",
        sample_rate=1.0,
        steps_per_round=1,
        noise_multiplier=0.0,
        clip_norm=clip_norm,
        release_sigma=None,
        final_release_sigma=1.0,
        final_round=1,
    )
    private = make_private(head, torch.optim.SGD(head.parameters(), lr=0.1), n, plan, CsprngNoise(), clipping=clipping)
    try:
        private.backward((private.module(x) - target).pow(2).sum(dim=1) * 10)
        assert private.optimizer.pre_step()
        grads: list[torch.Tensor] = []
        for p in head.parameters():
            assert p.grad is not None  # every parameter took part in the backward pass
            grads.append(p.grad.clone())
        return grads
    finally:
        private.close()


def test_ghost_clipping_gives_the_same_clipped_gradient_as_per_sample_hooks():
    import torch

    ghost, hooks = _clipped_mean_gradient("ghost", 0.05), _clipped_mean_gradient("hooks", 0.05)
    unclipped = _clipped_mean_gradient("hooks", 1e6)
    for g, h in zip(ghost, hooks):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)
    total = torch.cat([g.flatten() for g in ghost]).norm()
    assert total <= 0.05 + 1e-6  # a mean of vectors of norm <= 0.05
    assert total < 0.5 * torch.cat([g.flatten() for g in unclipped]).norm()  # clipping really bit


def test_unknown_clipping_mode_is_rejected():
    import torch

    plan = plan_dp(
        DpConfig(epsilon=4.0, min_training_artworks=1),
        dataset_size=10,
        batch_size=5,
        local_epochs=1,
        rounds=1,
        training_releases=0,
    )
    model = torch.nn.Linear(4, 2)
    with pytest.raises(PrivacyError, match="clipping"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, plan, CsprngNoise(), clipping="fast")


def test_delta_at_least_one_over_n_is_rejected():
    with pytest.raises(PrivacyError, match="delta"):
        plan_dp(
            DpConfig(epsilon=1.0, delta=0.05),
            dataset_size=20,
            batch_size=8,
            local_epochs=1,
            rounds=1,
            training_releases=0,
        )


def test_dp_run_stays_within_budget_and_reports_audit_clean(tiny_federation, tmp_path):
    # min_training_artworks=1: the tiny portfolios (7 artworks) train with DP-SGD despite the size rule
    config = SimulationConfig(
        algorithm="fedstyle", rounds=2, local=LocalConfig(epochs=1), dp=DpConfig(epsilon=4.0, min_training_artworks=1)
    )
    result = run_simulation(config, tiny_federation, reports_dir=tmp_path)
    assert set(result.privacy) == set(tiny_federation.artists)
    for info in result.privacy.values():
        assert info["epsilon_spent"] <= 4.0 and info["epsilon_spent"] > 3.5
        assert info["privacy_unit"].startswith("one artwork")
    # one report per artist per round (0, 1) plus the final publication (round 2), and a manifest
    files = sorted(p.name for p in (tmp_path / tiny_federation.artists[0]).iterdir())
    assert files == ["round-0000.json", "round-0001.json", "round-0002.json"]
    assert (tmp_path / "manifest.json").is_file()
    assert main(["audit", str(tmp_path), "--trust-manifest"]) == 0  # a simulation's keys exist only in its manifest
    assert 0.0 <= result.metrics.artist_accuracy <= 1.0


def test_a_fixed_noise_multiplier_the_budget_cannot_hold_runs_without_dp_sgd(tiny_federation):
    """A fixed, too-small noise multiplier: the plan is checked against the budget (``_check_fits``)
    and runs without DP-SGD, as any plan where no DP-SGD fits (the whole epsilon on the final release);
    nothing is spent over the budget.  (Before, the plan was accepted and the ledger stopped the
    artists mid-run; over the network that told a DP-SGD plan apart, see
    ``tests/test_announced_noise_multiplier.py``.  The ledger's own refusal is tested in
    ``tests/test_privacy_budget.py`` and, over gRPC, ``tests/test_transport_dp.py``.)"""
    dp = DpConfig(epsilon=2.0, noise_multiplier=0.6, min_training_artworks=1)
    config = SimulationConfig(algorithm="fedavg", rounds=6, local=LocalConfig(epochs=1), dp=dp)
    result = run_simulation(config, tiny_federation)
    assert result.privacy and not result.state.retired
    for info in result.privacy.values():
        assert info["noise_multiplier"] == 0.0, "a plan whose DP-SGD overspends must not train"
        assert 0.0 < info["epsilon_spent"] <= 2.0 + 1e-9
    assert len(result.history) == 6 and all(h.participants == len(tiny_federation.clients) for h in result.history)


@pytest.mark.parametrize("layers", ["last", "all"])
def test_private_layers_select_what_dp_sgd_updates(tiny_federation, layers):
    import dataclasses

    import torch

    from fedstyle_secure.models.factory import EncoderConfig, make_model
    from fedstyle_secure.training.local import LocalData, RoundContext, train_local

    data = tiny_federation
    torch.manual_seed(0)
    model = make_model(EncoderConfig(), data.bank, data.public, len(data.artists))
    local = LocalData(bank=data.bank, labels=data.labels)
    plan = dataclasses.replace(
        plan_dp(DpConfig(epsilon=8.0, min_training_artworks=1), len(local), 16, 1, 1, 0), private_layers=layers
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_local(
        model,
        local,
        RoundContext(n_artists=len(data.artists)),
        "classifier",
        LocalConfig(epochs=1),
        np.random.default_rng(0),
        plan,
    )
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert {"encoder.fc2.weight", "classifier.weight"} <= moved
    assert ("encoder.fc1.weight" in moved) == (layers == "all")
    assert all(p.requires_grad for p in model.parameters())  # frozen only during private training


def test_unknown_private_layers_are_rejected():
    with pytest.raises(PrivacyError, match="private layers"):
        plan_dp(DpConfig(epsilon=4.0, private_layers="first"), 20, 8, 1, 1, 0)


def test_no_prototype_refreshes_gives_the_final_release_the_whole_release_budget(tiny_federation):
    """prototype_refreshes=0: FedStyle trains without any published prototype (no crash) and the
    final publication gets all of the release share of epsilon (less noise than with refreshes)."""
    with_refreshes = plan_dp(
        DpConfig(epsilon=4.0, prototype_refreshes=3, min_training_artworks=1), 30, 16, 1, 3, training_releases=3
    )
    without = plan_dp(
        DpConfig(epsilon=4.0, prototype_refreshes=0, min_training_artworks=1), 30, 16, 1, 3, training_releases=0
    )
    assert without.release_sigma is None and without.final_release_sigma < with_refreshes.final_release_sigma
    config = SimulationConfig(
        algorithm="fedstyle",
        rounds=1,
        local=LocalConfig(epochs=1),
        dp=DpConfig(epsilon=4.0, prototype_refreshes=0, min_training_artworks=1),
        public_pretrain_steps=0,
    )
    result = run_simulation(config, tiny_federation)
    assert 0.0 <= result.metrics.artist_accuracy <= 1.0 and all(
        p["epsilon_spent"] <= 4.0 for p in result.privacy.values()
    )


@pytest.mark.parametrize("algorithm", ["fedprox", "fedproto", "local"])
def test_every_baseline_trains_under_dp(tiny_federation, algorithm):
    """Each baseline's extra terms (FedProx's anchor, FedProto's prototype distance) must follow the
    parameters DP-SGD trains (found by a sweep: FedProx's anchor covered the frozen layer too)."""
    config = SimulationConfig(
        algorithm=algorithm,
        rounds=2,
        local=LocalConfig(epochs=1),
        dp=DpConfig(epsilon=4.0, min_training_artworks=1),
        public_pretrain_steps=0,
    )
    result = run_simulation(config, tiny_federation)
    assert len(result.history) == 2 and all(p["epsilon_spent"] <= 4.0 for p in result.privacy.values())


def test_small_portfolios_skip_dp_sgd_and_spend_the_whole_budget_on_the_final_release(tiny_federation, tmp_path):
    """The portfolio-size rule: below ``min_training_artworks`` no DP-SGD, no release during
    training, one final release spending the whole epsilon; the model is the shared start."""
    from fedstyle_secure.federation.client import Broadcast
    from fedstyle_secure.federation.simulator import make_clients
    from fedstyle_secure.training.pretrain import make_initial_model

    small = plan_dp(DpConfig(epsilon=4.0, min_training_artworks=8), 7, 16, 2, 3, training_releases=0)
    assert not small.trains and small.round_mechanisms(0, release=False) == [] and small.release_sigma is None
    assert compute_epsilon(small.round_mechanisms(3, train=False), small.delta, "prv") == pytest.approx(4.0, rel=0.01)
    assert plan_dp(DpConfig(epsilon=4.0, min_training_artworks=7), 7, 16, 2, 3, training_releases=0).trains
    config = SimulationConfig(
        algorithm="fedstyle", rounds=2, local=LocalConfig(epochs=1), dp=DpConfig(epsilon=4.0), public_pretrain_steps=0
    )
    result = run_simulation(config, tiny_federation, reports_dir=tmp_path)
    assert all(p["epsilon_spent"] == pytest.approx(4.0, rel=0.01) for p in result.privacy.values())
    assert main(["audit", str(tmp_path), "--trust-manifest"]) == 0  # a simulation: keys only in its manifest
    template = make_initial_model(
        config.encoder,
        tiny_federation.bank,
        tiny_federation.public,
        len(tiny_federation.artists),
        seed=0,
        pretrain_steps=0,
    )
    client = make_clients(config, tiny_federation, template, np.random.default_rng(0))[0]
    with pytest.raises(PrivacyError, match="no prototype release"):  # fail closed: never an un-noised release
        client.publish(Broadcast(0, None, None, np.zeros((5, 128), np.float32), np.zeros(5, bool)), round_id=0)


def test_seeded_research_noise_reproduces_a_run_and_its_reports_are_flagged(tiny_federation, tmp_path, capsys):
    """--insecure-seeded-noise: the same seed gives the same DP run; its reports say so and the audit
    flags every one of them (noise_not_secure), while the default CSPRNG run audits clean."""
    import json

    config = SimulationConfig(
        algorithm="fedavg",
        rounds=1,
        local=LocalConfig(epochs=1),
        dp=DpConfig(epsilon=4.0, min_training_artworks=1),
        public_pretrain_steps=0,
        insecure_seeded_noise=True,
    )
    first = run_simulation(config, tiny_federation, reports_dir=tmp_path / "seeded")
    second = run_simulation(config, tiny_federation)
    assert first.state.params is not None and second.state.params is not None
    assert first.metrics == second.metrics and first.state.params.tolist() == second.state.params.tolist()
    assert {info["noise_source"] for info in first.privacy.values()} == {"seeded-prng (INSECURE, research only)"}
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "seeded"), "--trust-manifest", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["reports"]
    assert rows and all({f["code"] for f in row["findings"]} == {"noise_not_secure"} for row in rows)


def test_simulate_help_says_the_seeded_flag_voids_the_guarantee(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "VOIDS THE DP GUARANTEE" in " ".join(capsys.readouterr().out.split())


def test_an_empty_poisson_batch_under_ghost_clipping_is_a_noise_only_step():
    """A Poisson batch can be empty.  Under ghost clipping an empty batch used to be forwarded anyway:
    Opacus's per-parameter forward counter went up with no backward to bring it down, and the next
    batch's forward was refused as parameter tying (NotImplementedError), crashing the artist
    mid-round (seen in a loopback DP federation of four-artwork portfolios with DP-SGD forced; here
    batches of 1, 3, 0, 2 artworks).  An empty batch is now a zero gradient plus the step's noise.
    Seeded noise (named: reproducible batches; this is not a privacy test)."""
    import numpy as np

    from fedstyle_secure.federation.client import Broadcast
    from fedstyle_secure.models.params import get_flat_params
    from fedstyle_secure.privacy.plan import DpPlan
    from fedstyle_secure.randomness import SeededNoise
    from tests.test_dp_artist_attacks import EMBED, FEATURES, ROSTER, _client

    views = np.random.default_rng(4).normal(size=(3, 4, FEATURES)).astype(np.float32)
    client = _client(DpConfig(epsilon=8.0), views, batch_size=16)
    client.dp = DpPlan(
        delta=1e-5,
        accountant="prv",
        sample_rate=1 / 2,
        steps_per_round=2,
        noise_multiplier=1.0,
        clip_norm=1.0,
        release_sigma=None,
        final_release_sigma=1.0,
        final_round=3,
        private_layers="last",
        planning_size=25,
    )
    client.noise = SeededNoise([1])
    start = get_flat_params(client.model)
    for round_id in range(3):
        client.fit(Broadcast(round_id, start, None, np.zeros((ROSTER, EMBED)), np.zeros(ROSTER, dtype=bool)))
        assert client.last_result is not None and client.last_result.steps == 2
    assert not np.array_equal(get_flat_params(client.model), start)
