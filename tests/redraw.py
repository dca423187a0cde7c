"""``randomize``: re-draw every parameter of a module, for tests that need a model whose
zero-initialised output layers (the UNet's ``conv_out``, ``conv2``, ``proj_out``) do not
hide what the layers before them compute."""

from __future__ import annotations

import torch
from torch import nn


def randomize(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Every parameter of ``module`` drawn from N(0, std^2) with ``seed``; returns it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module
