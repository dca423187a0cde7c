"""The two players of the text-conditional GAN: :class:`Generator` (``generator dcgan``)
and :class:`Discriminator` (``discriminator dcgan``).

Both take a text embedding ``e`` ``(B, text_dim)`` (the objective's: a frozen CLIP's
unit caption embedding by default) and first project it, each with its own
``Linear(text_dim, text_proj)`` and LeakyReLU(0.2): φ(t) of Reed et al. (2016), who
project a 1024-d char-CNN-RNN embedding to 128.

Generator (DCGAN, Radford et al. 2016)::

    [z ; φ(e)]  (B, z_dim + text_proj),  z ~ N(0, I)
    -> Linear -> (8w, s, s), BatchNorm, ReLU        s = resolution / 2^k (4 for 32, 7 for 28)
    -> k × [ConvTranspose 4×4 stride 2, BatchNorm, ReLU]  halving the width each time
       (the last one to ``out_channels``, no norm), tanh        -> (B, C, R, R) in [-1, 1]

``k`` is the number of times the resolution halves down to at most 4 while it stays
even (32 → 4: k = 3; 28 → 7: k = 2), the widths ``w·2^(k−1) … w`` before the output.

Discriminator::

    x (B, C, R, R)
    -> conv 4×4 stride 2 (C -> w), LeakyReLU(0.2)
    -> k − 1 × [conv 4×4 stride 2, norm, LeakyReLU(0.2)]  doubling the width: w·2^(k−1)
       channels at s × s (the generator's widths, mirrored)
    head "concat" (the paper's): [h ; φ_D(e) replicated over s × s] -> conv 1×1, norm,
         LeakyReLU -> conv s×s (valid) -> one logit
    head "projection" (Miyato & Koyama 2018): f = Σ_{s×s} h; logit = ψ(f) + ⟨φ_D(e), f⟩
         with φ_D projecting to the width of f

``norm``: ``batch`` (DCGAN, GAN-INT-CLS) or ``spectral``: every convolution and Linear of
the discriminator (its text projection too) divided by its largest singular value
(Miyato et al. 2018; one power iteration per training call), and no BatchNorm, so a
logit depends on its own image only. The generator always uses BatchNorm (SNGAN's
generator does too).

Weights are initialised N(0, 0.02), BatchNorm scales N(1, 0.02) (DCGAN).
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gaf.config import option, option_error

__all__ = ["Generator", "GeneratorConfig", "Discriminator", "DiscriminatorConfig", "halvings"]


def halvings(resolution: int) -> int:
    """How many stride-2 stages take ``resolution`` down to at most 4 while it stays even
    (32 → 3, 28 → 2, 16 → 2, 8 → 1)."""
    k = 0
    while resolution % 2 == 0 and resolution > 4:
        resolution //= 2
        k += 1
    return k


def _check_resolution(resolution: int) -> None:
    if halvings(resolution) == 0:
        raise option_error("resolution", "must halve at least once to 4-7 pixels "
                                         "(e.g. 8, 16, 28, 32, 64)", resolution)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if parametrize.is_parametrized(m):  # spectral norm: initialised before wrapping
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@attrs.define
class GeneratorConfig:
    """Options of the ``dcgan`` generator."""

    z_dim: int = option(100, "noise dimensions", ge=1)
    text_dim: int = option(64, "width of the text embedding it is given", ge=1)
    text_proj: int = option(64, "width of the projected text φ(t)", ge=1)
    width: int = option(32, "channels of the last stage (8x, 4x, 2x before it at 32 px)",
                        ge=1)
    out_channels: int = option(3, "image channels", ge=1)
    resolution: int = option(32, "image side in pixels", ge=1)

    def __attrs_post_init__(self) -> None:
        _check_resolution(self.resolution)


class Generator(nn.Module):
    """``(z (B, z_dim), e (B, text_dim)) -> images (B, C, R, R)`` in ``[-1, 1]`` (see the
    module docstring)."""

    Config = GeneratorConfig

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = cfg = config or GeneratorConfig()
        k = halvings(cfg.resolution)
        self.side = cfg.resolution >> k
        top = cfg.width * 2 ** (k - 1)
        self.text = nn.Sequential(nn.Linear(cfg.text_dim, cfg.text_proj), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(cfg.z_dim + cfg.text_proj, top * self.side ** 2, bias=False)
        self.fc_norm = nn.BatchNorm2d(top)
        layers: list[nn.Module] = []
        ch = top
        for i in range(k):
            last = i == k - 1
            out = cfg.out_channels if last else ch // 2
            layers.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.body = nn.Sequential(*layers)
        _init(self)

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def forward(self, z: Tensor, e: Tensor) -> Tensor:
        h = self.fc(torch.cat([z, self.text(e)], dim=1))
        h = h.view(len(h), -1, self.side, self.side)
        return self.body(torch.relu(self.fc_norm(h)))


@attrs.define
class DiscriminatorConfig:
    """Options of the ``dcgan`` discriminator."""

    text_dim: int = option(64, "width of the text embedding it is given", ge=1)
    text_proj: int = option(64, "width of the projected text (concat head)", ge=1)
    width: int = option(32, "channels of the first stage (2x, 4x ... after it)", ge=1)
    in_channels: int = option(3, "image channels", ge=1)
    resolution: int = option(32, "image side in pixels", ge=1)
    norm: Literal["batch", "spectral"] = option(
        "batch", "batch: BatchNorm (GAN-INT-CLS); spectral: spectral norm on every layer, "
                 "no BatchNorm")
    head: Literal["concat", "projection"] = option(
        "concat", "concat: text replicated at s x s, 1x1 conv (GAN-INT-CLS); projection: "
                  "inner product with the pooled features (Miyato & Koyama 2018)")

    def __attrs_post_init__(self) -> None:
        _check_resolution(self.resolution)


class Discriminator(nn.Module):
    """``(x (B, C, R, R), e (B, text_dim)) -> logits (B,)`` (see the module docstring)."""

    Config = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = cfg = config or DiscriminatorConfig()
        k = halvings(cfg.resolution)
        self.side = cfg.resolution >> k
        sn = cfg.norm == "spectral"

        def layer(m: nn.Module) -> nn.Module:
            if not sn:
                return m
            _init(m)  # the weight spectral norm starts its power iteration from
            return spectral_norm(m)

        def norm(ch: int) -> list[nn.Module]:
            return [] if sn else [nn.BatchNorm2d(ch)]

        w = cfg.width
        layers: list[nn.Module] = [layer(nn.Conv2d(cfg.in_channels, w, 4, 2, 1)),
                                   nn.LeakyReLU(0.2)]
        for _ in range(k - 1):
            layers += [layer(nn.Conv2d(w, 2 * w, 4, 2, 1, bias=sn)), *norm(2 * w),
                       nn.LeakyReLU(0.2)]
            w *= 2
        self.body = nn.Sequential(*layers)
        self.features = w
        if cfg.head == "concat":
            self.text = nn.Sequential(layer(nn.Linear(cfg.text_dim, cfg.text_proj)),
                                      nn.LeakyReLU(0.2))
            self.joint = nn.Sequential(layer(nn.Conv2d(w + cfg.text_proj, w, 1, bias=sn)),
                                       *norm(w), nn.LeakyReLU(0.2))
            self.score = layer(nn.Conv2d(w, 1, self.side))
        else:
            self.text = layer(nn.Linear(cfg.text_dim, w, bias=False))
            self.score = layer(nn.Linear(w, 1))
        _init(self)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.body(x)
        if self.config.head == "concat":
            t = self.text(e)[:, :, None, None].expand(-1, -1, self.side, self.side)
            return self.score(self.joint(torch.cat([h, t], dim=1))).flatten()
        f = h.sum(dim=(2, 3))
        return self.score(f).squeeze(1) + (self.text(e) * f).sum(dim=1)
