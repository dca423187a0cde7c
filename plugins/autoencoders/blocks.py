"""The convolutional encoder and decoder shared by ``kl-vae`` and ``vqgan``.

Layout (the LDM first stage, Rombach et al. 2022, ``ldm/modules/diffusionmodules/model.py``):

Encoder::

    conv_in 3x3 (C -> ch)
    for level i = 0 .. L-1 (L = log2(f) + 1 levels, widths ch * channel_mult[i]):
        num_res_blocks x ResnetBlock
        Downsample (3x3 conv, stride 2, pad right/bottom) unless i is the last level
    mid: ResnetBlock, SelfAttention (if ``attention``), ResnetBlock
    GroupNorm, SiLU, conv_out 3x3 (-> out_channels)

Decoder (mirror image)::

    conv_in 3x3 (c -> ch * channel_mult[-1])
    mid: ResnetBlock, SelfAttention (if ``attention``), ResnetBlock
    for level i = L-1 .. 0:
        (num_res_blocks + 1) x ResnetBlock
        Upsample (nearest x2, then 3x3 conv) unless i == 0
    GroupNorm, SiLU, conv_out 3x3 (-> C)          <- the "last layer" of the adaptive GAN weight

A ResnetBlock is ``GroupNorm-SiLU-conv3x3-GroupNorm-SiLU-dropout-conv3x3`` plus a
shortcut (a 1x1 conv when the width changes). The mid-block attention is one-head
self-attention over the ``H/f x W/f`` positions (GroupNorm, 1x1 q/k/v, softmax
``qk^T/sqrt(d)``, 1x1 output projection, residual).

The downsampling factor is ``f = 2 ** (len(channel_mult) - 1)``; inputs must have
sides divisible by ``f``.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaf.config import option, option_error

from ..nn.resample import Upsample  # the same nearest x2 + 3x3 conv as the UNet's

__all__ = ["AutoencoderConfig", "Encoder", "Decoder", "ResnetBlock", "SelfAttention",
           "check_image", "count_parameters", "FirstStage", "DEFAULT_MULT"]

#: Channel multipliers used when ``channel_mult`` is left empty: the first
#: ``log2(f) + 1`` of these (f=4 -> (1, 2, 4)).
DEFAULT_MULT = (1, 2, 4, 4, 4)
FACTORS = (1, 2, 4, 8, 16)


@attrs.define
class AutoencoderConfig:
    """Architecture options shared by ``kl-vae`` and ``vqgan``."""

    in_channels: int = option(3, "image channels C (3 for RGB, 1 for grey)", ge=1)
    downsample: int = option(4, "spatial downsampling factor f (log2 f stride-2 stages)",
                             choices=FACTORS)
    latent_channels: int = option(3, "latent channels c (z is (B, c, H/f, W/f))", ge=1)
    base_channels: int = option(16, "width of the first level (ch)", ge=1)
    channel_mult: tuple[int, ...] = option((), "width multiplier per level, log2(f) + 1 "
                                               "entries; empty = (1, 2, 4, 4, 4)[:levels]",
                                           ge=1)
    num_res_blocks: int = option(1, "ResNet blocks per encoder level (decoder: one more)",
                                 ge=0)
    attention: bool = option(True, "one-head self-attention in the encoder and decoder "
                                   "mid blocks")
    num_groups: int = option(8, "GroupNorm groups (must divide every width)", ge=1)
    dropout: float = option(0.0, "dropout inside the ResNet blocks", ge=0, lt=1)

    def __attrs_post_init__(self) -> None:
        # the rules that relate options; each option's own range is declared above
        mult = self.mult
        if len(mult) != self.levels:
            raise option_error("channel_mult", f"needs log2(f) + 1 = {self.levels} entries "
                                               f"for f={self.downsample}", mult)
        widths = sorted({self.base_channels * m for m in mult})
        if any(width % self.num_groups for width in widths):
            raise option_error("num_groups", f"must divide every width (base_channels x "
                                             f"channel_mult = {widths})", self.num_groups)

    @property
    def levels(self) -> int:
        """Number of resolution levels, ``log2(f) + 1``."""
        return int(math.log2(self.downsample)) + 1

    @property
    def mult(self) -> tuple[int, ...]:
        """The effective channel multipliers (``channel_mult`` or the default prefix)."""
        return tuple(self.channel_mult) if self.channel_mult else DEFAULT_MULT[: self.levels]


def check_image(x: Tensor, channels: int, factor: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, H, W)`` with ``f | H, W``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected images (B, {channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"image sides {tuple(x.shape[-2:])} must be divisible by the "
                         f"downsampling factor f={factor}")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """``GroupNorm-SiLU-conv-GroupNorm-SiLU-dropout-conv`` + (1x1-projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """One-head spatial self-attention with a residual connection (the LDM ``AttnBlock``)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        q, k, v = (rearrange(t, "b c h w -> b 1 (h w) c")
                   for t in self.qkv(self.norm(x)).chunk(3, dim=1))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(y, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the LDM's asymmetric (right/bottom) zero padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _mid(width: int, cfg: AutoencoderConfig) -> nn.Sequential:
    return nn.Sequential(
        ResnetBlock(width, width, cfg.num_groups, cfg.dropout),
        SelfAttention(width, cfg.num_groups) if cfg.attention else nn.Identity(),
        ResnetBlock(width, width, cfg.num_groups, cfg.dropout))


class Encoder(nn.Module):
    """Images ``(B, C, H, W)`` -> features ``(B, out_channels, H/f, W/f)``."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        ch, mult = cfg.base_channels, cfg.mult
        self.conv_in = nn.Conv2d(cfg.in_channels, ch * mult[0], 3, padding=1)
        self.down = nn.ModuleList()
        width = ch * mult[0]
        for i, m in enumerate(mult):
            level = nn.Sequential()
            for _ in range(cfg.num_res_blocks):
                level.append(ResnetBlock(width, ch * m, cfg.num_groups, cfg.dropout))
                width = ch * m
            if i != len(mult) - 1:
                level.append(Downsample(width))
            self.down.append(level)
        self.mid = _mid(width, cfg)
        self.norm_out = _norm(width, cfg.num_groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents ``(B, c, h, w)`` -> images ``(B, C, h*f, w*f)`` (not clamped)."""

    def __init__(self, cfg: AutoencoderConfig, in_channels: int):
        super().__init__()
        ch, mult = cfg.base_channels, cfg.mult
        width = ch * mult[-1]
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.mid = _mid(width, cfg)
        self.up = nn.ModuleList()  # self.up[0] is the deepest level (applied first)
        for i in reversed(range(len(mult))):
            level = nn.Sequential()
            for _ in range(cfg.num_res_blocks + 1):
                level.append(ResnetBlock(width, ch * mult[i], cfg.num_groups, cfg.dropout))
                width = ch * mult[i]
            if i != 0:
                level.append(Upsample(width))
            self.up.append(level)
        self.norm_out = _norm(width, cfg.num_groups)
        self.conv_out = nn.Conv2d(width, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.up:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FirstStage(nn.Module):
    """What ``kl-vae`` and ``vqgan`` share: the latent scale factor and the last layer.

    ``scale_factor`` is stored in the 0-d buffer ``latent_scale`` so that it is part
    of the state dict: ``gaf.save`` writes it to ``model.safetensors`` and
    ``gaf.load`` restores it. The buffer starts at ``0`` meaning "not fitted yet", in
    which case ``scale_factor`` reads ``1.0`` (``scale_factor_fitted`` is False).
    """

    latent_scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("latent_scale", torch.zeros(()))

    @property
    def scale_factor(self) -> float:
        """Multiplier that gives the latents unit variance on the data (1.0 until fitted)."""
        value = float(self.latent_scale)
        return value if value > 0 else 1.0

    @scale_factor.setter
    def scale_factor(self, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"scale_factor must be positive and finite, got {value}")
        self.latent_scale.fill_(float(value))

    @property
    def scale_factor_fitted(self) -> bool:
        return float(self.latent_scale) > 0

    @torch.no_grad()
    def fit_scale_factor(self, images: Tensor | list[Tensor], batch_size: int = 64) -> float:
        """Set ``scale_factor = 1 / std(encode(images))`` and return it.

        ``images`` is a ``(N, C, H, W)`` tensor (or a list of such batches) from the
        training set. The standard deviation is taken over every latent element (all
        images, channels and positions, mean not removed from the latents themselves),
        as the LDM's ``scale_by_std`` does, so ``scale_factor * encode(x)`` has unit
        variance on that sample. Latents are gathered in float64.
        """
        batches = images if isinstance(images, (list, tuple)) else list(images.split(batch_size))
        was_training = self.training
        self.eval()
        try:
            device = self.latent_scale.device
            zs = [self.encode(b.to(device)).double().flatten() for b in batches]
        finally:
            self.train(was_training)
        std = float(torch.cat(zs).std())
        if not (std > 0 and math.isfinite(std)):
            raise ValueError(f"cannot fit the scale factor: latent std is {std}")
        self.scale_factor = 1.0 / std
        return self.scale_factor

    @property
    def last_layer(self) -> Tensor:
        """The decoder's output conv weight: where the adaptive GAN weight is measured."""
        return self.decoder.conv_out.weight  # type: ignore[attr-defined]

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample  # type: ignore[attr-defined]
