"""End to end: a tiny synthetic federation trains with real EfficientNet-Lite0 features."""

import json

import numpy as np
import pytest

from fedstyle_secure.cli.main import main
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.training.local import LocalConfig


def test_fedstyle_is_well_above_chance(tiny_federation):
    config = SimulationConfig(algorithm="fedstyle", rounds=6, seed=0, local=LocalConfig(epochs=2))
    result = run_simulation(config, tiny_federation)
    chance = 1 / len(tiny_federation.artists)
    assert result.metrics.artist_accuracy >= 2.5 * chance, result.metrics
    assert result.metrics.map > 1.5 * chance
    assert len(result.history) == 6 and all(np.isfinite(h.mean_loss) for h in result.history)


def test_same_seed_same_metrics(tiny_federation):
    config = SimulationConfig(algorithm="fedavg", rounds=2, seed=1, local=LocalConfig(epochs=1))
    a = run_simulation(config, tiny_federation).metrics
    b = run_simulation(config, tiny_federation).metrics
    assert a == b


@pytest.mark.parametrize("algorithm", ["fedprox", "fedproto", "local", "central"])
def test_every_baseline_runs_and_evaluates(tiny_federation, algorithm):
    result = run_simulation(
        SimulationConfig(algorithm=algorithm, rounds=2, local=LocalConfig(epochs=1)), tiny_federation
    )
    m = result.metrics
    assert 0.0 <= m.artist_accuracy <= 1.0 and 0.0 < m.map <= 1.0
    assert (result.global_model is None) == (algorithm in ("fedproto", "local"))


def test_cli_simulate_index_query(tmp_path, feature_cache):
    data = tmp_path / "art"
    assert main(["synth", "--out", str(data), "--artists", "3", "--per-artist", "6", "--seed", "2"]) == 0
    out = tmp_path / "results.json"
    index = tmp_path / "index"
    code = main(
        [
            "simulate",
            "--data",
            str(data),
            "--algorithm",
            "fedstyle",
            "--rounds",
            "2",
            "--local-epochs",
            "1",
            "--seed",
            "0",
            "--out",
            str(out),
            "--index-out",
            str(index),
            "--no-progress",
        ]
    )
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["algorithm"] == "fedstyle"
    assert set(payload["metrics"]) >= {"artist_accuracy", "macro_f1", "map", "top5_accuracy"}
    assert len(payload["history"]) == 2 and payload["wall_time_s"] > 0
    assert payload["config"]["rounds"] == 2

    rebuilt = tmp_path / "index2"
    assert main(["index", "--model", str(index), "--data", str(data), "--out", str(rebuilt), "--with-artworks"]) == 0
    from fedstyle_secure.retrieval.index import StyleIndex

    sources = StyleIndex.load(rebuilt).artwork_sources  # relative to --data: no path of the building machine
    assert len(sources) == 18 and all(s.startswith("artist_0") and not s.startswith("/") for s in sources), sources
    image = next((data / "artist_01").iterdir())
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["query", str(image), "--index", str(rebuilt), "--top-k", "2", "--json"]) == 0
    ranked = json.loads(buffer.getvalue())["results"]
    assert [r["rank"] for r in ranked] == [1, 2]
    assert ranked[0]["score"] >= ranked[1]["score"]
    assert {r["artist"] for r in ranked} <= {"artist_00", "artist_01", "artist_02"}


def test_cli_reports_bad_data_folder(tmp_path, capsys):
    assert main(["simulate", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_dp_simulations_index_holds_the_released_prototypes_not_exact_means(tiny_federation):
    """`simulate --epsilon E --index-out DIR` saved the exact mean of each artist's private training
    embeddings, which only the Gaussian release may carry out (a user walkthrough, seventeenth
    review).  The index now holds exactly the final publication: the released prototypes."""
    from fedstyle_secure.federation.publish import index_from_result
    from fedstyle_secure.models.embed import embed_views, normalise_rows, prototypes_from
    from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for

    dp = DpConfig(epsilon=2.0)
    config = SimulationConfig(rounds=1, seed=0, local=LocalConfig(epochs=1), dp=dp, encoder=encoder_config_for(dp))
    result = run_simulation(config, tiny_federation)
    index = index_from_result(result, config, tiny_federation)
    known = result.state.known
    assert known.all()
    np.testing.assert_allclose(index.prototypes, normalise_rows(result.state.prototypes[known]), atol=1e-6)
    train = tiny_federation.split.train
    assert result.global_model is not None
    exact, _ = prototypes_from(
        embed_views(result.global_model, tiny_federation.bank, train),
        tiny_federation.labels[train],
        len(tiny_federation.artists),
    )
    cosines = np.sum(index.prototypes * normalise_rows(exact), axis=1)
    assert np.all(cosines < 0.999), cosines  # noised: no published row is an exact mean
