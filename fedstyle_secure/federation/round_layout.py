"""What every round's summed vector looks like, from the federation's plan alone (pure NumPy).

Artists pack their contribution with :func:`round_layout` and the server (gRPC coordinator or
in-process simulator) unpacks, sizes and checks sums with the *same* function, from its own
state: the model, the embedding dimension, the public set size and the algorithm.  No upload
ever decides the layout of a round (an artist's short ``feature_mean`` is refused alone).

"Encrypt only what changes": a round contributes only the parameters the plan says are trained
-- every trainable parameter without DP, under DP with ``private_layers = "last"`` only the
encoder's last layer and the classifier (:class:`ModelShape`); the rest stays at the public
warm start that every party computes identically, so the server rebuilds the full model from
the untouched part it already holds (:meth:`ModelShape.merge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.federation.strategy import CONTRIBUTION_RANGE, FEATURE_MOMENT_RANGE, AlgorithmSpec

ROUND_KINDS: tuple[str, ...] = ("setup", "train", "final")


@dataclass(frozen=True)
class ModelShape:
    """The flat trainable-parameter vector of the model: its length and the ``[start, stop)``
    ranges a round contributes (sorted, disjoint; all of it without DP)."""

    param_count: int
    trained: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        previous = 0
        for start, stop in self.trained:
            if not previous <= start < stop <= self.param_count:
                raise ValueError(
                    f"trained ranges {self.trained} must be sorted, disjoint, non-empty "
                    f"and within 0..{self.param_count}"
                )
            previous = stop

    @classmethod
    def everything(cls, param_count: int) -> ModelShape:
        return cls(param_count, ((0, param_count),) if param_count else ())

    @property
    def trained_count(self) -> int:
        return sum(stop - start for start, stop in self.trained)

    def select(self, flat: np.ndarray) -> np.ndarray:
        """The contributed entries of a full parameter vector ``(param_count,)``: a view of
        ``flat`` when they are one range (all of it without DP), else a copy; never an index
        array, which would take twice the model's size."""
        if flat.shape != (self.param_count,):
            raise ValueError(f"parameter vector has shape {flat.shape}, the model has ({self.param_count},)")
        pieces = [flat[start:stop] for start, stop in self.trained]
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else flat[:0].copy()

    def merge(self, base: np.ndarray | None, trained: np.ndarray) -> np.ndarray:
        """The full vector: ``base`` (the untouched part the server holds) with the trained
        entries replaced by ``trained`` ``(trained_count,)``.  ``base`` may be None only when
        everything is trained."""
        if trained.shape != (self.trained_count,):
            raise ValueError(f"trained values have shape {trained.shape}, the plan trains ({self.trained_count},)")
        if base is None:
            if self.trained_count != self.param_count:
                raise ValueError("the server holds no model, but the plan trains only part of it")
            return trained.copy()
        if base.shape != (self.param_count,):
            raise ValueError(f"the server's parameters have shape {base.shape}, the model has ({self.param_count},)")
        full = np.array(base, copy=True)
        offset = 0
        for start, stop in self.trained:
            full[start:stop] = trained[offset : offset + stop - start]
            offset += stop - start
        return full


@dataclass(frozen=True)
class FederationShape:
    """Everything the round layouts depend on, as the server computes it from its own state.

    ``feature_dim``: frozen style features per artwork (set-up round); ``public_count`` x
    ``embedding_dim``: the public set's embeddings (alignment); ``model``: ``None`` for
    algorithms that keep no global model."""

    feature_dim: int
    embedding_dim: int
    public_count: int
    model: ModelShape | None


def round_value_range(kind: str) -> tuple[float, float]:
    """Every entry of one artist's packed contribution of a ``kind`` round lies in this range."""
    return FEATURE_MOMENT_RANGE if kind == "setup" else CONTRIBUTION_RANGE


def round_layout(spec: AlgorithmSpec, shape: FederationShape, kind: str) -> Layout | None:
    """The packed layout (fields in :func:`~.packing.pack`'s sorted order) of what every artist
    contributes in a ``kind`` round: :func:`~.strategy.feature_moments` in the set-up round,
    :func:`~.strategy.client_contribution` in a training round; ``None`` when nothing is summed."""
    if kind not in ROUND_KINDS:
        raise ValueError(f"unknown round kind {kind!r}; expected one of {ROUND_KINDS}")
    fields: dict[str, tuple[int, ...]] = {}
    if kind == "setup":
        fields = {"clients": (1,), "feature_mean": (shape.feature_dim,), "feature_sq_mean": (shape.feature_dim,)}
    elif kind == "train":
        if spec.averages_parameters:
            if shape.model is None:
                raise ValueError(f"{spec.name} averages parameters but the plan has no model shape")
            fields |= {"weighted_params": (shape.model.trained_count,), "weight": (1,)}
        if spec.aligns_public:
            fields |= {"public_embeddings": (shape.public_count, shape.embedding_dim), "clients": (1,)}
    return Layout(tuple(sorted(fields.items()))) if fields else None
