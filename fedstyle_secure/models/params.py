"""Flatten / restore the trainable parameters of a model (pure torch/NumPy).

Aggregation works on flat float vectors, whatever the protection; these two functions are the
only place that knows how a model maps onto one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def trainable_parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def get_flat_params(model: nn.Module) -> np.ndarray:
    """All trainable parameters, concatenated in ``model.parameters()`` order, as float32."""
    return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model)]).cpu().numpy().astype(np.float32)


def set_flat_params(model: nn.Module, flat: np.ndarray) -> None:
    """Inverse of :func:`get_flat_params`; raises ``ValueError`` on a length mismatch."""
    params = trainable_parameters(model)
    total = sum(p.numel() for p in params)
    if flat.shape != (total,):
        raise ValueError(f"expected {total} parameter values, got shape {flat.shape}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(torch.from_numpy(np.asarray(flat[offset : offset + n], dtype=np.float32)).view_as(p))
            offset += n
