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
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.training.dp import PRIVATE_LAYERS, DpPlan


def privately_trained_parameters(model: nn.Module, private_layers: str) -> list[torch.Tensor]:
    """The parameters DP-SGD updates under ``private_layers`` (see :data:`PRIVATE_LAYERS`)."""
    if private_layers == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if private_layers != "last":
        raise PrivacyError(f"private layers must be one of {', '.join(PRIVATE_LAYERS)}, got {private_layers!r}")
    last = getattr(getattr(model, "encoder", model), "fc2", None)
    if not isinstance(last, nn.Module):
        raise PrivacyError(f"private_layers='last' needs an encoder whose final layer is fc2; {type(model).__name__} has none")
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

    module: nn.Module  # GradSampleModule(FastGradientClipping) wrapping the client's model
    optimizer: torch.optim.Optimizer  # DPOptimizer(FastGradientClipping)
    loader: DataLoader  # yields (indices,) with Poisson-sampled, variable-size batches
    criterion: nn.Module | None = None  # Opacus's ghost-clipping loss wrapper; None for hooks

    def backward(self, per_artwork: torch.Tensor) -> None:
        """Gradients of the batch's ``(B,)`` per-artwork losses, ready for the optimiser's
        ``pre_step`` (which clips -- for hooks --, adds noise and divides by the expected batch
        size).  An empty Poisson batch contributes a zero gradient: the step still adds noise."""
        if self.criterion is None:  # hooks: per-artwork gradients land in p.grad_sample
            (per_artwork.sum() / max(len(per_artwork), 1)).backward()
        elif len(per_artwork) == 0:
            for p in self.module.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
        else:
            self.criterion(per_artwork).backward()  # two passes: per-artwork norms, then the clipped sum

    def close(self) -> None:
        """Detach Opacus's hooks from the client's model (it is reused next round)."""
        self.module.remove_hooks()


log = logging.getLogger(__name__)
_warned_insecure_rng = False


@contextmanager
def known_opacus_warnings_handled() -> Iterator[None]:
    """Silence two warnings that fire on every private step, after saying once what they mean.

    * "Secure RNG turned off": the DP noise comes from torch's default generator, not a CSPRNG
      (Opacus's ``secure_mode`` needs ``torchcsprng``, which has no build for this torch).  The
      accounting is unaffected; an attacker who can predict the PRNG state could subtract the
      noise.  Logged once per process instead of once per round.
    * "Full backward hook is firing ... no inputs require gradients": the head's inputs are
      cached (frozen) backbone features, so there is no input gradient; per-sample gradients of
      the head's parameters are still computed (checked by the DP tests).
    """
    global _warned_insecure_rng
    if not _warned_insecure_rng:
        log.info("DP noise is drawn from torch's default PRNG, not a CSPRNG (Opacus secure_mode unavailable)")
        _warned_insecure_rng = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def opacus_batch_size(dataset_size: int, sample_rate: float) -> int:
    """The loader batch size from which Opacus derives exactly ``sample_rate``.

    Opacus sets the Poisson rate to ``1 / len(loader) = 1 / ceil(n / b)``.  Every planned
    rate is ``1 / s`` with ``s = ceil(n / b0)`` for some ``b0``, and then ``b = ceil(n / s)``
    gives ``ceil(n / b) = s`` again, whereas ``round(q * n)`` can miss it (n=10, q=1/4).
    """
    steps = max(1, round(1.0 / sample_rate))
    return max(1, -(-dataset_size // steps))


def make_private(
    model: nn.Module, optimizer: torch.optim.Optimizer, dataset_size: int, plan: DpPlan, seed: int, clipping: str = "ghost"
) -> PrivateTraining:
    """Wrap ``model``/``optimizer`` with Opacus's PrivacyEngine: per-artwork clipping to
    ``plan.clip_norm`` (``clipping``, see :data:`CLIPPING_MODES`), noise multiplier
    ``plan.noise_multiplier``, Poisson sampling."""
    from opacus import PrivacyEngine

    if clipping not in CLIPPING_MODES:
        raise PrivacyError(f"clipping must be one of {', '.join(CLIPPING_MODES)}, got {clipping!r}")
    loader = DataLoader(
        TensorDataset(torch.arange(dataset_size)),
        batch_size=opacus_batch_size(dataset_size, plan.sample_rate),
        generator=torch.Generator().manual_seed(seed),
    )
    engine = PrivacyEngine(accountant="prv")  # the project's own ledger is authoritative
    wrapped = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.clip_norm,
        poisson_sampling=True,
        grad_sample_mode=clipping,
        criterion=PerArtworkLoss(),
    )
    if clipping == "ghost":  # Opacus also returns the criterion that runs the two backward passes
        module, dp_optimizer, criterion, dp_loader = wrapped
        private = PrivateTraining(module, dp_optimizer, dp_loader, criterion)
    else:
        module, dp_optimizer, dp_loader = wrapped
        private = PrivateTraining(module, dp_optimizer, dp_loader)
    expected = 1.0 / len(loader)
    if abs(expected - plan.sample_rate) > 1e-12:
        private.close()
        raise PrivacyError(f"Opacus sample rate {expected:.6g} differs from the planned {plan.sample_rate:.6g}")
    return private
