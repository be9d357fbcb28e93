"""Losses of FedStyle and its baselines (pure torch, no I/O).

All embeddings are L2-normalised rows; ``tau`` is a softmax temperature (dimensionless).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, tau: float
) -> torch.Tensor:
    """Cross-entropy of cosine-to-prototype logits: pull each embedding to its own artist's
    prototype, push it from every other prototype.

    ``embeddings (B, D)``, ``labels (B,)`` indices into ``prototypes (A, D)``.  Prototypes are
    normalised here; rows of artists absent from the federation may be zero (they then act as
    a constant logit and carry no gradient).
    """
    logits = embeddings @ F.normalize(prototypes, dim=1).T / tau
    return F.cross_entropy(logits, labels)


def instance_contrastive_loss(view_a: torch.Tensor, view_b: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent (SimCLR) between two views of the same ``B`` artworks: ``(B, D)`` each.

    Each view's positive is the other view of the same artwork; the ``2B - 2`` other views in
    the batch are negatives.  Gives a single-artist client a structured space to learn.
    """
    batch = view_a.shape[0]
    z = torch.cat([view_a, view_b], dim=0)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(z.device)
    return F.cross_entropy(sim, targets)


def alignment_loss(public_embeddings: torch.Tensor, consensus: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the client's and the server's consensus embeddings of the
    public alignment set, ``(M, D)`` each; for unit vectors this is ``2 - 2 cos``."""
    return (public_embeddings - consensus).pow(2).sum(dim=1).mean()


def prototype_distance_loss(embeddings: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """FedProto's regulariser: mean squared distance of each embedding to its global prototype."""
    return (embeddings - prototypes[labels]).pow(2).sum(dim=1).mean()


def proximal_term(params: list[torch.Tensor], anchor: list[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``0.5 * ||w - w_global||^2`` summed over parameters (scale by mu outside)."""
    return 0.5 * sum(((p - a).pow(2).sum() for p, a in zip(params, anchor)), torch.zeros(()))
