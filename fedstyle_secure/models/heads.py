"""Trainable parts of the style encoder (all Opacus-compatible: Linear, Conv2d, LayerNorm,
GroupNorm -- no BatchNorm).  Every encoder returns L2-normalised embeddings."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from fedstyle_secure.errors import ModelError

DEFAULT_EMBEDDING_DIM = 128
DEFAULT_HIDDEN_DIM = 512


HEADS: tuple[str, ...] = ("residual", "mlp")
"""Head designs.  ``residual`` (default): a fixed projection of the standardised statistics onto
the PCA whitening of the *public* images (:func:`public_whitening`; buffers, identical for every
party), a trainable square ``base`` layer started at the identity, plus a residual MLP on the
standardised statistics whose output layer starts at zero -- so the untrained head embeds exactly
the public-whitened frozen statistics and training can only add to them.  ``mlp``: the earlier
Linear -> GELU -> Linear head from a random start."""


class ProjectionHead(nn.Module):
    """Style statistics -> embedding: standardise, then ``base(P x) + fc2(GELU(fc1(x)))``
    (``residual``) or ``fc2(GELU(fc1(x)))`` (``mlp``), L2-normalised.

    ``input_mean``/``input_std`` (buffers) standardise the frozen features; they are computed
    from the public alignment set (or the federation's securely summed moments), so they cost no
    privacy and are identical for every artist; so is the public projection ``P``
    (``projection``, ``projection_bias``).  ``hidden_dim=0`` makes the MLP one Linear layer.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor
    projection: torch.Tensor  # residual head only: the fixed public projection (buffer)
    projection_bias: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        out_dim: int = DEFAULT_EMBEDDING_DIM,
        dropout: float = 0.1,
        head: str = "mlp",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.drop = nn.Dropout(dropout)
        self.base: nn.Module | None = None
        if head == "residual":
            self.register_buffer("projection", torch.zeros(out_dim, in_dim))
            self.register_buffer("projection_bias", torch.zeros(out_dim))
            self.base = nn.Linear(out_dim, out_dim)
            with torch.no_grad():
                self.base.weight.copy_(torch.eye(out_dim))
                self.base.bias.zero_()
        if hidden_dim > 0:
            self.fc1: nn.Module = nn.Linear(in_dim, hidden_dim)
            self.act: nn.Module = nn.GELU()
            self.fc2 = nn.Linear(hidden_dim, out_dim)
        else:  # a linear projection
            self.fc1, self.act = nn.Identity(), nn.Identity()
            self.fc2 = nn.Linear(in_dim, out_dim)
        if self.base is not None:  # the residual branch starts silent
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    @torch.no_grad()
    def set_projection(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install the fixed public projection ``P``: ``(out, in)`` weight, ``(out,)`` bias (residual head)."""
        if self.base is None:
            raise ValueError("this head has no public projection")
        self.projection.copy_(weight)
        self.projection_bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        out = self.fc2(self.drop(self.act(self.fc1(self.drop(x)))))
        if self.base is not None:
            out = out + self.base(F.linear(x, self.projection, self.projection_bias))
        return F.normalize(out, dim=-1)


def public_whitening(features: np.ndarray, out_dim: int, shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening of standardised *public* features ``(M, F)`` to ``out_dim`` components, as a
    linear map ``z = W x + b`` with ``W (out_dim, F)``: component ``k`` is divided by
    ``sqrt(lambda_k + shrinkage * mean(lambda))`` (unit variance on the public set, so a public
    image maps to norm ~``sqrt(out_dim)``, the scale of the residual MLP's hidden layer);
    ``shrinkage = inf`` gives plain PCA (every component divided by the same ``sqrt(mean(lambda))``).
    Components beyond the public set's rank get zero rows.  Computed from the ``M x M`` Gram matrix."""
    x = features.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    eigvals, eigvecs = np.linalg.eigh(centred @ centred.T)  # ascending; M x M, cheap for M << F
    order = np.argsort(-eigvals)
    eigvals, eigvecs = np.maximum(eigvals[order], 0.0), eigvecs[:, order]
    variances = eigvals / max(len(x) - 1, 1)
    k = min(out_dim, int(np.sum(eigvals > 1e-9 * max(float(eigvals.max(initial=0.0)), 1e-300))))
    directions = (centred.T @ eigvecs[:, :k]) / np.sqrt(eigvals[:k])  # (F, k) orthonormal principal axes
    mean_var = float(variances.mean()) if len(variances) else 1.0
    scale = np.full(k, np.sqrt(mean_var)) if math.isinf(shrinkage) else np.sqrt(variances[:k] + shrinkage * mean_var)
    weight = np.zeros((out_dim, x.shape[1]))
    weight[:k] = directions.T / scale[:, None]
    return weight.astype(np.float32), (-weight @ mean).astype(np.float32)


def public_invariant_projection(
    views: np.ndarray, out_dim: int, nuisance_shrinkage: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Projection of standardised *public* features onto the ``out_dim`` directions that vary most
    between public images relative to how much augmentation moves them, as ``z = W x + b``.

    ``views (V, M, F)`` holds ``V`` views (original first) of ``M`` public images.  The directions
    solve ``S_t w = lambda (S_a + shrink) w`` (largest ``lambda``), where ``S_t`` is the scatter of
    every view around the mean and ``S_a`` that of each image's views around the image's mean (what
    crops, flips and colour jitter change, not what tells paintings apart), shrunk towards its mean
    eigenvalue by ``nuisance_shrinkage`` (0: pure ratio, 1: plain PCA).  A public-only linear
    discriminant whose "classes" are the public images.  Rows are scaled together so a public view
    maps to mean squared norm ``out_dim``, like :func:`public_whitening`; each row keeps its
    augmentation-normalised scale (``w^T (S_a + shrink) w = const``)."""
    if views.ndim != 3 or views.shape[0] < 2:
        raise ModelError(f"an invariant projection needs >= 2 views per public image, got shape {views.shape}")
    if not 0.0 < nuisance_shrinkage <= 1.0:
        raise ModelError(f"nuisance_shrinkage must be in (0, 1], got {nuisance_shrinkage}")
    x = views.astype(np.float64)
    mean = x.reshape(-1, x.shape[2]).mean(axis=0)
    total = (x - mean).reshape(-1, x.shape[2])
    nuisance = (x - x.mean(axis=0)).reshape(-1, x.shape[2])
    scatter_t = total.T @ total / len(total)
    scatter_a = nuisance.T @ nuisance / len(nuisance)
    floor = float(np.trace(scatter_a)) / len(scatter_a)
    regularised = (1.0 - nuisance_shrinkage) * scatter_a + nuisance_shrinkage * floor * np.eye(len(scatter_a))
    ratios, vectors = scipy.linalg.eigh(scatter_t, regularised)  # ascending; vectors^T regularised vectors = I
    k = min(out_dim, x.shape[2])
    directions, ratios = vectors[:, ::-1][:, :k], np.maximum(ratios[::-1][:k], 0.0)
    weight = np.zeros((out_dim, x.shape[2]))  # a direction's public variance is its ratio: sum them to out_dim
    weight[:k] = directions.T * math.sqrt(out_dim / max(float(ratios.sum()), 1e-300))
    return weight.astype(np.float32), (-weight @ mean).astype(np.float32)


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

    def projection_head(self) -> ProjectionHead:
        """The encoder, which must be a :class:`ProjectionHead` (frozen-feature backbones: the only
        ones whose inputs are standardised); raises :class:`~fedstyle_secure.errors.ModelError` otherwise."""
        if not isinstance(self.encoder, ProjectionHead):
            raise ModelError(f"input standardisation needs a ProjectionHead encoder, not {type(self.encoder).__name__}")
        return self.encoder
