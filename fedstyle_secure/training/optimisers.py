"""Plain SGD and Adam steps for training without DP-SGD, without ``torch.optim``.

Why not ``torch.optim``: its first optimiser imports ``torch._dynamo`` (``Optimizer.add_param_group``
is wrapped by ``torch._disable_dynamo``, which imports the compiler stack, sympy included, on first
call): about 70 MB resident in every artist process, measured with ``scripts/bench_scale.py
--artist-process``, for two update rules of a few lines.  DP-SGD keeps ``torch.optim.SGD``: Opacus
wraps a ``torch.optim.Optimizer`` and that process has imported Opacus anyway.

Both rules follow ``torch.optim``'s default formulas (no momentum or weight decay for SGD; betas
(0.9, 0.999), eps 1e-8, bias correction for Adam), checked against it in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from fedstyle_secure.errors import ConfigError

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class PlainOptimiser:
    """What the training loops use of an optimiser: ``zero_grad()`` and ``step()``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        if not lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {lr}")
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (as ``set_to_none=True``)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self._begin_step()
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, p.grad)

    def _begin_step(self) -> None:
        """Per-step bookkeeping before the parameters are updated (none by default)."""

    def _update(self, index: int, param: torch.Tensor, grad: torch.Tensor) -> None:
        raise NotImplementedError


class Sgd(PlainOptimiser):
    """``param -= lr * grad``."""

    def _update(self, index: int, param: torch.Tensor, grad: torch.Tensor) -> None:
        param.add_(grad, alpha=-self.lr)


class Adam(PlainOptimiser):
    """Adam (Kingma & Ba) with bias correction; moments start at zero when the optimiser is made."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(params, lr)
        self.steps = 0
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    def _begin_step(self) -> None:
        self.steps += 1

    def _update(self, index: int, param: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2 = ADAM_BETAS
        m, v = self.first[index], self.second[index]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denominator = v.sqrt().div_(math.sqrt(1 - beta2**self.steps)).add_(ADAM_EPS)
        param.addcdiv_(m, denominator, value=-step_size)


def plain_optimiser(name: str, params: Iterable[torch.Tensor], lr: float) -> PlainOptimiser:
    """``"sgd"`` or ``"adam"`` at learning rate ``lr``."""
    if name == "sgd":
        return Sgd(params, lr)
    if name == "adam":
        return Adam(params, lr)
    raise ConfigError(f"unknown local optimiser {name!r}; choose sgd or adam")
