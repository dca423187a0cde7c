"""The convolutional pieces of the UNet: :class:`ResBlock`, :class:`Downsample`, :class:`Upsample`.

ResBlock (LDM's ``ResBlock`` / diffusers' ``ResnetBlock2D``), ``x`` (B, C_in, H, W) and the
SiLU-activated time embedding ``emb`` (B or 1, D)::

    h = conv3x3(SiLU(GroupNorm(x)))                    C_in -> C_out
    h = h + Linear(emb)[:, :, None, None]              a per-channel shift from the timestep
    h = conv3x3(dropout(SiLU(GroupNorm(h))))           zero-initialised: fresh, out = skip(x)
    out = skip(x) + h                    skip: 1x1 conv if C_in != C_out, else identity

``emb`` is ``SiLU(time embedding)``: the UNet applies the SiLU once and hands the result
to every block (LDM applies the same SiLU inside each block). GroupNorm runs in float32
(:class:`GroupNorm32` of :mod:`.group_norm`; eps 1e-5 as in both references).

Speed choices (CPU), against the plain ``conv1(...) + shift``, out-of-place version
(what they are worth is in docs/benchmarks.md § Latent diffusion against diffusers):

* one timestep for the whole batch (``emb`` has one row, the sampling case): the time
  shift is folded into ``conv1``'s bias, saving a full pass over the activation;
* SiLU runs in place on the fresh GroupNorm output when no gradient is recorded
  (autograd needs SiLU's input, so not while training);
* one time embedding per image (training; at sampling, Imagen's pooled text or
  unCLIP's image embedding): where :class:`GroupNorm32` takes its path from channel sums
  (:mod:`.group_norm`), it normalises ``conv1(h) + shift`` from ``conv1(h)``'s sums
  and the shift costs no pass over the activation; elsewhere the shift is added in place;
* the time shift and the skip are added in place into the conv outputs (convolutions do
  not keep their outputs for backward, so this is safe under autograd).

Downsample is a stride-2 3x3 conv with padding 1 (the UNet's, not the autoencoder's
asymmetric one); Upsample is nearest x2 then a 3x3 conv (:mod:`gaf.plugins.nn.resample`,
shared with the autoencoders).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.resample import Upsample
from .group_norm import GroupNorm32

__all__ = ["GroupNorm32", "ResBlock", "Downsample", "Upsample", "silu"]


def silu(x: Tensor) -> Tensor:
    """SiLU, in place when nothing records a gradient (``x`` must be a fresh temporary)."""
    return F.silu(x, inplace=not (x.requires_grad and torch.is_grad_enabled()))


class ResBlock(nn.Module):
    """``(B, c_in, H, W), emb (B|1, emb_dim) -> (B, c_out, H, W)`` (see the module doc)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm32(groups, c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, c_out)
        self.norm2 = GroupNorm32(groups, c_out, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = silu(self.norm1(x))
        shift = self.time_proj(emb)
        if shift.shape[0] == 1:  # one timestep: fold the shift into conv1's bias
            h = silu(self.norm2(F.conv2d(h, self.conv1.weight, self.conv1.bias + shift[0],
                                         padding=1)))
        else:  # one shift per image
            h = self.conv1(h)
            if self.norm2.uses_sums(h):  # normalises h + shift without adding it to h
                h = silu(self.norm2.from_sums(h, shift))
            else:
                h += shift[:, :, None, None]
                h = silu(self.norm2(h))
        if self.dropout.p > 0 and self.training:
            h = self.dropout(h)
        h = self.conv2(h)
        h += x if self.skip is None else self.skip(x)
        return h


class Downsample(nn.Module):
    """``(B, C, H, W) -> (B, C, H/2, W/2)``: 3x3 conv, stride 2, padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)
