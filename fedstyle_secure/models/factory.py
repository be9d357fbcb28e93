"""Build the trainable model for a backbone, and save / load it without pickle."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedstyle_secure.errors import ModelError
from fedstyle_secure.models.heads import (
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_HIDDEN_DIM,
    ProjectionHead,
    ScratchStyleCNN,
    StyleModel,
)
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, InputBank

STANDARDISATION_FLOOR = 1e-3  # minimum per-feature std, guards features constant on the public set


@dataclass(frozen=True)
class EncoderConfig:
    backbone: str = DEFAULT_BACKBONE
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    hidden_dim: int = DEFAULT_HIDDEN_DIM
    dropout: float = 0.1


def make_model(config: EncoderConfig, bank: InputBank, public: InputBank, n_classes: int | None = None) -> StyleModel:
    """A freshly initialised model (seed torch first).  Frozen-feature heads start standardised
    with statistics of the *public* inputs; the simulator and the server replace them with the
    federation's securely aggregated statistics in a set-up round."""
    if config.backbone == "scratch":
        encoder: nn.Module = ScratchStyleCNN(out_dim=config.embedding_dim)
    else:
        head = ProjectionHead(bank.input_shape[0], config.hidden_dim, config.embedding_dim, config.dropout)
        pub = public.views[0].astype(np.float64)
        std = np.maximum(pub.std(axis=0), STANDARDISATION_FLOOR)
        head.set_standardisation(torch.from_numpy(pub.mean(axis=0)).float(), torch.from_numpy(std).float())
        encoder = head
    return StyleModel(encoder, n_classes, config.embedding_dim)


def save_encoder(model: StyleModel, config: EncoderConfig, directory: Path) -> None:
    """Write ``encoder.json`` (config) and ``encoder.npz`` (tensors, no pickle) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.encoder.state_dict().items()}
    np.savez(directory / "encoder.npz", **state)
    (directory / "encoder.json").write_text(json.dumps({"format": "fedstyle-encoder/1", **asdict(config)}, indent=2))


def load_encoder(directory: Path) -> tuple[StyleModel, EncoderConfig]:
    """Inverse of :func:`save_encoder`; raises :class:`ModelError` naming what is wrong."""
    meta_path, weights_path = directory / "encoder.json", directory / "encoder.npz"
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{directory} is not a saved encoder (needs encoder.json and encoder.npz)")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.pop("format", None) != "fedstyle-encoder/1":
            raise ModelError(f"{meta_path}: unknown format")
        config = EncoderConfig(**meta)
        with np.load(weights_path, allow_pickle=False) as npz:
            state = {k: torch.from_numpy(npz[k]) for k in npz.files}
    except (ValueError, TypeError, OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read encoder in {directory}: {exc}") from exc
    if config.backbone == "scratch":
        encoder: nn.Module = ScratchStyleCNN(out_dim=config.embedding_dim)
    else:
        if "fc1.weight" not in state:
            raise ModelError(f"{weights_path} lacks fc1.weight")
        encoder = ProjectionHead(
            int(state["fc1.weight"].shape[1]), config.hidden_dim, config.embedding_dim, config.dropout
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{weights_path} does not match its config: {exc}") from exc
    model = StyleModel(encoder, None, config.embedding_dim)
    return model.eval(), config
