"""Timestep conditioning: the sinusoidal embedding and the time MLP.

Sinusoidal embedding (:func:`timestep_embedding`) of a timestep ``t`` with width ``dim``
(``half = dim // 2``)::

    freq_i = exp(-ln(max_period) * i / half),   i = 0 .. half - 1   (max_period = 10000)
    emb(t) = [cos(t * freq_0), ..., cos(t * freq_{half-1}),
              sin(t * freq_0), ..., sin(t * freq_{half-1})]

cosines first, then sines (LDM's ``timestep_embedding`` and diffusers' ``Timesteps``
with ``flip_sin_to_cos=True, downscale_freq_shift=0``, the setting of their UNet), with a
zero column appended when ``dim`` is odd. ``t`` may be fractional.

:class:`TimeEmbedding` maps it to the width used by every ResBlock:
``Linear(dim, D) -> SiLU -> Linear(D, D)`` with ``D = time_embed_mult * dim``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["timestep_embedding", "TimeEmbedding", "position_embedding_2d", "as_timesteps"]


def as_timesteps(t: Any, batch: int, device: Any) -> Tensor:
    """A denoiser's ``t`` as a ``(1,)`` tensor (one timestep shared by the batch: a
    number, a 0-d or ``(1,)`` tensor) or a ``(B,)`` tensor on ``device``; anything else
    is a ``ValueError`` saying what is accepted."""
    if isinstance(t, Tensor):
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, batch)):
            raise ValueError(f"t must be a number, a 0-d tensor or a (B,) tensor with "
                             f"B = {batch}, got shape {tuple(t.shape)}")
        return t.reshape(-1).to(device)
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        return torch.tensor([float(t)], dtype=torch.float32, device=device)
    raise ValueError(f"t must be a number or a tensor, got {type(t).__name__}")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``(N,)`` timesteps -> ``(N, dim)`` float32 ``[cos(t f_i) | sin(t f_i)]`` (module doc)."""
    if t.dim() != 1:
        raise ValueError(f"timestep_embedding takes a (N,) tensor, got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) * (
        -math.log(max_period) / half)
    args = t.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def position_embedding_2d(height: int, width: int, dim: int) -> Tensor:
    """``(height * width, dim)`` fixed 2-D sinusoidal embedding of token positions (row-major).

    The first ``dim // 2`` features embed the row ``y`` and the rest the column ``x``,
    each as :func:`timestep_embedding` of the coordinate (``max_period`` 10000), the
    2-D form of the transformer's position encoding (as in MAE / DiT). ``dim`` must be
    divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"a 2-D position embedding needs a width divisible by 4, got {dim}")
    ys = torch.arange(height, dtype=torch.float32).repeat_interleave(width)
    xs = torch.arange(width, dtype=torch.float32).repeat(height)
    return torch.cat([timestep_embedding(ys, dim // 2), timestep_embedding(xs, dim // 2)], 1)


class TimeEmbedding(nn.Module):
    """``(N,)`` timesteps -> ``(N, out_dim)``: sinusoidal(dim) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.dim).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(emb)))
