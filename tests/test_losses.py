"""Known-answer tests of the losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedstyle_secure.training.losses import (
    alignment_loss,
    instance_contrastive_loss,
    prototype_contrastive_loss,
    prototype_distance_loss,
    proximal_term,
)


def test_prototype_contrastive_hand_computed():
    z = torch.tensor([[1.0, 0.0]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    # logits = [1/0.5, 0/0.5] = [2, 0]; CE for label 0 = -log(e^2 / (e^2 + 1))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert prototype_contrastive_loss(z, torch.tensor([0]), protos, tau).item() == pytest.approx(expected, rel=1e-6)
    # prototypes are normalised inside
    assert prototype_contrastive_loss(z, torch.tensor([0]), 3 * protos, tau).item() == pytest.approx(expected, rel=1e-6)


def test_instance_contrastive_perfect_views_beat_random():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(8, 16), dim=1)
    same = instance_contrastive_loss(a, a.clone(), tau=0.1).item()
    shuffled = instance_contrastive_loss(a, a[torch.randperm(8)], tau=0.1).item()
    assert same < shuffled
    # two samples, orthogonal identical views: sims/tau = [[-, 0, 1/t, 0], ...]
    e = torch.eye(2)
    t = 1.0
    expected = -math.log(math.e / (math.e + 2))
    assert instance_contrastive_loss(e, e.clone(), tau=t).item() == pytest.approx(expected, rel=1e-6)


def test_alignment_and_distance_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert alignment_loss(a, b).item() == pytest.approx(1.0)  # (2 + 0) / 2
    assert prototype_distance_loss(a, torch.tensor([1, 1]), b).item() == pytest.approx(1.0)


def test_proximal_term():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    q = [torch.tensor([0.0, 0.0]), torch.tensor([1.0])]
    assert proximal_term(p, q).item() == pytest.approx(0.5 * (1 + 4 + 4))
