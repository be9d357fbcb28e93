"""Opacus with every DP draw taken from a :class:`~fedstyle_secure.randomness.NoiseSource`.

Opacus draws its DP-SGD noise from torch's generator (in practice the global one, which
``make_initial_model`` seeds with the server's plan seed) and its Poisson batches from another torch
generator; its own ``secure_mode`` needs ``torchcsprng``, which has no build for this torch.  Here,
instead of patching Opacus globally:

* :class:`NoiseSourceDPOptimizer` / :class:`NoiseSourceFastGradientClippingOptimizer` subclass the
  optimiser Opacus uses for per-sample hooks and for ghost clipping (flat clipping, one process) and
  override only the noise step, ``add_noise``: the same ``N(0, (noise_multiplier * max_grad_norm)^2)``
  per coordinate, drawn from the noise source (with its floating-point precaution);
* :class:`PoissonBatchSampler` draws each step's batch (every artwork independently with probability
  ``q``, possibly empty) from the same source;
* :class:`NoiseSourcePrivacyEngine` is Opacus's ``PrivacyEngine`` building exactly these two, and
  refusing any configuration it cannot serve (distributed, per-layer/adaptive clipping, a seed).

Imported lazily by :func:`fedstyle_secure.training.dp_sgd.make_private` (Opacus is slow to import).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch.utils.data import DataLoader, Dataset, Sampler

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.randomness import NoiseSource

_SUMMED_GRAD = "summed_grad"  # where Opacus leaves a parameter's clipped per-sample gradient sum


class _NoiseFromSource:
    """Mixin for an Opacus ``DPOptimizer``: the noise step draws from ``noise_source``."""

    noise_source: NoiseSource
    # provided by the Opacus DPOptimizer this is mixed into
    params: list[torch.Tensor]
    noise_multiplier: float
    max_grad_norm: float

    def __init__(self, *args: Any, noise_source: NoiseSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise_source = noise_source

    def add_noise(self) -> None:
        """Opacus's ``add_noise`` (std ``noise_multiplier * max_grad_norm`` on every coordinate of
        the clipped sum ``p.summed_grad``, result in ``p.grad``), all parameters in one draw."""
        params = self.params
        multiplier = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
        summed: list[torch.Tensor] = [getattr(p, _SUMMED_GRAD) for p in params]
        for grad in summed:
            _check_processed_flag(grad)
        std = multiplier * self.max_grad_norm
        noise = torch.from_numpy(self.noise_source.gaussian(std, sum(g.numel() for g in summed)))
        for p, grad, z in zip(params, summed, torch.split(noise, [g.numel() for g in summed])):
            p.grad = (grad + z.view_as(grad).to(grad.dtype)).view_as(p)
            _mark_as_processed(grad)


class NoiseSourceDPOptimizer(_NoiseFromSource, DPOptimizer):
    """Opacus's flat-clipping optimiser for per-sample hooks, noise from a noise source."""


class NoiseSourceFastGradientClippingOptimizer(_NoiseFromSource, DPOptimizerFastGradientClipping):
    """Opacus's ghost-clipping optimiser, noise from a noise source."""


OPTIMIZERS: dict[str, type[DPOptimizer]] = {
    "ghost": NoiseSourceFastGradientClippingOptimizer,
    "hooks": NoiseSourceDPOptimizer,
}


class PoissonBatchSampler(Sampler[list[int]]):
    """``steps`` batches of ``range(n)``, each artwork in each batch with probability ``rate``."""

    def __init__(self, n: int, rate: float, steps: int, noise: NoiseSource) -> None:
        if n < 1 or steps < 1:
            raise PrivacyError(f"Poisson sampling needs >= 1 record and >= 1 step, got n={n}, steps={steps}")
        self.n, self.rate, self.steps, self.noise = n, rate, steps, noise

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield self.noise.poisson_sample(self.n, self.rate).tolist()


def _index_batch(indices: list[int]) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.long)


def poisson_loader(n: int, rate: float, steps: int, noise: NoiseSource) -> DataLoader:
    """A loader of index batches (``(B,)`` long tensors, B may be 0) over ``range(n)``; Opacus reads
    the sample rate as ``1 / len(loader) = 1 / steps``."""
    indices = cast(Dataset[int], range(n))  # a map-style dataset: len() and integer indexing
    return DataLoader(indices, batch_sampler=PoissonBatchSampler(n, rate, steps, noise), collate_fn=_index_batch)


class NoiseSourcePrivacyEngine(PrivacyEngine):
    """``PrivacyEngine`` whose optimiser noise and Poisson batches come from ``noise`` (see module)."""

    def __init__(self, noise: NoiseSource, accountant: str = "prv", expected_batch_size: int | None = None) -> None:
        super().__init__(accountant=accountant)
        self.noise = noise
        self.expected_batch_size = expected_batch_size  # None: Opacus's int(len(dataset) * sample_rate)

    def _prepare_optimizer(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        distributed: bool = False,
        clipping: str = "flat",
        noise_generator: Any = None,
        grad_sample_mode: str = "hooks",
        **kwargs: Any,
    ) -> DPOptimizer:
        if distributed or clipping != "flat" or noise_generator is not None or grad_sample_mode not in OPTIMIZERS:
            raise PrivacyError(
                f"no noise-source optimiser for clipping={clipping!r}, grad_sample_mode="
                f"{grad_sample_mode!r}, distributed={distributed}, noise_generator={noise_generator!r}"
            )
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        return OPTIMIZERS[grad_sample_mode](
            optimizer=optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size if self.expected_batch_size is None else self.expected_batch_size,
            loss_reduction=loss_reduction,
            noise_source=self.noise,
            **kwargs,
        )

    def _prepare_data_loader(
        self, data_loader: DataLoader, *, poisson_sampling: bool, distributed: bool, **kwargs: Any
    ) -> DataLoader:
        sampler = data_loader.batch_sampler
        ours = isinstance(sampler, PoissonBatchSampler) and sampler.noise is self.noise
        if not poisson_sampling or distributed or not ours:
            raise PrivacyError("DP-SGD batches must come from a PoissonBatchSampler of the engine's noise source")
        return data_loader
