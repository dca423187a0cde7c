"""Exponential moving averages of model weights (the LDM's ``LitEma``).

After every optimiser step ``n`` (1-based), each floating-point parameter ``θ`` of the
trained model moves its shadow ``θ̄`` towards it::

    d_n = min(decay, (1 + n) / (10 + n))        (warm-up, as the LDM's use_num_updates)
    θ̄  ← d_n · θ̄ + (1 − d_n) · θ               (in place: torch.lerp(θ̄, θ, 1 − d_n))

and buffers (e.g. a normalisation's running statistics, a scale factor) are copied.
The warm-up keeps early averages from being dominated by the random initialisation:
``d_1 = 2/11``, ``d_100 ≈ 0.918``, and the cap ``decay`` is reached only after
``(10·decay − 1)/(1 − decay)`` steps (8991 for 0.999). In a short run the average
therefore spans roughly the last ``n/9`` steps.

The shadow is an ordinary module (a deep copy whose parameters do not require
gradients), so the trainer checkpoints and exports it like any other module but never
optimises it; sampling uses it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_decay", "make_shadow", "update_shadow"]


def ema_decay(decay: float, step: int) -> float:
    """``min(decay, (1 + step) / (10 + step))`` for optimiser step ``step`` (1-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


def make_shadow(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` (its registry stamp included) to average into."""
    shadow = copy.deepcopy(model)
    for p in shadow.parameters():
        p.requires_grad_(False)
    return shadow.eval()


@torch.no_grad()
def update_shadow(shadow: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ̄ ← decay·θ̄ + (1 − decay)·θ`` for every parameter; buffers are copied."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    pairs = list(zip(shadow.parameters(), model.parameters(), strict=True))
    if pairs:
        torch._foreach_lerp_([s for s, _ in pairs], [p.detach() for _, p in pairs],
                             1.0 - decay)
    for s, b in zip(shadow.buffers(), model.buffers(), strict=True):
        s.copy_(b)
