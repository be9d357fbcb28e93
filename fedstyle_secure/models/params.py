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
    flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in trainable_parameters(model)])
    return flat.cpu().numpy()  # a fresh tensor's memory, no second copy


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


def flat_ranges(model: nn.Module, selected: list[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """The ``[start, stop)`` ranges of :func:`get_flat_params`'s vector that hold the parameters
    ``selected`` (adjacent ones merged); raises ``ValueError`` if one is not trainable in ``model``."""
    wanted, offset = {id(p) for p in selected}, 0
    ranges: list[tuple[int, int]] = []
    for p in trainable_parameters(model):
        if id(p) in wanted:
            wanted.discard(id(p))
            if ranges and ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], offset + p.numel())
            else:
                ranges.append((offset, offset + p.numel()))
        offset += p.numel()
    if wanted:
        raise ValueError(f"{len(wanted)} selected parameter(s) are not trainable parameters of the model")
    return tuple(ranges)
