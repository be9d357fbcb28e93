"""The model every party of a networked federation starts from, built the same way by the server
and by each artist from public inputs only (the public image set, the plan's seed, embedding
dimension, roster size and algorithm).

The server needs it to plan every round itself: the layout of what artists contribute
(:func:`~fedstyle_secure.federation.round_layout.round_layout`) and, under DP, the untouched
part of the model (the public warm start) that contributions no longer carry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import content_key
from fedstyle_secure.data.public import default_public_set, public_set_size
from fedstyle_secure.federation.client import federation_shape
from fedstyle_secure.federation.round_layout import FederationShape
from fedstyle_secure.federation.strategy import AlgorithmSpec, algorithm_spec
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, DEFAULT_VIEWS, InputBank, build_input_bank
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.training.dataset import load_public_images
from fedstyle_secure.training.pretrain import make_initial_model, warm_start_cache
from fedstyle_secure.transport.config import ServerConfig


def public_bank(cache_dir: Path, public_set: str | None = None) -> InputBank:
    """The public alignment set's inputs (originals and :data:`DEFAULT_VIEWS` views), cached in ``cache_dir``:
    the named set of :mod:`fedstyle_secure.data.public` (default :func:`default_public_set`)."""
    images = load_public_images(None, public_set)
    keys = [content_key(p) for p in images]
    return build_input_bank(images, keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=cache_dir)


def starting_model(
    spec: AlgorithmSpec,
    embedding_dim: int,
    n_artists: int,
    seed: int,
    dp: DpConfig | None,
    bank: InputBank,
    public: InputBank,
    cache_dir: Path,
    pretrain_steps: int,
) -> StyleModel:
    """:func:`make_initial_model` as every party of the federation calls it: the encoder the
    announced DP plan ``dp`` implies (:func:`encoder_config_for`) after the announced
    ``pretrain_steps`` of public warm start."""
    encoder = dataclasses.replace(encoder_config_for(dp), embedding_dim=embedding_dim)
    return make_initial_model(
        encoder,
        bank,
        public,
        n_artists if spec.needs_classifier else None,
        seed=seed,
        pretrain_steps=pretrain_steps,
        cache=warm_start_cache(cache_dir),
    )


def server_model(config: ServerConfig, n_artists: int, cache_dir: Path) -> tuple[StyleModel, FederationShape]:
    """The server's copy of the starting model and the federation's shape (what each round sums).

    Without DP and warm start the parameters depend only on the seed and the architecture, so the
    public set is not loaded (a placeholder of the right width sizes the model; the public-set
    standardisation buffers it would set are never aggregated)."""
    spec, private = algorithm_spec(config.schedule.algorithm), config.dp is not None
    if private or config.pretrain_steps:
        public = public_bank(cache_dir)
    else:
        public = InputBank(views=np.zeros((1, 1, STYLE_FEATURE_DIM), dtype=np.float32), kind="features")
    dim, seed = config.embedding_dim, config.schedule.seed
    model = starting_model(spec, dim, n_artists, seed, config.dp, public, public, cache_dir, config.pretrain_steps)
    private_layers = config.dp.private_layers if config.dp is not None else None
    public_count = public_set_size(default_public_set())
    shape = federation_shape(spec, model, STYLE_FEATURE_DIM, public_count, dim, private_layers)
    return model, shape
