"""LDM first-stage autoencoders: ``kl-vae`` (:class:`KLAutoencoder`), ``vqgan``
(:class:`VQAutoencoder`) and ``none`` (:class:`IdentityAutoencoder`: pixel space),
with the PatchGAN :class:`PatchDiscriminator` used to train the first two.

Both implement :class:`gaf.interfaces.Autoencoder`: ``encode(x) -> z`` maps images
``(B, C, H, W)`` in ``[-1, 1]`` to latents ``(B, c, H/f, W/f)``, ``decode(z) -> x``
maps back, and ``scale_factor`` (fitted after training, saved in the state dict)
multiplies latents before diffusion. See :mod:`.blocks` for the encoder/decoder
architecture and its options, :mod:`.kl` and :mod:`.vq` for the two latent
regularisers, :mod:`gaf.plugins.autoencoders.training` for the losses and
the training objective ``autoencoder``.

Default size (``downsample=4, latent_channels=3, base_channels=16``, channel
widths 16/32/64 from ``channel_mult=(1, 2, 4)``, ``num_res_blocks=1``, mid attention
on; ``vqgan`` adds the codebook): meant for 32x32 images on a CPU. Its parameter count
and what it takes to train are in docs/results.md § Autoencoders.
"""

from .blocks import AutoencoderConfig, Decoder, Encoder
from .discriminator import PatchDiscriminator
from .identity import IdentityAutoencoder, IdentityConfig
from .kl import AutoencoderOutput, DiagonalGaussian, KLAutoencoder, KLConfig
from .vq import QuantizerOutput, VectorQuantizer, VQAutoencoder, VQConfig

__all__ = ["AutoencoderConfig", "AutoencoderOutput", "Decoder", "DiagonalGaussian", "Encoder",
           "IdentityAutoencoder", "IdentityConfig",
           "KLAutoencoder", "KLConfig", "PatchDiscriminator", "QuantizerOutput",
           "VQAutoencoder", "VQConfig", "VectorQuantizer"]
