"""The model every party of a networked federation starts from, built the same way by the server
and by each artist from public inputs only (the public image set, the plan's seed, embedding
dimension, roster size and algorithm).

The server needs it to plan every round itself: the layout of what artists contribute
(:func:`~fedstyle_secure.federation.round_layout.round_layout`) and, under DP, the untouched
part of the model (the public warm start) that contributions no longer carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import content_key
from fedstyle_secure.federation.client import federation_shape
from fedstyle_secure.federation.round_layout import FederationShape
from fedstyle_secure.federation.strategy import AlgorithmSpec, algorithm_spec
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, DEFAULT_VIEWS, InputBank, build_input_bank
from fedstyle_secure.training.dataset import DEFAULT_PUBLIC_IMAGES, load_public_images
from fedstyle_secure.training.pretrain import default_pretrain_steps, make_initial_model, warm_start_cache
from fedstyle_secure.transport.config import ServerConfig


def public_bank(cache_dir: Path) -> InputBank:
    """The public alignment set's inputs (originals and :data:`DEFAULT_VIEWS` views), cached in ``cache_dir``."""
    images = load_public_images(None)
    keys = [content_key(p) for p in images]
    return build_input_bank(images, keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=cache_dir)


def starting_model(
    spec: AlgorithmSpec,
    embedding_dim: int,
    n_artists: int,
    seed: int,
    private: bool,
    bank: InputBank,
    public: InputBank,
    cache_dir: Path,
) -> StyleModel:
    """:func:`make_initial_model` as every party of the federation calls it (public warm start under DP)."""
    return make_initial_model(
        EncoderConfig(embedding_dim=embedding_dim),
        bank,
        public,
        n_artists if spec.needs_classifier else None,
        seed=seed,
        pretrain_steps=default_pretrain_steps(private),
        cache=warm_start_cache(cache_dir),
    )


def server_model(config: ServerConfig, n_artists: int, cache_dir: Path) -> tuple[StyleModel, FederationShape]:
    """The server's copy of the starting model and the federation's shape (what each round sums).

    Without DP there is no warm start and the parameters depend only on the seed and the
    architecture, so the public set is not loaded (a placeholder of the right width sizes the
    model; the public-set standardisation buffers it would set are never aggregated)."""
    spec, private = algorithm_spec(config.schedule.algorithm), config.dp is not None
    if private:
        public = public_bank(cache_dir)
    else:
        public = InputBank(views=np.zeros((1, 1, STYLE_FEATURE_DIM), dtype=np.float32), kind="features")
    dim, seed = config.embedding_dim, config.schedule.seed
    model = starting_model(spec, dim, n_artists, seed, private, public, public, cache_dir)
    private_layers = config.dp.private_layers if config.dp is not None else None
    shape = federation_shape(spec, model, STYLE_FEATURE_DIM, DEFAULT_PUBLIC_IMAGES, dim, private_layers)
    return model, shape
