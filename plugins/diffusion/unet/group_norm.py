"""The UNet's GroupNorm: :class:`GroupNorm32` and its channels-last path from channel sums.

GroupNorm over ``G`` groups of ``D = C / G`` channels, ``x`` (B, C, H, W)::

    mean_bg, var_bg = the mean and (biased) variance of x over group g's D channels and
                      all H*W positions of image b
    y = (x - mean_bg) / sqrt(var_bg + eps) * weight_c + bias_c

The UNet keeps its feature maps channels-last, and PyTorch's CPU kernel for a
channels-last input below 1024 positions (``H*W < 1024``: every map of a 16- or
32-pixel model but the largest) walks each group's ``D`` channels position by
position; with a ``D`` that does not fill a SIMD register (2, 3, 4 or 6 channels per
group are common in the imagen and ldm UNets) that is several times slower than the same
kernel on a contiguous tensor. :func:`group_norm_from_sums` computes the same function from
vectorised reductions along the positions instead::

    s1_bc = sum_p x_bcp,  s2_bc = sum_p x_bcp^2          per image and channel (B, C)
    mean_bg = sum_{c in g} s1_bc / n,  var_bg = sum_{c in g} s2_bc / n - mean_bg^2
                                                         n = D * H * W
    scale_bc = weight_c / sqrt(var_bg + eps),  offset_bc = bias_c - mean_bg * scale_bc
    y = x * scale_bc + offset_bc                         one fused pass (addcmul)

It also takes an optional per-image channel shift ``s`` (B, C) and normalises
``x + s`` without adding it to ``x`` first, which saves the ResBlock the pass that adds
its time shift when every image has its own time embedding::

    s1' = s1 + (H*W) s,   s2' = s2 + 2 s s1 + (H*W) s^2,   offset' = offset + s * scale

Like PyTorch's channels-last kernel, the variance is ``E[x^2] - mean^2`` (float32 sums),
so it loses precision when a group's mean is large against its standard deviation
(the tests compare it with a float64 two-pass reference for group means up to five
standard deviations from zero, and for constant groups, whose variance is clamped at 0).

:class:`GroupNorm32` takes this path only where it was measured faster (inference,
float32, channels-last, ``16 < H*W < 1024``, ``D`` not a multiple of 8, at most
:data:`SUMS_MAX_BYTES`; docs/benchmarks.md § GroupNorm on channels-last maps) and
PyTorch's kernel everywhere else, training included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNorm32", "group_norm_from_sums", "SUMS_MAX_BYTES"]

#: Above this size the sums path's extra passes over memory (the squares are written
#: out, then summed) cost more than PyTorch's kernel loses.
SUMS_MAX_BYTES = 16 << 20


def group_norm_from_sums(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float,
                         shift: Tensor | None = None) -> Tensor:
    """GroupNorm of ``x + shift[:, :, None, None]`` (``shift`` (B, C) or None) for a
    channels-last ``x`` (B, C, H, W), from per-channel sums (see the module doc).

    Returns a channels-last tensor. Differentiable, but only used without autograd.
    """
    b, c, h, w = x.shape
    hw, d = h * w, c // groups
    n = hw * d
    tokens = x.permute(0, 2, 3, 1).reshape(b, hw, c)  # a view for channels-last x
    s1 = tokens.sum(1)
    s2 = (tokens * tokens).sum(1)
    if shift is not None:
        s2 = s2 + shift * (2 * s1 + hw * shift)
        s1 = s1 + hw * shift
    mean = s1.view(b, groups, d).sum(2) / n
    var = (s2.view(b, groups, d).sum(2) / n - mean * mean).clamp_min(0)
    rstd = torch.rsqrt(var + eps)
    scale = (rstd[:, :, None] * weight.view(groups, d)).reshape(b, c)
    offset = bias - (mean * rstd)[:, :, None].expand(b, groups, d).reshape(b, c) * weight
    if shift is not None:
        offset = offset + shift * scale
    out = torch.addcmul(offset[:, None], tokens, scale[:, None])
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (LDM's ``GroupNorm32``),
    from channel sums where :meth:`uses_sums` says so."""

    def uses_sums(self, x: Tensor) -> bool:
        """Whether ``x`` takes :func:`group_norm_from_sums` (see the module doc)."""
        if x.dim() != 4 or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or self.bias.requires_grad):
            return False
        hw = x.shape[2] * x.shape[3]
        return (16 < hw < 1024 and (x.shape[1] // self.num_groups) % 8 != 0
                and x.numel() * 4 <= SUMS_MAX_BYTES
                and x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous())

    def from_sums(self, x: Tensor, shift: Tensor | None = None) -> Tensor:
        """This norm of ``x + shift[:, :, None, None]`` by :func:`group_norm_from_sums`
        (for an ``x`` that :meth:`uses_sums`)."""
        return group_norm_from_sums(x, self.num_groups, self.weight, self.bias, self.eps,
                                    shift)

    def forward(self, x: Tensor) -> Tensor:
        if self.uses_sums(x):
            return self.from_sums(x)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)
