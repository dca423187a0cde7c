"""``none``: the identity first stage, so pixel-space diffusion runs through the LDM code.

``gaf run --objective ldm --autoencoder none`` diffuses the images themselves: ``encode``
and ``decode`` return their input unchanged, ``scale_factor`` is 1 (images in
``[-1, 1]`` already have a spread of order one, and the LDM's unit-variance rescaling
is a latent-space device) and there is nothing to train, so the ``ldm`` objective skips
its autoencoder stage. Everything else (noise model, conditioner, guidance, schedulers,
sampling, evaluation) is the code path of latent diffusion.
"""

from __future__ import annotations

import attrs
from torch import Tensor, nn

from gaf.config import option

__all__ = ["IdentityAutoencoder", "IdentityConfig"]


@attrs.define
class IdentityConfig:
    """Options of ``none``: only the image channels (checked against the data)."""

    in_channels: int = option(3, "image channels (3 for RGB, 1 for grey)")

    @property
    def latent_channels(self) -> int:
        return self.in_channels

    @property
    def downsample(self) -> int:
        return 1


class IdentityAutoencoder(nn.Module):
    """Pixel space: ``encode(x) = x``, ``decode(z) = z``, ``scale_factor = 1``."""

    Config = IdentityConfig
    scale_factor = 1.0
    scale_factor_fitted = True
    #: nothing to train: the ldm objective uses it as it is
    trainable = False

    def __init__(self, config: IdentityConfig | None = None):
        super().__init__()
        self.config = config or IdentityConfig()

    def _check(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"autoencoder none: expected (B, {self.config.in_channels}, H, W) "
                             f"images, got shape {tuple(x.shape)}")
        return x

    def encode(self, x: Tensor) -> Tensor:
        return self._check(x)

    def decode(self, z: Tensor) -> Tensor:
        return self._check(z)

    def forward(self, x: Tensor) -> Tensor:
        return self._check(x)

    def fit_scale_factor(self, images: Tensor | list[Tensor], batch_size: int = 64) -> float:
        """Pixel space keeps ``scale_factor = 1`` (see the module docstring)."""
        return 1.0

    def extra_repr(self) -> str:
        return f"in_channels={self.config.in_channels}"

