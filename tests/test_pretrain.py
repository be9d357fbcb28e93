"""Public warm start: deterministic, learns, costs no privacy (touches public images only)."""

import numpy as np
import pytest

from fedstyle_secure.errors import ModelError
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.plan import DpConfig, public_warm_start_steps
from fedstyle_secure.training.pretrain import (
    PretrainConfig,
    make_initial_model,
    pretrain_on_public,
)


def _model(data, steps, seed=0):
    return make_initial_model(
        EncoderConfig(), data.bank, data.public, len(data.artists), seed=seed, pretrain_steps=steps
    )


def test_same_seed_same_warm_start_and_no_steps_is_the_plain_initialisation(tiny_federation):
    np.testing.assert_array_equal(
        get_flat_params(_model(tiny_federation, 20)), get_flat_params(_model(tiny_federation, 20))
    )
    assert not np.array_equal(get_flat_params(_model(tiny_federation, 20)), get_flat_params(_model(tiny_federation, 0)))
    np.testing.assert_array_equal(
        get_flat_params(_model(tiny_federation, 0)), get_flat_params(_model(tiny_federation, 0))
    )


def test_warm_start_lowers_the_public_instance_loss(tiny_federation):
    model = _model(tiny_federation, 0)
    losses = pretrain_on_public(model.encoder, tiny_federation.public, PretrainConfig(steps=60, batch_size=32), seed=1)
    # measured on the suite's public set (met:48): 2.32 -> 2.22, every one of the last 10 batches below
    # every one of the first 10 (the residual head starts at the public PCA whitening, which on 48 images
    # is already a near-perfect instance embedding; on all 174 Met paintings 2.57 -> 2.33)
    assert np.mean(losses[-10:]) < 0.97 * np.mean(losses[:10])
    assert max(losses[-10:]) < min(losses[:10])


def test_needs_augmented_views_and_is_on_only_under_dp_at_the_whitened_encoders_epsilon(tiny_federation):
    from fedstyle_secure.models.inputs import InputBank

    bare = InputBank(views=tiny_federation.public.views[:1], kind="features")
    with pytest.raises(ModelError, match="views"):
        pretrain_on_public(_model(tiny_federation, 0).encoder, bare, PretrainConfig(steps=1), seed=0)
    assert public_warm_start_steps(DpConfig(epsilon=8.0)) > 0 and public_warm_start_steps(None) == 0
    assert public_warm_start_steps(DpConfig(epsilon=2.0)) == 0  # below it: the invariant projection, untrained


def test_cached_warm_start_is_reused_and_a_damaged_entry_is_recomputed(tiny_federation, tmp_path):
    from fedstyle_secure.training.pretrain import warm_start_cache

    cache = warm_start_cache(tmp_path)

    def build():
        return make_initial_model(
            EncoderConfig(), tiny_federation.bank, tiny_federation.public, None, seed=0, pretrain_steps=20, cache=cache
        )

    computed = get_flat_params(build())
    assert cache.dir is not None
    (entry,) = list(cache.dir.glob("*.npy"))
    np.testing.assert_array_equal(np.load(entry), get_flat_params(build().encoder))
    planted = np.full_like(np.load(entry), 0.25)
    np.save(entry, planted)  # a valid entry is used as it is, not recomputed
    np.testing.assert_array_equal(get_flat_params(build().encoder), planted)
    np.save(entry, np.ones(7, dtype=np.float32))  # a stale entry of the wrong shape: recomputed
    np.testing.assert_array_equal(get_flat_params(build()), computed)
    entry.write_bytes(b"not an array")  # a damaged entry: recomputed and rewritten
    np.testing.assert_array_equal(get_flat_params(build()), computed)
    np.testing.assert_array_equal(np.load(entry), get_flat_params(build().encoder))
    other = make_initial_model(
        EncoderConfig(), tiny_federation.bank, tiny_federation.public, None, seed=1, pretrain_steps=20, cache=cache
    )
    assert len(list(cache.dir.glob("*.npy"))) == 2 and not np.array_equal(get_flat_params(other), computed)
