"""``unet``: the LDM / Stable Diffusion UNet noise model with spatial transformers.

:class:`UNet` implements :class:`gaf.interfaces.NoiseModel`:
``unet(x_t, t, context=None, *, labels=None, cond_vector=None, concat=None)`` predicts
``config.prediction_type`` (v by default: with ε the shapes model ignored position
words, see docs/results.md) for noisy latents ``x_t`` ``(B, in_channels, H, W)``; ``cache_context``
precomputes the cross-attention keys and values of a context for a sampling run.
``cond_vector`` (added to the time embedding and, optionally, projected into extra
context tokens) and ``concat`` (images stacked on x_t's channels) are off by default
(``cond_dim``, ``extra_context_tokens``, ``concat_channels``; see :mod:`.model`).

Modules: :mod:`.embeddings` (sinusoidal timestep embedding, time MLP),
:mod:`.group_norm` (GroupNorm in float32, and from channel sums on channels-last maps),
:mod:`.resnet` (ResBlock, Downsample, Upsample), :mod:`.attention` (attention, GEGLU,
transformer blocks, the spatial transformer, the context cache), :mod:`.model` (the
config, the layout, input checks). The defaults (channels (64, 128), attention at full resolution
and in the middle, 8 heads, 64-wide context) give a 3.15M-parameter UNet, the size of
``benchmarks/ldm_throughput.py`` (which uses ``in_channels=4`` for 4x8x8 latents).
"""

from .attention import GEGLU, Attention, ContextCache, SpatialTransformer, TransformerBlock
from .embeddings import TimeEmbedding, timestep_embedding
from .model import UNet, UNetConfig
from .resnet import Downsample, ResBlock, Upsample

__all__ = ["UNet", "UNetConfig", "Attention", "ContextCache", "Downsample", "GEGLU", "ResBlock",
           "SpatialTransformer", "TimeEmbedding", "TransformerBlock", "Upsample",
           "timestep_embedding"]
