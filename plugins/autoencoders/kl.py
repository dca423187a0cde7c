"""``kl-vae``: the LDM first stage with a diagonal-Gaussian latent (a KL-regularised VAE).

The encoder (:mod:`.blocks`) ends in ``2c`` channels, followed by a 1x1
``quant_conv``; they are split into the posterior mean and log-variance of
``q(z|x) = N(mean, diag(exp(logvar)))``, with ``logvar`` clamped to ``[-30, 20]``
(as the LDM does, so that ``exp`` cannot overflow or underflow to a zero std).
A 1x1 ``post_quant_conv`` (c -> c) precedes the decoder.

* ``forward(x)`` (training) draws ``z = mean + std * eps`` (reparameterisation, eps
  from the global torch RNG, so a seeded run is reproducible) and decodes it.
* ``encode(x)`` returns the posterior **mode** (the mean): deterministic latents for
  the diffusion stage and for evaluation. ``forward(x, sample=False)`` decodes the
  mode too; the evaluation reconstructions are ``decode(encode(x))``.
* ``DiagonalGaussian.kl()`` is the closed form ``KL(q || N(0, I))`` per image, summed
  over the ``c x H/f x W/f`` latent elements:
  ``0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)``.

``encode`` returns *unscaled* latents: a diffusion model works on
``scale_factor * encode(x)`` and decodes ``decode(z / scale_factor)``.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from .blocks import AutoencoderConfig, Decoder, Encoder, FirstStage, check_image

__all__ = ["KLConfig", "KLAutoencoder", "DiagonalGaussian", "LOGVAR_RANGE", "AutoencoderOutput"]

LOGVAR_RANGE = (-30.0, 20.0)


@attrs.define
class KLConfig(AutoencoderConfig):
    """Options of ``kl-vae`` (architecture only; the KL weight is the objective's)."""


class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` over latents ``(B, c, h, w)``; logvar clamped."""

    def __init__(self, moments: Tensor):
        mean, logvar = moments.chunk(2, dim=1)
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                          dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """``(B,)`` KL(q || N(0, I)) per image, in nats, summed over latent elements."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


@attrs.define
class AutoencoderOutput:
    """What ``forward`` returns for training: the reconstruction and the latent terms.

    ``latent`` is what the decoder saw (a posterior sample, or the quantised latent);
    ``posterior`` is set for ``kl-vae``, ``quant`` (a :class:`.vq.QuantizerOutput`)
    for ``vqgan``.
    """

    reconstruction: Tensor
    latent: Tensor
    posterior: DiagonalGaussian | None = None
    quant: object | None = None


class KLAutoencoder(FirstStage):
    """LDM KL-regularised autoencoder (``kl-vae``): ``encode`` gives the posterior mode."""

    Config = KLConfig
    regularizer = "kl"

    def __init__(self, config: KLConfig | None = None):
        super().__init__()
        self.config = cfg = config or KLConfig()
        c = cfg.latent_channels
        self.encoder = Encoder(cfg, 2 * c)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(cfg, c)

    def encode_posterior(self, x: Tensor) -> DiagonalGaussian:
        check_image(x, self.config.in_channels, self.config.downsample)
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def encode(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [-1, 1] -> the posterior mean ``(B, c, H/f, W/f)`` (unscaled)."""
        return self.encode_posterior(x).mode()

    def decode(self, z: Tensor) -> Tensor:
        """``(B, c, h, w)`` -> images ``(B, C, h*f, w*f)`` (not clamped to [-1, 1])."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, sample: bool = True) -> AutoencoderOutput:
        posterior = self.encode_posterior(x)
        z = posterior.sample() if sample else posterior.mode()
        return AutoencoderOutput(self.decode(z), z, posterior=posterior)
