"""Issue 11: test-time view averaging of every published or scored embedding, and the release-draw
measurement of DP rows."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedstyle_secure.errors import ModelError
from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
from fedstyle_secure.models.embed import (
    embed,
    embed_views,
    mean_direction,
    normalise_rows,
    prototype_sums,
    prototypes_from,
)
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import TEST_TIME_VIEWS, InputBank
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features, evaluate_personal
from fedstyle_secure.retrieval.index import StyleIndex, build_index
from fedstyle_secure.retrieval.metrics import cosine_similarity_matrix, evaluate_retrieval
from fedstyle_secure.retrieval.references import frozen_dp_prototypes, release_draw_metrics


def test_mean_direction_is_one_unit_vector_per_artwork():
    rng = np.random.default_rng(0)
    views = rng.normal(size=(5, 7, 4)) * rng.uniform(0.1, 10.0, size=(5, 7, 1))  # views of any norm
    out = mean_direction(views)
    assert out.shape == (7, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)
    # the prototype release's sensitivity: one artwork more or less moves an artist's sum by exactly 1
    sums, _ = prototype_sums(out, np.zeros(7, dtype=np.int64), 1)
    sums_without, _ = prototype_sums(out[1:], np.zeros(6, dtype=np.int64), 1)
    assert np.linalg.norm(sums - sums_without) == pytest.approx(1.0)
    np.testing.assert_allclose(mean_direction(views[:1]), normalise_rows(views[0]))  # one view: its direction
    by_hand = sum(normalise_rows(v) for v in views)
    assert isinstance(by_hand, np.ndarray)
    np.testing.assert_allclose(out, normalise_rows(by_hand))


def test_personal_models_score_with_prototypes_of_their_own_artists_only(tiny_federation):
    """A personal model scores its own artists' column: prototypes of its own artists' training artworks
    give the same metrics as prototypes of every training artwork in its space."""
    data = tiny_federation
    torch.manual_seed(1)
    models = [make_model(EncoderConfig(), data.bank, data.public, None).eval() for _ in data.clients]
    train, query = data.split.train, data.split.query
    scores = np.zeros((len(query), len(data.artists)))
    similarity = np.zeros((len(query), len(query)))
    for model, artists in zip(models, data.clients):
        every, _ = prototypes_from(embed_views(model, data.bank, train), data.labels[train], len(data.artists))
        q = embed_views(model, data.bank, query)
        scores[:, artists] = (q @ every.T)[:, artists]
        similarity += cosine_similarity_matrix(q) / len(models)
    expected = evaluate_retrieval(scores, similarity, data.labels[query]).as_dict()
    got = evaluate_personal(models, data).as_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_embed_views_averages_the_original_and_the_first_views(tiny_federation):
    data = tiny_federation  # 2 augmented views per artwork
    torch.manual_seed(0)
    model = make_model(EncoderConfig(), data.bank, data.public, None).eval()
    items = np.array([0, 3, 5])
    per_view = [embed(model, data.bank.take(v, items)) for v in range(3)]
    np.testing.assert_allclose(embed_views(model, data.bank, items, views=0), per_view[0], atol=1e-6)
    # all views go through the model in one batch: equal to the per-view embeddings up to float rounding
    np.testing.assert_allclose(
        embed_views(model, data.bank, items, views=1), mean_direction(np.stack(per_view[:2])), atol=1e-6
    )
    both = embed_views(model, data.bank, items, views=2)
    assert not np.allclose(both, per_view[0], atol=1e-3)  # the views do move the embedding
    np.testing.assert_allclose(embed_views(model, data.bank, items, views=99), both)  # clipped to the bank's views
    assert data.bank.test_time_inputs(99).shape == (3, len(data.bank), data.bank.input_shape[0])


def test_frozen_features_with_no_views_is_the_original_protocol(tiny_federation):
    """Standardised originals, nearest prototype: what the reference row was before view averaging."""
    data = tiny_federation
    originals = replace(data, bank=InputBank(views=data.bank.views[:1], kind=data.bank.kind))
    train, query = data.split.train, data.split.query
    feats = data.bank.views[0].astype(np.float64)
    z = (feats - feats[train].mean(axis=0)) / (feats[train].std(axis=0) + 1e-6)
    sums, counts = prototype_sums(z[train], data.labels[train], len(data.artists))
    protos = normalise_rows(sums / counts[:, None])
    expected = evaluate_retrieval(
        normalise_rows(z[query]) @ protos.T, cosine_similarity_matrix(z[query]), data.labels[query]
    )
    assert evaluate_frozen_features(originals).as_dict() == pytest.approx(expected.as_dict())


def test_release_draws_without_noise_are_the_exact_prototypes(tiny_federation):
    data = tiny_federation
    exact = frozen_dp_prototypes(data, None, SeededNoise([0]))
    rng = np.random.default_rng(1)
    emb = normalise_rows(rng.normal(size=(len(data.labels), 8)))
    once = release_draw_metrics(emb, data, None, SeededNoise([0]), draws=5)
    assert once == release_draw_metrics(emb, data, None, SeededNoise([1]), draws=1)  # no noise: one exact release
    sigmas = np.full(len(data.artists), 50.0)
    noisy = release_draw_metrics(emb, data, sigmas, SeededNoise([2]), draws=10)
    assert noisy.artist_accuracy != once.artist_accuracy
    assert 0.0 <= exact.artist_accuracy <= 1.0


def test_the_final_publication_is_view_averaged_and_training_refreshes_are_not(tiny_federation):
    """What buyers are matched against is computed like the queries: each artist's final prototype is
    the direction of the sum of its training artworks' view-averaged embeddings under the final model."""
    data = tiny_federation
    config = SimulationConfig(algorithm="fedstyle", rounds=1, seed=0)
    result = run_simulation(config, data)
    model = result.global_model
    assert model is not None
    train = data.split.train
    sums, _ = prototype_sums(embed_views(model, data.bank, train), data.labels[train], len(data.artists))
    np.testing.assert_allclose(result.state.prototypes, normalise_rows(sums), atol=1e-5)
    originals, _ = prototype_sums(embed(model, data.bank.originals(train)), data.labels[train], len(data.artists))
    assert not np.allclose(result.state.prototypes, normalise_rows(originals), atol=1e-4)


def test_index_embeds_queries_with_its_views_and_old_indexes_keep_the_original(tiny_federation, tmp_path):
    data = tiny_federation
    torch.manual_seed(0)
    model = make_model(EncoderConfig(), data.bank, data.public, None).eval()
    index = build_index(model, EncoderConfig(), data.artists, np.eye(len(data.artists), 128))
    assert index.test_time_views == TEST_TIME_VIEWS
    images = data.artworks.images[:3]
    two = replace(index, test_time_views=2)  # the tiny federation's bank holds 2 views per artwork
    # a buyer's image is averaged over exactly the views its artist's prototype was built from
    np.testing.assert_allclose(
        two.embed_images(images), embed_views(model, data.bank, np.arange(3), views=2), atol=1e-5
    )
    index.save(tmp_path / "new")
    assert StyleIndex.load(tmp_path / "new").test_time_views == TEST_TIME_VIEWS
    meta_path = tmp_path / "new" / "index.json"
    meta = json.loads(meta_path.read_text())
    del meta["test_time_views"]  # an index saved before view averaging: prototypes of originals
    meta_path.write_text(json.dumps(meta))
    old = StyleIndex.load(tmp_path / "new")
    assert old.test_time_views == 0
    np.testing.assert_allclose(old.embed_images(images), embed(model, data.bank.originals(np.arange(3))), atol=1e-5)
    for bad in (-1, 1000, "4", True, 2.5):
        meta_path.write_text(json.dumps(meta | {"test_time_views": bad}))
        with pytest.raises(ModelError, match="test_time_views"):
            StyleIndex.load(tmp_path / "new")


def test_embed_views_in_chunks_equals_one_pass(tiny_federation, monkeypatch):
    """Large indexes are embedded a chunk of artworks at a time (memory bounded); the result does not
    depend on the chunk size."""
    import fedstyle_secure.models.embed as embed_module

    data = tiny_federation
    torch.manual_seed(2)
    model = make_model(EncoderConfig(), data.bank, data.public, None).eval()
    whole = embed_views(model, data.bank)
    monkeypatch.setattr(embed_module, "EMBED_VIEWS_CHUNK", 7)  # 60 artworks: 8 full chunks and a short one
    np.testing.assert_allclose(embed_views(model, data.bank), whole, atol=1e-6)
