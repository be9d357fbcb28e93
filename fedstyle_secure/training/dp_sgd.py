"""Opacus DP-SGD for one artist's local training: wrap the model, choose what is trained privately.

Fast paths: the backbone is frozen and its style statistics are cached, so only the small
projection head is trained privately (by default only its last layer, :data:`PRIVATE_LAYERS`);
clipping uses Opacus's ghost clipping by default: for the head's Linear layers an artwork's
gradient norm is ``|activation| * |output gradient|``, so per-artwork gradients are never
materialised (measured by ``scripts/bench_dp.py``).

Public-alignment treatment: the alignment loss only touches public images, so its gradient (and
FedProx's data-independent proximal gradient) is computed with Opacus's hooks disabled and added
*after* the private gradient has been clipped, noised and averaged.  This is post-processing of
the DP gradient plus a data-independent term, so it costs no privacy and cannot change the
clipping or the noise scale.

Randomness: the Gaussian noise of every step and the Poisson batches are drawn from a
:class:`~fedstyle_secure.randomness.NoiseSource` (:mod:`fedstyle_secure.training.dp_noise`), never
from torch's generators, which the public plan seed makes predictable.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.plan import PRIVATE_LAYERS, DpPlan
from fedstyle_secure.randomness import NoiseSource

if TYPE_CHECKING:  # Opacus is slow to import; make_private imports it when it is needed
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer


def privately_trained_parameters(model: nn.Module, private_layers: str) -> list[torch.Tensor]:
    """The parameters DP-SGD updates under ``private_layers`` (see :data:`PRIVATE_LAYERS`)."""
    if private_layers == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if private_layers != "last":
        raise PrivacyError(f"private layers must be one of {', '.join(PRIVATE_LAYERS)}, got {private_layers!r}")
    last = getattr(getattr(model, "encoder", model), "fc2", None)
    if not isinstance(last, nn.Module):
        raise PrivacyError(
            f"private_layers='last' needs an encoder whose final layer is fc2; {type(model).__name__} has none"
        )
    classifier = getattr(model, "classifier", None)
    keep = [*last.parameters(), *(classifier.parameters() if isinstance(classifier, nn.Module) else ())]
    return [p for p in keep if p.requires_grad]


@contextmanager
def only_trainable(model: nn.Module, params: list[torch.Tensor]) -> Iterator[None]:
    """Within the block, every other parameter of ``model`` is frozen (``requires_grad`` off, so
    Opacus neither hooks nor noises it); restored afterwards."""
    keep = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


CLIPPING_MODES: tuple[str, ...] = ("ghost", "hooks")
"""Opacus per-sample clipping implementations: ``ghost`` computes each artwork's gradient norm from
activations and output gradients and takes a second, reweighted backward pass (per-sample
gradients are never materialised); ``hooks`` materialises every per-sample gradient."""


class PerArtworkLoss(nn.Module):
    """The criterion handed to Opacus's ghost clipping: its input already *is* the ``(B,)``
    vector of per-artwork losses (our objectives are sums of per-artwork terms), so it only
    applies the reduction that Opacus asks for."""

    reduction = "mean"

    def forward(self, per_artwork: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return per_artwork
        return per_artwork.sum() if self.reduction == "sum" else per_artwork.mean()


@dataclass
class PrivateTraining:
    """A model, optimiser and Poisson loader made private by Opacus for one round."""

    module: GradSampleModule  # GradSampleModule(FastGradientClipping) wrapping the client's model
    optimizer: DPOptimizer  # DPOptimizer(FastGradientClipping)
    loader: DataLoader  # yields (B,) index tensors: Poisson-sampled, variable-size, possibly empty batches
    criterion: nn.Module | None = None  # Opacus's ghost-clipping loss wrapper; None for hooks

    def backward(self, per_artwork: torch.Tensor) -> None:
        """Gradients of the batch's ``(B,)`` per-artwork losses, ready for the optimiser's
        ``pre_step`` (which clips -- for hooks --, adds noise and divides by the expected batch
        size).  Under ghost clipping an empty Poisson batch takes :meth:`zero_gradient` instead."""
        if self.criterion is None:  # hooks: per-artwork gradients land in p.grad_sample
            (per_artwork.sum() / max(len(per_artwork), 1)).backward()
        else:
            self.criterion(per_artwork).backward()  # two passes: per-artwork norms, then the clipped sum

    @property
    def skips_empty_batches(self) -> bool:
        """Whether an empty Poisson batch must not be forwarded (ghost clipping: see :meth:`zero_gradient`)."""
        return self.criterion is not None

    def zero_gradient(self) -> None:
        """Ghost clipping's gradient of an empty Poisson batch, without a forward pass: zero, so the step
        adds only noise.  A forward pass of no artworks left Opacus's per-parameter forward counter
        raised with no backward to lower it, and the next batch's forward was refused as parameter
        tying (NotImplementedError): an artist crashed mid-round (found 2026-12-01 in a loopback DP
        federation of four-artwork portfolios with DP-SGD forced, whose sample rate the planning size
        can put below 1)."""
        for p in self.module.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)

    def close(self) -> None:
        """Detach Opacus's hooks from the client's model (it is reused next round)."""
        self.module.remove_hooks()


log = logging.getLogger(__name__)
_logged_noise_sources: set[str] = set()


@contextmanager
def known_opacus_warnings_handled(noise: NoiseSource) -> Iterator[None]:
    """Silence two warnings that fire on every private step, after saying once what they mean.

    * "Secure RNG turned off": Opacus's own ``secure_mode`` (``torchcsprng``) is off because Opacus
      draws nothing here: the noise and the Poisson batches come from ``noise``
      (:mod:`fedstyle_secure.training.dp_noise`), whose name is logged once per process -- as a
      warning when it is not a CSPRNG (then the DP guarantee does not hold).
    * "Full backward hook is firing ... no inputs require gradients": the head's inputs are
      cached (frozen) backbone features, so there is no input gradient; per-sample gradients of
      the head's parameters are still computed (checked by the DP tests).
    """
    if noise.name not in _logged_noise_sources:
        _logged_noise_sources.add(noise.name)
        if noise.secure:
            log.info("DP noise and Poisson sampling draw from %s", noise.name)
        else:
            log.warning(
                "DP noise and Poisson sampling draw from %s: predictable, the DP guarantee does NOT hold", noise.name
            )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset_size: int,
    plan: DpPlan,
    noise: NoiseSource,
    clipping: str = "ghost",
) -> PrivateTraining:
    """Wrap ``model``/``optimizer`` with Opacus: per-artwork clipping to ``plan.clip_norm``
    (``clipping``, see :data:`CLIPPING_MODES`), Gaussian noise of multiplier ``plan.noise_multiplier``
    and Poisson sampling at ``plan.sample_rate``, both drawn from ``noise`` (privacy-relevant: use a
    :class:`~fedstyle_secure.randomness.CsprngNoise` outside research runs)."""
    from fedstyle_secure.training.dp_noise import NoiseSourcePrivacyEngine, poisson_loader

    if clipping not in CLIPPING_MODES:
        raise PrivacyError(f"clipping must be one of {', '.join(CLIPPING_MODES)}, got {clipping!r}")
    steps = max(1, round(1.0 / plan.sample_rate))
    if abs(1.0 / steps - plan.sample_rate) > 1e-12:  # Opacus reads the rate as 1 / len(loader)
        raise PrivacyError(f"planned sample rate {plan.sample_rate:.6g} is not 1 / (steps per epoch)")
    expected = None if plan.planning_size is None else plan.expected_batch_size  # never from the exact n
    engine = NoiseSourcePrivacyEngine(
        noise, accountant="prv", expected_batch_size=expected
    )  # the ledger is authoritative
    wrapped = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=poisson_loader(dataset_size, plan.sample_rate, steps, noise),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.clip_norm,
        poisson_sampling=True,
        grad_sample_mode=clipping,
        criterion=PerArtworkLoss(),
    )
    if clipping == "ghost":  # Opacus also returns the criterion that runs the two backward passes
        module, dp_optimizer, criterion, dp_loader = wrapped
        return PrivateTraining(module, dp_optimizer, dp_loader, criterion)
    module, dp_optimizer, dp_loader = wrapped
    return PrivateTraining(module, dp_optimizer, dp_loader)
