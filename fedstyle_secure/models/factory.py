"""Build the trainable model for a backbone, and save / load it without pickle."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch import nn

from fedstyle_secure.data.array_cache import ArrayCache
from fedstyle_secure.errors import ConfigError, ModelError
from fedstyle_secure.files import read_json_bounded
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.models.heads import (
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_HIDDEN_DIM,
    HEADS,
    ProjectionHead,
    ScratchStyleCNN,
    StyleModel,
    public_invariant_projection,
    public_whitening,
)
from fedstyle_secure.models.inputs import BACKBONES, DEFAULT_BACKBONE, InputBank
from fedstyle_secure.models.npz import read_npz, require_finite
from fedstyle_secure.validation import from_table, ge, le, one_of, validate_on_init

STANDARDISATION_FLOOR = 1e-3  # minimum per-feature std, guards features constant on the public set
ENCODER_FORMAT = "fedstyle-encoder/1"
MAX_LAYER_WIDTH = 8192  # a saved encoder's embedding or hidden width may not exceed it (the default is 512)
MAX_ENCODER_BYTES = 256 * 1024 * 1024  # a saved encoder's arrays, loaded (the default head: ~3.5 MB)
MAX_ENCODER_JSON_BYTES = 64 * 1024  # encoder.json: a handful of settings (~300 bytes)
PROJECTIONS: tuple[str, ...] = ("whitening", "invariant")


@dataclass(frozen=True)
class EncoderConfig:
    """An encoder's architecture.  Every field is checked when the config is made, in code or from
    a saved ``encoder.json``: a crafted file could otherwise ask for layers of tens of GB."""

    backbone: Annotated[str, one_of(BACKBONES)] = DEFAULT_BACKBONE
    embedding_dim: Annotated[int, ge(1), le(MAX_LAYER_WIDTH)] = DEFAULT_EMBEDDING_DIM
    hidden_dim: Annotated[int, ge(0), le(MAX_LAYER_WIDTH)] = DEFAULT_HIDDEN_DIM
    dropout: Annotated[float, ge(0), le(1)] = 0.1
    head: Annotated[str, one_of(HEADS)] = "residual"
    # of the residual head's public PCA-whitening start (inf: plain PCA, see public_whitening)
    whitening_shrinkage: Annotated[float, ge(0)] = 0.0
    # the residual head's fixed public projection: PCA whitening, or augmentation-invariant directions
    projection: Annotated[str, one_of(PROJECTIONS)] = "whitening"

    def __post_init__(self) -> None:
        validate_on_init(self)


def make_model(
    config: EncoderConfig,
    bank: InputBank,
    public: InputBank,
    n_classes: int | None = None,
    cache: ArrayCache | None = None,
) -> StyleModel:
    """A freshly initialised model (seed torch first).  Frozen-feature heads start standardised
    with statistics of the *public* inputs; the simulator and the server replace them with the
    federation's securely aggregated statistics in a set-up round.  ``cache`` keeps the invariant
    projection (about a second of CPU; a Flower artist builds its model for every message)."""
    if config.backbone == "scratch":
        encoder: nn.Module = ScratchStyleCNN(out_dim=config.embedding_dim)
    else:
        head = ProjectionHead(bank.input_shape[0], config.hidden_dim, config.embedding_dim, config.dropout, config.head)
        pub = public.views[0].astype(np.float64)
        mean, std = pub.mean(axis=0), np.maximum(pub.std(axis=0), STANDARDISATION_FLOOR)
        head.set_standardisation(torch.from_numpy(mean).float(), torch.from_numpy(std).float())
        if head.base is not None:
            if config.projection == "invariant":
                weight, bias = _invariant_projection(public, mean, std, config.embedding_dim, cache)
            else:
                weight, bias = public_whitening((pub - mean) / std, config.embedding_dim, config.whitening_shrinkage)
            head.set_projection(torch.from_numpy(weight), torch.from_numpy(bias))
        encoder = head
    return StyleModel(encoder, n_classes, config.embedding_dim)


def _invariant_projection(
    public: InputBank, mean: np.ndarray, std: np.ndarray, out_dim: int, cache: ArrayCache | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`public_invariant_projection` of the standardised public views, kept in ``cache`` (keyed by
    the public inputs and ``out_dim``; it depends on nothing else) as one ``(out, in + 1)`` array."""

    def compute() -> np.ndarray:
        views = (public.test_time_inputs().astype(np.float64) - mean) / std
        weight, bias = public_invariant_projection(views, out_dim)
        return np.hstack([weight, bias[:, None]])

    digest = hashlib.sha256(f"invariant-projection-v1/{out_dim}".encode())
    digest.update(np.ascontiguousarray(public.views).tobytes())
    shape = (out_dim, public.input_shape[0] + 1)
    store = cache if cache is not None else ArrayCache(None, "")  # None: computed, not kept
    joined = store.get_or_compute(
        digest.hexdigest()[:32], compute, lambda a: a.shape == shape and a.dtype == np.float32
    )
    return joined[:, :-1], joined[:, -1]


def save_encoder(model: StyleModel, config: EncoderConfig, directory: Path) -> None:
    """Write ``encoder.json`` (config) and ``encoder.npz`` (tensors, no pickle) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.encoder.state_dict().items()}
    np.savez(directory / "encoder.npz", **state)
    (directory / "encoder.json").write_text(json.dumps({"format": ENCODER_FORMAT, **asdict(config)}, indent=2))


def _checked_config(meta: object, meta_path: Path) -> EncoderConfig:
    """The :class:`EncoderConfig` of a saved ``encoder.json``, every field type- and range-checked
    before any layer is allocated."""
    if not isinstance(meta, dict) or meta.get("format") != ENCODER_FORMAT:
        raise ModelError(f"{meta_path}: not a {ENCODER_FORMAT} file")
    fields = {k: v for k, v in meta.items() if k != "format"}
    fields.setdefault("head", "mlp")  # encoders saved before the residual head existed
    try:
        return from_table(EncoderConfig, fields, f"{meta_path}: encoder")
    except ConfigError as exc:
        raise ModelError(str(exc)) from None


def load_encoder(directory: Path) -> tuple[StyleModel, EncoderConfig]:
    """Inverse of :func:`save_encoder`; raises :class:`ModelError` naming what is wrong."""
    meta_path, weights_path = directory / "encoder.json", directory / "encoder.npz"
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{directory} is not a saved encoder (needs encoder.json and encoder.npz)")
    try:
        meta = read_json_bounded(meta_path, MAX_ENCODER_JSON_BYTES)
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot read encoder in {directory}: {exc}") from exc
    config = _checked_config(meta, meta_path)
    arrays = read_npz(weights_path, MAX_ENCODER_BYTES)
    for name, array in arrays.items():
        require_finite(array, f"{weights_path}: {name}")
    state = {name: torch.from_numpy(array) for name, array in arrays.items()}
    if config.backbone == "scratch":
        encoder: nn.Module = ScratchStyleCNN(out_dim=config.embedding_dim)
    else:
        first = "fc1.weight" if config.hidden_dim > 0 else "fc2.weight"
        if first not in state or state[first].ndim != 2:
            raise ModelError(f"{weights_path} lacks the head's first layer (a 2-D {first})")
        in_dim = int(state[first].shape[1])
        if in_dim != STYLE_FEATURE_DIM:
            raise ModelError(
                f"{weights_path}: the head reads {in_dim} features, the backbone gives {STYLE_FEATURE_DIM}"
            )
        encoder = ProjectionHead(in_dim, config.hidden_dim, config.embedding_dim, config.dropout, config.head)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{weights_path} does not match its config: {exc}") from exc
    model = StyleModel(encoder, None, config.embedding_dim)
    return model.eval(), config
