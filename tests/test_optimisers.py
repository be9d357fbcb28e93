"""The plain optimisers of training without DP-SGD follow torch.optim's formulas, and keep the
compiler stack (torch._dynamo) out of the process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.training.optimisers import plain_optimiser


def _run(make, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    weight = torch.randn(6, 4, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    frozen = torch.randn(4, requires_grad=False)
    optimiser = make([weight, bias, frozen])
    data = torch.randn(32, 6)
    for _ in range(steps):
        loss = ((data @ weight + bias + frozen) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return [weight.detach(), bias.detach(), frozen]


@pytest.mark.parametrize(
    ("name", "reference", "lr"), [("sgd", torch.optim.SGD, 0.05), ("adam", torch.optim.Adam, 0.01)]
)
def test_plain_optimiser_matches_torch_optim(name: str, reference: type, lr: float) -> None:
    ours = _run(lambda ps: plain_optimiser(name, ps, lr))
    theirs = _run(lambda ps: reference([p for p in ps if p.requires_grad], lr=lr))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours[0], _run(lambda ps: plain_optimiser(name, ps, lr), steps=0)[0])  # it moved


def test_unknown_optimiser_or_bad_lr_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'rmsprop'"):
        plain_optimiser("rmsprop", [torch.zeros(1, requires_grad=True)], 0.1)
    with pytest.raises(ConfigError, match="learning rate"):
        plain_optimiser("sgd", [torch.zeros(1, requires_grad=True)], 0.0)


def test_training_without_dp_sgd_does_not_import_the_compiler_stack() -> None:
    """A local round and a public warm start in a fresh process leave ``torch._dynamo`` unimported
    (torch.optim's first optimiser imports it: ~70 MB per artist process)."""
    code = """
import sys
import numpy as np
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.training.local import LocalConfig, LocalData, RoundContext, train_local
from fedstyle_secure.training.pretrain import PretrainConfig, pretrain_on_public
rng = np.random.default_rng(0)
bank = InputBank(rng.normal(size=(3, 8, 1536)).astype(np.float32), "features")
model = make_model(EncoderConfig(embedding_dim=16), bank, bank, n_classes=2)
pretrain_on_public(model.encoder, bank, PretrainConfig(steps=2, batch_size=4), seed=0)
data = LocalData(bank=bank, labels=np.zeros(8, dtype=np.int64))
train_local(model, data, RoundContext(n_artists=2), "classifier", LocalConfig(epochs=1, batch_size=4), rng)
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
