"""One client's local training: the objectives of FedStyle and its baselines (no I/O).

The same loop runs with or without DP-SGD (``dp``); see :mod:`fedstyle_secure.privacy.plan` (plan) and
:mod:`fedstyle_secure.training.dp_sgd` (Opacus).

Every private loss is a **sum of per-artwork terms**: an artwork's loss depends only on its
own views, the broadcast (public) prototypes and consensus, and detached embeddings of the
public set.  That is what lets DP-SGD clip and noise per artwork without changing the
objective.  The public-alignment term sees only public images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedstyle_secure.errors import ConfigError, ModelError
from fedstyle_secure.models.embed import embed
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import trainable_parameters
from fedstyle_secure.privacy.plan import DpPlan
from fedstyle_secure.randomness import CsprngNoise, NoiseSource
from fedstyle_secure.training.dp_sgd import (
    PrivateTraining,
    known_opacus_warnings_handled,
    make_private,
    only_trainable,
    privately_trained_parameters,
)
from fedstyle_secure.training.losses import alignment_loss, proximal_term
from fedstyle_secure.training.optimisers import plain_optimiser

OBJECTIVES: tuple[str, ...] = ("fedstyle", "classifier", "fedproto", "local")


DEFAULT_LOCAL_EPOCHS = 2
"""Local epochs per round, the one default of ``fedstyle simulate --local-epochs``, ``client.epochs``
of a networked artist and ``fedstyle launch``."""


@dataclass(frozen=True)
class LocalConfig:
    """Hyper-parameters of local training (``lr`` of the local optimizer; ``tau`` dimensionless).

    Why plain SGD (measured on painters-dev, one artist per client): with Adam, whose state restarts
    every round, the first steps move every parameter by ``lr`` whatever its gradient, so the tiny
    gradients that a one-artist client sends to every *other* artist's directions are blown up to
    full steps and the average of the clients' models is not the average of their gradients; the
    residual head's start then degraded (artist accuracy 0.57 -> 0.51 over 10 rounds at tau 0.5).
    SGD keeps FedAvg the sum of the clients' gradients.  ``tau = 0.1`` sharpened the prototype
    softmax (0.525 -> 0.59 with Adam).  ``lr = 0.5`` (was 0.3): under the server's FedAdam step the
    local lr sets the direction of each round's update more than its size; 0.5 lifted every
    parameter-averaging algorithm on painters-dev, wikiart-dev and synthetic (3 seeds,
    docs/utility_levers.md); 0.8 cost wikiart-dev accuracy.  ``classifier_weight = 3`` (was 1): the
    classifier term trades a little artist accuracy for artwork retrieval; over 5 seeds, weight 3
    raised mAP on painters-dev on every seed (+0.008 to +0.021) and held it elsewhere, at -0.007
    (wikiart-dev) and -0.012 (synthetic) accuracy, both inside one std; weight 4 cost more accuracy."""

    epochs: int = DEFAULT_LOCAL_EPOCHS
    batch_size: int = 16
    lr: float = 0.5
    tau: float = 0.1
    margin: float = 0.0
    classifier_weight: float = 3.0
    instance_weight: float = 0.1
    alignment_weight: float = 1.0
    proximal_mu: float = 0.01
    prototype_distance_weight: float = 1.0
    public_batch_size: int = 32
    optimizer: str = "sgd"  # "sgd" (plain) or "adam" (fresh state each round)
    anchor_original: bool = False  # draw the anchor view among the original and its augmentations

    def __post_init__(self) -> None:
        """Refuse values that would train nothing or nonsense, naming the option (``--batch-size -2``
        used to run no step at all and report the untrained model; ``--tau -1`` inverted the loss)."""
        for name in ("batch_size", "public_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}): must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "tau"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} (--{name}): must be a positive finite number, got {value}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer: must be 'sgd' or 'adam', got {self.optimizer!r}")


@dataclass(frozen=True)
class LocalData:
    """A client's private training artworks: model inputs and global artist indices."""

    bank: InputBank
    labels: np.ndarray

    @property
    def artists(self) -> np.ndarray:
        return np.unique(self.labels)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RoundContext:
    """What the server broadcast for this round (all public), plus the client's own anchor.

    ``prototypes (A, D)`` with ``known (A,)`` marking artists that published one (the client's
    own rows are its own latest publication, so no private statistic enters the loss unreleased);
    ``consensus (M, D)``: the server's mean embedding of each public image;
    ``public (M, ...)``: the public images' model inputs; ``anchor``: global parameters (FedProx).
    """

    n_artists: int
    prototypes: np.ndarray | None = None
    known: np.ndarray | None = None
    consensus: np.ndarray | None = None
    public: torch.Tensor | None = None
    anchor: list[torch.Tensor] | None = None


@dataclass
class LocalResult:
    """Mean training loss per epoch and the number of optimiser steps taken."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0


def _masked_prototype_logits(
    z: torch.Tensor, labels: torch.Tensor, protos: torch.Tensor, known: torch.Tensor, tau: float, margin: float
) -> torch.Tensor:
    """Cosine-to-prototype logits over published prototypes, with an additive (CosFace) margin
    subtracted from each artwork's own-artist cosine."""
    cosines = z @ F.normalize(protos, dim=1).T
    if margin:
        cosines = cosines - margin * F.one_hot(labels, cosines.shape[1]).to(cosines.dtype)
    return (cosines / tau).masked_fill(~known, float("-inf"))


def _instance_losses(z: torch.Tensor, z_pos: torch.Tensor, negatives: torch.Tensor | None, tau: float) -> torch.Tensor:
    """Per-artwork InfoNCE: the other view (detached) is the positive, public embeddings the negatives."""
    pos = (z * z_pos).sum(dim=1, keepdim=True)
    logits = pos if negatives is None else torch.cat([pos, z @ negatives.T], dim=1)
    return F.cross_entropy(logits / tau, torch.zeros(len(z), dtype=torch.long), reduction="none")


def _classifier(model: nn.Module) -> nn.Module | None:
    """The model's classification layer, ``None`` if it has none."""
    classifier = getattr(model, "classifier", None)
    return classifier if isinstance(classifier, nn.Module) else None


def private_losses(
    objective: str,
    model: nn.Module,
    z: torch.Tensor,
    z_pos: torch.Tensor,
    labels: torch.Tensor,
    protos: torch.Tensor | None,
    known: torch.Tensor | None,
    negatives: torch.Tensor | None,
    cfg: LocalConfig,
) -> torch.Tensor:
    """Per-artwork losses ``(B,)`` of ``objective`` (see :data:`OBJECTIVES`)."""
    if objective in ("fedstyle", "local"):
        losses = cfg.instance_weight * _instance_losses(z, z_pos, negatives, cfg.tau)
        if protos is not None and known is not None and int(known.sum()) > 1:  # none before any publication
            logits = _masked_prototype_logits(z, labels, protos, known, cfg.tau, cfg.margin)
            losses = losses + F.cross_entropy(logits, labels, reduction="none")
        classifier = _classifier(model)
        if cfg.classifier_weight and classifier is not None:
            losses = losses + cfg.classifier_weight * F.cross_entropy(classifier(z), labels, reduction="none")
        return losses
    if objective in ("classifier", "fedproto"):
        classifier = _classifier(model)
        if classifier is None:
            raise ModelError(f"objective {objective!r} needs a classifier; {type(model).__name__} has none")
        losses = F.cross_entropy(classifier(z), labels, reduction="none")
        if objective == "fedproto" and protos is not None and known is not None:
            target = F.normalize(protos, dim=1)[labels]
            weight = known[labels].float()
            losses = losses + cfg.prototype_distance_weight * weight * (z - target).pow(2).sum(dim=1)
        return losses
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def _pick_views(
    n: int, n_views: int, rng: np.random.Generator, original: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    if n_views == 0:
        zeros = np.zeros(n, dtype=np.int64)
        return zeros, zeros
    if original:  # anchor and positive: two distinct views among the original (0) and the augmentations
        anchor = rng.integers(0, n_views + 1, size=n)
        return anchor, (anchor + rng.integers(1, n_views + 1, size=n)) % (n_views + 1)
    anchor = rng.integers(1, n_views + 1, size=n)
    if n_views == 1:
        return anchor, np.zeros(n, dtype=np.int64)
    offset = rng.integers(1, n_views, size=n)
    return anchor, (anchor - 1 + offset) % n_views + 1


def public_loss(model: nn.Module, ctx: RoundContext, cfg: LocalConfig, rng: np.random.Generator) -> torch.Tensor | None:
    """Alignment to the server's consensus on a minibatch of public images (no privacy cost)."""
    if ctx.consensus is None or ctx.public is None or cfg.alignment_weight == 0:
        return None
    idx = rng.choice(len(ctx.public), size=min(cfg.public_batch_size, len(ctx.public)), replace=False)
    z_pub = model(ctx.public[idx])
    return cfg.alignment_weight * alignment_loss(z_pub, torch.from_numpy(ctx.consensus[idx]).float())


def non_private_loss(
    objective: str,
    model: nn.Module,
    params: list[torch.Tensor],
    ctx: RoundContext,
    cfg: LocalConfig,
    rng: np.random.Generator,
) -> torch.Tensor | None:
    """Loss terms that read no private artwork: public alignment (FedStyle) and FedProx's proximal term."""
    terms: list[torch.Tensor] = []
    if objective == "fedstyle":
        aligned = public_loss(model, ctx, cfg, rng)
        if aligned is not None:
            terms.append(aligned)
    if ctx.anchor is not None and cfg.proximal_mu > 0:
        terms.append(cfg.proximal_mu * proximal_term(params, ctx.anchor))
    return sum(terms[1:], terms[0]) if terms else None


def _add_non_private_gradient(private: PrivateTraining, params: list[torch.Tensor], extra: torch.Tensor | None) -> None:
    """Add the gradient of ``extra`` to the already clipped-and-noised private gradient."""
    if extra is None:
        return
    grads = torch.autograd.grad(extra, params, allow_unused=True)
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g.detach() if p.grad is None else p.grad + g.detach()


def _batches(n: int, cfg: LocalConfig, rng: np.random.Generator, private: PrivateTraining | None):
    """Index batches of one epoch: under DP Poisson-sampled from the noise source (privacy-relevant),
    otherwise a permutation from the seeded ``rng`` (not privacy-relevant)."""
    if private is not None:
        for indices in private.loader:  # Poisson sampling: variable, possibly empty batches
            yield indices.numpy()
        return
    order = rng.permutation(n)
    for start in range(0, n, cfg.batch_size):
        yield order[start : start + cfg.batch_size]


def train_local(
    model: nn.Module,
    data: LocalData,
    ctx: RoundContext,
    objective: str,
    cfg: LocalConfig,
    rng: np.random.Generator,
    dp: DpPlan | None = None,
    noise: NoiseSource | None = None,
) -> LocalResult:
    """Run ``cfg.epochs`` epochs of Adam on ``objective`` over the client's private artworks;
    with ``dp``, each epoch is one pass of Opacus DP-SGD with Poisson sampling over the
    parameters ``dp.private_layers`` selects (the others stay as they are).

    ``rng`` (seeded) picks augmented views and public images, which DP does not rest on; the DP
    noise and Poisson batches come from ``noise`` (default: a fresh OS-keyed CSPRNG; a seeded
    source only for research runs)."""
    if dp is None:
        return _train_epochs(model, data, ctx, objective, cfg, rng, None, None)
    noise = CsprngNoise() if noise is None else noise
    private = privately_trained_parameters(model, dp.private_layers)
    if ctx.anchor is not None:  # FedProx's anchor follows the parameters actually trained
        kept = {id(p) for p in private}
        ctx = replace(ctx, anchor=[a for p, a in zip(trainable_parameters(model), ctx.anchor) if id(p) in kept])
    with known_opacus_warnings_handled(noise), only_trainable(model, private):
        return _train_epochs(model, data, ctx, objective, cfg, rng, dp, noise)


def _train_epochs(
    model: nn.Module,
    data: LocalData,
    ctx: RoundContext,
    objective: str,
    cfg: LocalConfig,
    rng: np.random.Generator,
    dp: DpPlan | None,
    noise: NoiseSource | None,
) -> LocalResult:
    params = trainable_parameters(model)
    private = None
    if dp is not None and noise is not None:  # DP-SGD: Opacus wraps a torch.optim optimiser
        inner = torch.optim.SGD(params, lr=cfg.lr) if cfg.optimizer == "sgd" else torch.optim.Adam(params, lr=cfg.lr)
        private = make_private(model, inner, len(data), dp, noise)
    optimiser = None if private is not None else plain_optimiser(cfg.optimizer, params, cfg.lr)
    net = private.module if private else model
    result = LocalResult()
    labels_all = torch.from_numpy(data.labels)
    protos = None if ctx.prototypes is None else torch.from_numpy(ctx.prototypes).float()
    known = None if ctx.known is None else torch.from_numpy(ctx.known)
    negatives = None  # the public set's embeddings by the round's starting model (detached, public)
    if objective in ("fedstyle", "local") and ctx.public is not None:
        negatives = torch.from_numpy(embed(model, ctx.public))
    model.train()
    try:
        for _ in range(cfg.epochs):
            epoch_losses = []
            for items in _batches(len(data), cfg, rng, private):
                view, pos_view = _pick_views(len(items), data.bank.n_views, rng, cfg.anchor_original)
                per_artwork: torch.Tensor | None = None
                if private is not None and private.skips_empty_batches and len(items) == 0:
                    private.zero_gradient()  # an empty Poisson batch under ghost clipping: no forward pass
                    loss = torch.zeros(())
                else:
                    z = net(data.bank.take(view, items))
                    with torch.no_grad():
                        z_pos = net(data.bank.take(pos_view, items))
                    per_artwork = private_losses(
                        objective, net, z, z_pos, labels_all[items], protos, known, negatives, cfg
                    )
                    loss = per_artwork.sum() / max(len(items), 1)
                if optimiser is not None:
                    extra = non_private_loss(objective, model, params, ctx, cfg, rng)
                    total = loss if extra is None else loss + extra
                    optimiser.zero_grad()
                    total.backward()
                    optimiser.step()
                elif private is not None:  # DP-SGD
                    if per_artwork is not None:
                        private.backward(per_artwork)
                    if private.optimizer.pre_step():  # clip per artwork, add noise, average
                        private.module.disable_hooks()
                        try:
                            _add_non_private_gradient(
                                private, params, non_private_loss(objective, model, params, ctx, cfg, rng)
                            )
                        finally:
                            private.module.enable_hooks()
                        private.optimizer.original_optimizer.step()
                    private.optimizer.zero_grad(set_to_none=True)
                result.steps += 1
                epoch_losses.append(float(loss.detach()))
            result.losses.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
    finally:
        if private is not None:
            private.close()
        for p in params:  # the last step's gradients are not needed between rounds (the model's size)
            p.grad = None
    return result
