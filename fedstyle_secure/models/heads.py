"""Trainable parts of the style encoder (all Opacus-compatible: Linear, Conv2d, LayerNorm,
GroupNorm -- no BatchNorm).  Every encoder returns L2-normalised embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_EMBEDDING_DIM = 128
DEFAULT_HIDDEN_DIM = 512


class ProjectionHead(nn.Module):
    """Style statistics -> embedding: standardise, Linear, GELU, Dropout, Linear, L2-normalise.

    ``input_mean``/``input_std`` (buffers) standardise the frozen features; they are computed
    from the public alignment set, so they cost no privacy and are identical for every artist.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        out_dim: int = DEFAULT_EMBEDDING_DIM,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.drop = nn.Dropout(dropout)
        if hidden_dim > 0:
            self.fc1: nn.Module = nn.Linear(in_dim, hidden_dim)
            self.act: nn.Module = nn.GELU()
            self.fc2 = nn.Linear(hidden_dim, out_dim)
        else:  # a linear projection
            self.fc1, self.act = nn.Identity(), nn.Identity()
            self.fc2 = nn.Linear(in_dim, out_dim)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        return F.normalize(self.fc2(self.drop(self.act(self.fc1(self.drop(x))))), dim=-1)


def _style_pool(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(2)
    return torch.cat([flat.mean(dim=2), (flat.var(dim=2, unbiased=False) + 1e-5).sqrt()], dim=1)


class ScratchStyleCNN(nn.Module):
    """A small CNN trained from scratch on 64x64 views (``--backbone scratch``).

    Three strided conv stages with GroupNorm; the channel mean and std of each stage are
    concatenated (a learned analogue of the frozen style statistics) and projected.
    """

    def __init__(self, out_dim: int = DEFAULT_EMBEDDING_DIM, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        stages = []
        in_ch = 3
        for w in widths:
            stages.append(nn.Sequential(nn.Conv2d(in_ch, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.GELU()))
            in_ch = w
        self.stages = nn.ModuleList(stages)
        self.fc1 = nn.Linear(2 * sum(widths), 256)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(256, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - 0.5
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(_style_pool(x))
        return F.normalize(self.fc2(self.act(self.fc1(torch.cat(pooled, dim=1)))), dim=-1)


class StyleModel(nn.Module):
    """An encoder plus, for the classification baselines, a linear artist classifier."""

    def __init__(self, encoder: nn.Module, n_classes: int | None = None, out_dim: int = DEFAULT_EMBEDDING_DIM) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = out_dim  # embedding dimension
        self.classifier = nn.Linear(out_dim, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
