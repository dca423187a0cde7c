"""The LDM noise model: :class:`UNet` and its options :class:`UNetConfig`.

Layout (Rombach et al. 2022's ``UNetModel``; the same modules and order as diffusers'
``UNet2DConditionModel`` with ``layers_per_block = layers_per_level``), for
``channels = (c_0, ..., c_{L-1})``::

    emb  = TimeEmbedding(t) (+ label embedding) (+ cond_embed(cond_vector))
                                                             (B|1, D), D = time_embed_mult * c_0
    h    = conv_in 3x3 ([x_t | concat]: in_channels + concat_channels -> c_0)
                                                             pushed as a skip
    down, level i = 0 .. L-1:
        n_i x [ResBlock -> c_i (+ SpatialTransformer if i in attention_levels)]
                                                             each output pushed
        Downsample (stride-2 conv) unless i = L-1            output pushed
    mid: ResBlock, SpatialTransformer (if mid_attention), ResBlock      at c_{L-1}
    up, level i = L-1 .. 0:
        (n_i + 1) x [ResBlock(concat(h, skip_scale * skips.pop())) -> c_i
                                  (+ SpatialTransformer if i in attention_levels)]
        Upsample (nearest x2 + conv 3x3) unless i = 0
    out  = conv_out 3x3 (SiLU(GroupNorm(h)))  -> out_channels, zero-initialised

with ``n_i = level_layers[i]`` (default: ``layers_per_level`` at every level) and
``skip_scale`` 1 (Imagen's efficient UNet: more blocks at low resolution, e.g.
``level_layers = (1, 2, 4)``, and skips scaled by ``1/√2``: the Efficient U-Net of
Saharia et al. 2022). Level 0 is the full resolution; inputs need sides divisible by ``2 ** (L - 1)``. The
zero-initialised ``conv_out`` (and each ResBlock's ``conv2`` and transformer's
``proj_out``, LDM's ``zero_module``) makes a freshly built UNet output exactly zero.

Conditioning:

* ``t``: an int or float, a 0-d tensor or a ``(1,)`` tensor (one timestep for the whole
  batch: the time embedding is computed once and broadcast, and every ResBlock folds its
  time shift into a conv bias), or a ``(B,)`` tensor.
* ``context``: ``(B, L, context_dim)`` token states for the cross-attention layers, or the
  :class:`~.attention.ContextCache` returned by :meth:`UNet.cache_context` (k and v
  projected once for a whole sampling run). ``context_dim = 0`` builds no
  cross-attention; then ``context`` must be None.
* ``labels``: ``(B,)`` class indices when ``num_classes > 0``; index ``num_classes`` is
  the learned null label for classifier-free guidance, and ``labels=None`` means all
  null.
* ``cond_vector``: ``(B, cond_dim)`` when ``cond_dim > 0``, one vector per image (unCLIP's
  CLIP image embedding, Imagen's pooled text embedding or noise-augmentation level). It is
  added to the time embedding before the ResBlocks see it, through
  ``cond_embed = Linear(cond_dim, D) -> SiLU -> Linear(D, D)``: LDM's ``adm_in_channels``
  "sequential" label embedding, diffusers' ``class_embed_type="projection"`` with an MLP.
  Unlike theirs, the last Linear is zero-initialised, so adding the option to a trained
  model (fine-tuning it into a conditional one) leaves its output unchanged until the
  projection learns; its last Linear gets a gradient at once (its input is not zero),
  the first one from the second optimiser step on.
* extra context tokens: with ``extra_context_tokens = n > 0`` (needs ``cond_dim`` and
  ``context_dim``), ``context_proj = Linear(cond_dim, n * context_dim)`` turns
  ``cond_vector`` into ``n`` tokens appended to ``context`` (``(B, L + n, context_dim)``)
  for every cross-attention layer: unCLIP's ``clip_extra_context_tokens`` (which it puts
  first; cross-attention has no positions on its keys, so the order does not matter).
  Default init (not zero: a zero token still takes part in the softmax).
* ``concat``: ``(B, concat_channels, H, W)`` when ``concat_channels > 0``, images
  concatenated to ``x_t`` on channels before ``conv_in`` (super-resolution's upsampled
  low-resolution image, inpainting's mask and masked image); the output keeps
  ``out_channels``.
* pooled context: with ``pooled_context``, ``pool_embed(mean_l context[:, l])`` is added
  to the time embedding, ``pool_embed = Linear(context_dim, D) -> SiLU -> Linear(D, D)``
  (last Linear zero-initialised): Imagen's pooled text embedding. The mean runs over all
  ``L`` context tokens (pads included, as imagen-pytorch's ``mean_pooled_text_tokens``;
  a frozen encoder that zeroes its pad states makes it the real tokens' sum over ``L``),
  before any extra context tokens are appended; :meth:`UNet.cache_context` keeps it.
* ``noise_level``: with the option ``noise_level``, ``(B,)`` or one shared level ``a`` in
  ``[0, 1]``, the noise-conditioning augmentation level of the ``concat`` image
  (:mod:`gaf.plugins.diffusion.augmentation`). ``level_embed = TimeEmbedding`` of
  ``1000·a`` (the sinusoidal embedding of :mod:`.embeddings`, as DeepFloyd IF's
  ``noise_level`` class embedding of type "timestep"), its last Linear zero-initialised,
  is added to the time embedding.

Every one of these options defaults to 0, which builds no new parameter and draws no
random number: a default model is today's, weight for weight. ``cond_embed`` and
``context_proj`` are built last, so a model with them shares every other initial
weight with the model without them (same seed); ``concat_channels`` changes
``conv_in``'s shape and hence the initial draws after it. A conditioning input the
options ask for but the call lacks (or one they do not ask for) is a
:class:`~gaf.errors.BadConfig` naming the option.

Parameters: the defaults with ``in_channels=4`` have the same parameter count as
diffusers' ``UNet2DConditionModel`` of the same shape (``benchmarks/ldm_throughput.py``),
and with diffusers' weights mapped in both compute the same function; the measured
agreement and the speed against diffusers are in docs/benchmarks.md § Latent diffusion
against diffusers.

Speed choices (CPU; what each is worth is measured in docs/benchmarks.md):

* feature maps and conv weights are channels-last (:attr:`UNet.memory_format`): oneDNN's
  3x3 convolutions get faster and the transformer's token views cost no copy;
  PyTorch's CPU GroupNorm is slower on that layout below 32x32 maps, so without autograd
  :class:`~.group_norm.GroupNorm32` computes it from channel sums there;
* attention at short key lengths materialises its scores instead of running the fused
  kernel (:func:`~.attention.attend`): GEMMs per head without autograd, batched GEMMs
  with a backward from the saved probabilities under autograd;
* the ResBlock, GEGLU and head-split paths described in :mod:`.resnet` and
  :mod:`.attention`;
* the rest is leaner layer code: less Python per layer and fewer copies than diffusers'
  generic blocks (its attention processor alone copies q, k, v and the output between
  layouts), and, for training, torch's fused AdamW kernel from gaf's ``make_optimizer``
  instead of the per-tensor loop.

Convolutions and GEMMs already run near the cores' peak, so the remaining cost is mostly
memory-bound element-wise work.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.errors import BadConfig

from ..schedule_math import PREDICTION_TYPES
from .attention import ContextCache, SpatialTransformer
from .embeddings import TimeEmbedding, as_timesteps
from .resnet import Downsample, GroupNorm32, ResBlock, Upsample, silu

__all__ = ["UNetConfig", "UNet", "PREDICTION_TYPES", "LEVEL_SCALE"]  # PREDICTION_TYPES: schedule_math's

#: the noise-augmentation level ``a`` in ``[0, 1]`` is embedded as the timestep ``1000·a``
LEVEL_SCALE = 1000.0


@attrs.define
class UNetConfig:
    """Architecture options of the ``unet`` noise model (see the module doc for the layout)."""

    in_channels: int = option(3, "channels of x_t (latent channels for an LDM)", ge=1)
    out_channels: int = option(0, "channels of the prediction; 0 = in_channels", ge=0)
    channels: tuple[int, ...] = option((64, 128), "width of each resolution level, "
                                                  "full resolution first", ge=1)
    layers_per_level: int = option(1, "ResBlocks per down level (up levels get one more)",
                                   ge=1)
    level_layers: tuple[int, ...] = option((), "ResBlocks per down level, one entry per "
                                               "level (Imagen's efficient UNet puts more at "
                                               "low resolution); empty = layers_per_level "
                                               "at every level", ge=1)
    skip_scale: float = option(1.0, "factor on the skip connections the up path "
                                    "concatenates (Imagen's efficient UNet: 1/sqrt(2))", gt=0)
    attention_levels: tuple[int, ...] = option((0,), "levels with a spatial transformer "
                                                     "(0 = full resolution)", ge=0)
    mid_attention: bool = option(True, "a spatial transformer in the middle block")
    heads: int = option(8, "attention heads (the number of heads, not their width)", ge=1)
    head_dim: int = option(0, "width of each head; 0 = level channels // heads", ge=0)
    transformer_depth: int = option(1, "transformer blocks per spatial transformer", ge=1)
    context_dim: int = option(64, "width of the context tokens for cross-attention; "
                                  "0 = no cross-attention (self-attention only)", ge=0)
    num_classes: int = option(0, "class labels for a class embedding; 0 = none (index "
                                 "num_classes is the null label)", ge=0)
    cond_dim: int = option(0, "width of a conditioning vector (forward's cond_vector, e.g. "
                              "unCLIP's image embedding) projected and added to the time "
                              "embedding; 0 = none", ge=0)
    extra_context_tokens: int = option(0, "context tokens projected from cond_vector and "
                                          "appended to the cross-attention context (unCLIP's "
                                          "4); needs cond_dim and context_dim; 0 = none", ge=0)
    concat_channels: int = option(0, "extra input channels concatenated to x_t (forward's "
                                     "concat: a super-resolution low-res image, an "
                                     "inpainting mask); 0 = none", ge=0)
    pooled_context: bool = option(False, "add an MLP of the context's mean over its tokens "
                                         "to the time embedding (Imagen's pooled text "
                                         "embedding); needs context_dim")
    noise_level: bool = option(False, "add an embedding of the conditioning image's "
                                      "noise-augmentation level a in [0, 1] (forward's "
                                      "noise_level) to the time embedding (Imagen's and "
                                      "DeepFloyd IF's super-resolution stages)")
    time_embed_mult: int = option(4, "time embedding width = time_embed_mult * channels[0]",
                                  ge=1)
    norm_groups: int = option(32, "GroupNorm groups (must divide every level width)", ge=1)
    dropout: float = option(0.0, "dropout in the ResBlocks and the transformer MLPs",
                            ge=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = option(
        "v_prediction", "what the model predicts: epsilon (the LDM's), v_prediction "
                        "(default: text-to-image layout is learned far faster, see "
                        "docs/results.md) or sample (x0)")
    position_embedding: Literal["none", "sincos"] = option(
        "none", "none: the LDM block (positions only through the convolutions); sincos: "
                "a fixed 2-D sinusoidal embedding added to the spatial transformers' tokens")

    def __attrs_post_init__(self) -> None:
        # each option's own range (and the Literal choices) is declared above; these are
        # the rules the declarations cannot say: a non-empty list, no repeats, and the
        # rules that relate two options
        for name in ("channels", "attention_levels", "level_layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if not self.channels:
            raise option_error("channels", "must list at least one level width",
                               self.channels)
        for width in self.channels:
            if width % self.norm_groups:
                raise option_error("norm_groups", f"must divide every level width "
                                                  f"(channels has {width})", self.norm_groups)
        levels = len(self.channels)
        if self.level_layers and len(self.level_layers) != levels:
            raise option_error("level_layers", f"needs one entry per channel level ({levels}) "
                                               f"or none", self.level_layers)
        if any(level >= levels for level in self.attention_levels):
            raise option_error("attention_levels", f"entries must be level indices in "
                                                   f"[0, {levels}) for {levels} channel "
                                                   f"levels", self.attention_levels)
        if len(set(self.attention_levels)) != len(self.attention_levels):
            raise option_error("attention_levels", "must not repeat a level",
                               self.attention_levels)
        if self.head_dim == 0:
            for width in self.attention_widths():
                if width % self.heads:
                    raise option_error("heads", f"must divide the width {width} of every "
                                                f"level with attention when head_dim = 0 "
                                                f"(or set head_dim)", self.heads)
        if self.extra_context_tokens and not (self.cond_dim and self.context_dim):
            raise option_error("extra_context_tokens", "needs cond_dim > 0 (the vector they "
                                                       "are projected from) and context_dim > 0 "
                                                       "(the cross-attention they join)",
                               self.extra_context_tokens)
        if self.pooled_context and not self.context_dim:
            raise option_error("pooled_context", "needs context_dim > 0 (the context it "
                                                 "pools)", self.pooled_context)
        if self.position_embedding == "sincos":
            for width in self.attention_widths():
                inner = self.heads * self.head_width(width)
                if inner % 4:
                    raise option_error("heads x head_dim", "must be divisible by 4 for "
                                                           "position_embedding='sincos'", inner)

    @property
    def levels(self) -> int:
        return len(self.channels)

    def layers_at(self, level: int) -> int:
        """ResBlocks of down level ``level`` (its up level has one more)."""
        return self.level_layers[level] if self.level_layers else self.layers_per_level

    @property
    def factor(self) -> int:
        """The total downsampling, ``2 ** (levels - 1)``: input sides must be multiples."""
        return 2 ** (len(self.channels) - 1)

    @property
    def output_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def time_embed_dim(self) -> int:
        return self.time_embed_mult * self.channels[0]

    def attention_widths(self) -> list[int]:
        """The channel widths that get a spatial transformer."""
        widths = [self.channels[i] for i in self.attention_levels]
        return widths + ([self.channels[-1]] if self.mid_attention else [])

    def head_width(self, channels: int) -> int:
        return self.head_dim or channels // self.heads


class Stage(nn.Module):
    """One UNet stage: a ResBlock, then a SpatialTransformer when the level has attention."""

    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(c_in, c_out, cfg.time_embed_dim, cfg.norm_groups, cfg.dropout)
        self.attn = (SpatialTransformer(c_out, cfg.heads, cfg.head_width(c_out),
                                        cfg.transformer_depth, cfg.context_dim,
                                        cfg.norm_groups, cfg.dropout, cfg.position_embedding)
                     if attention else None)

    def forward(self, x: Tensor, emb: Tensor, context: Any) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context)


class Level(nn.Module):
    """The stages of one resolution level and its resampler (Downsample, Upsample or None)."""

    def __init__(self, stages: list[Stage], resample: nn.Module | None):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.resample = resample


class UNet(nn.Module):
    """The LDM UNet noise model: ``forward(x_t, t, context=None, *, labels=None,
    cond_vector=None, concat=None, noise_level=None)``.

    ``x_t`` is ``(B, in_channels, H, W)``; the result ``(B, out_channels, H, W)`` is the
    ``prediction_type`` target. See the module doc for the layout and conditioning.
    """

    Config = UNetConfig
    #: Memory format of the feature maps and conv weights (see the module doc); set
    #: ``torch.contiguous_format`` before construction to compare.
    memory_format = torch.channels_last

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        self.prediction_type = cfg.prediction_type
        self.in_channels = cfg.in_channels
        ch = cfg.channels
        self.time_embed = TimeEmbedding(ch[0], cfg.time_embed_dim)
        self.label_embed = (nn.Embedding(cfg.num_classes + 1, cfg.time_embed_dim)
                            if cfg.num_classes else None)
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.concat_channels, ch[0], 3, padding=1)

        skips, width = [ch[0]], ch[0]
        self.down = nn.ModuleList()
        for i, c in enumerate(ch):
            stages = []
            for _ in range(cfg.layers_at(i)):
                stages.append(Stage(width, c, cfg, i in cfg.attention_levels))
                width = c
                skips.append(width)
            last = i == len(ch) - 1
            self.down.append(Level(stages, None if last else Downsample(width)))
            if not last:
                skips.append(width)

        self.mid = nn.ModuleList([Stage(width, width, cfg, cfg.mid_attention),
                                  Stage(width, width, cfg, False)])

        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            stages = []
            for _ in range(cfg.layers_at(i) + 1):
                stages.append(Stage(width + skips.pop(), ch[i], cfg, i in cfg.attention_levels))
                width = ch[i]
            self.up.append(Level(stages, Upsample(width) if i else None))

        self.norm_out = GroupNorm32(cfg.norm_groups, width, eps=1e-5)
        self.conv_out = nn.Conv2d(width, cfg.output_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # built last, so that the modules above draw the same initial weights with or
        # without them
        self.cond_embed = self.context_proj = self.pool_embed = self.level_embed = None
        if cfg.cond_dim:
            self.cond_embed = nn.Sequential(nn.Linear(cfg.cond_dim, cfg.time_embed_dim), nn.SiLU(),
                                            nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim))
            nn.init.zeros_(self.cond_embed[2].weight)
            nn.init.zeros_(self.cond_embed[2].bias)
        if cfg.extra_context_tokens:
            self.context_proj = nn.Linear(cfg.cond_dim,
                                          cfg.extra_context_tokens * cfg.context_dim)
        if cfg.pooled_context:
            self.pool_embed = nn.Sequential(
                nn.Linear(cfg.context_dim, cfg.time_embed_dim), nn.SiLU(),
                nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim))
            nn.init.zeros_(self.pool_embed[2].weight)
            nn.init.zeros_(self.pool_embed[2].bias)
        if cfg.noise_level:
            self.level_embed = TimeEmbedding(ch[0], cfg.time_embed_dim)
            nn.init.zeros_(self.level_embed.fc2.weight)
            nn.init.zeros_(self.level_embed.fc2.bias)
        self._cross = [a for m in self.modules() if isinstance(m, SpatialTransformer)
                       for a in m.cross_attentions()]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=self.memory_format)

    # ---------------------------------------------------------------- conditioning

    def cache_context(self, context: Tensor, cond_vector: Tensor | None = None) -> ContextCache:
        """Project ``context`` ``(B, L, context_dim)`` to every cross-attention layer's keys
        and values once; pass the result as ``context=`` (same output, less work per step).

        With ``extra_context_tokens``, ``cond_vector`` is required and its tokens are
        cached with the context; forward must then get the same ``cond_vector``."""
        self._check_context_tensor(context, None)
        if self.context_proj is not None and cond_vector is None:
            raise BadConfig(f"this UNet has extra_context_tokens = "
                            f"{self.config.extra_context_tokens}: pass cache_context(context, "
                            f"cond_vector=(B, {self.config.cond_dim})), the vector they come from")
        full = self._with_extra_tokens(context, cond_vector)
        cache = ContextCache(full, self._cross, self)
        cache.cond_vector = cond_vector if self.context_proj is not None else None
        cache.pooled = context.mean(dim=1) if self.pool_embed is not None else None
        return cache

    def _check_cond(self, cond_vector: Any, batch: int) -> None:
        d = self.config.cond_dim
        if not d:
            if cond_vector is not None:
                raise BadConfig("this UNet takes no cond_vector (noise-model cond_dim = 0); "
                                "set cond_dim to condition on a vector")
            return
        if cond_vector is None:
            raise BadConfig(f"this UNet has cond_dim = {d}: pass cond_vector (B, {d})")
        if (not isinstance(cond_vector, Tensor) or cond_vector.shape != (batch, d)
                or not cond_vector.is_floating_point()):
            got = (f"{cond_vector.dtype} of shape {tuple(cond_vector.shape)}"
                   if isinstance(cond_vector, Tensor) else type(cond_vector).__name__)
            raise ValueError(f"cond_vector must be a (B, cond_dim) float tensor with B = "
                             f"{batch}, cond_dim = {d}, got {got}")

    def _with_extra_tokens(self, context: Tensor, cond_vector: Any) -> Tensor:
        """``context`` with ``extra_context_tokens`` tokens from ``cond_vector`` appended."""
        if self.context_proj is None:
            return context
        self._check_cond(cond_vector, context.shape[0])
        n, d = self.config.extra_context_tokens, self.config.context_dim
        w = self.context_proj.weight
        extra = self.context_proj(cond_vector.to(device=w.device, dtype=w.dtype))
        return torch.cat([context, extra.reshape(-1, n, d).to(context.dtype)], dim=1)

    def _check_concat(self, concat: Any, x: Tensor) -> None:
        k = self.config.concat_channels
        if not k:
            if concat is not None:
                raise BadConfig("this UNet takes no concat images (noise-model "
                                "concat_channels = 0)")
            return
        if concat is None:
            raise BadConfig(f"this UNet has concat_channels = {k}: pass concat "
                            f"(B, {k}, H, W)")
        want = (x.shape[0], k, *x.shape[-2:])
        if not isinstance(concat, Tensor) or tuple(concat.shape) != want:
            got = tuple(concat.shape) if isinstance(concat, Tensor) else type(concat).__name__
            raise ValueError(f"concat must be (B, concat_channels, H, W) = {want}, got {got}")

    def _check_context_tensor(self, context: Any, batch: int | None) -> None:
        d = self.config.context_dim
        if not isinstance(context, Tensor) or context.dim() != 3 or context.shape[-1] != d:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"context must be (B, L, context_dim={d}) token states, got {shape}")
        if batch is not None and context.shape[0] != batch:
            raise ValueError(f"context has batch {context.shape[0]} but x_t has batch {batch}")

    def _check_context(self, context: Any, batch: int) -> None:
        if not self.config.context_dim:
            if context is not None:
                raise ValueError("this UNet has no cross-attention (context_dim = 0): pass "
                                 "context=None")
            return
        if context is None:
            raise ValueError(f"this UNet has cross-attention: pass context (B, L, "
                             f"context_dim={self.config.context_dim}) or a cache_context() result")
        if isinstance(context, ContextCache):
            if context.owner_id != id(self):
                raise ValueError("this context cache was made by another model's cache_context")
            if context.batch_size != batch:
                raise ValueError(f"the context cache has batch {context.batch_size} but x_t has "
                                 f"batch {batch}")
            return
        self._check_context_tensor(context, batch)

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != cfg.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x_t must be (B, in_channels={cfg.in_channels}, H, W), got {shape}")
        if x.shape[-2] % cfg.factor or x.shape[-1] % cfg.factor:
            raise ValueError(f"x_t sides {tuple(x.shape[-2:])} must be divisible by "
                             f"2 ** (levels - 1) = {cfg.factor} ({cfg.levels} channel levels)")

    def embed(self, t: Any, batch: int, labels: Tensor | None = None,
              cond_vector: Tensor | None = None, pooled: Tensor | None = None,
              noise_level: Any = None) -> Tensor:
        """The ResBlocks' conditioning ``SiLU(time embedding + label embedding +
        cond_embed(cond_vector) + pool_embed(pooled) + level_embed(1000 noise_level))``:
        ``(1, D)`` for one shared timestep without labels (or all-null ones), without
        ``cond_vector`` or ``pooled`` and with one shared level, else ``(B, D)``.
        ``pooled`` is the context's mean over its tokens (``(B, context_dim)``)."""
        device = self.conv_in.weight.device
        emb = self.time_embed(as_timesteps(t, batch, device))
        if self.label_embed is not None:
            n = self.config.num_classes
            if labels is None:  # all null: one row, broadcast like a shared timestep
                emb = emb + self.label_embed.weight[n]
            elif (not isinstance(labels, Tensor) or labels.shape != (batch,)
                  or labels.is_floating_point() or labels.dtype == torch.bool):
                got = (f"{labels.dtype} of shape {tuple(labels.shape)}"
                       if isinstance(labels, Tensor) else type(labels).__name__)
                raise ValueError(f"labels must be a (B,) integer tensor with B = {batch}, "
                                 f"got {got}")
            elif labels.device.type == "cpu" and bool(((labels < 0) | (labels > n)).any()):
                raise ValueError(f"labels must lie in [0, {n}] (num_classes = {n} is the null "
                                 f"label), got min {int(labels.min())}, max {int(labels.max())}")
            else:
                emb = emb + self.label_embed(labels.to(device))
        elif labels is not None:
            raise ValueError("this UNet has no class embedding (num_classes = 0): pass "
                             "labels=None")
        self._check_cond(cond_vector, batch)
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond_vector.to(device=device, dtype=emb.dtype))
        if self.pool_embed is not None:
            emb = emb + self.pool_embed(pooled.to(device=device, dtype=emb.dtype))
        if self.level_embed is not None:
            if noise_level is None:
                raise BadConfig("this UNet has noise_level = true: pass noise_level, the "
                                "augmentation level a in [0, 1] of its concat image")
            level = as_timesteps(noise_level, batch, device)
            emb = emb + self.level_embed(level.to(torch.float32) * LEVEL_SCALE)
        elif noise_level is not None:
            raise BadConfig("this UNet takes no noise_level (noise-model noise_level = "
                            "false)")
        return F.silu(emb)

    # --------------------------------------------------------------------- forward

    def forward(self, x: Tensor, t: Any, context: Tensor | ContextCache | None = None, *,
                labels: Tensor | None = None, cond_vector: Tensor | None = None,
                concat: Tensor | None = None, noise_level: Any = None) -> Tensor:
        self._check_input(x)
        batch = x.shape[0]
        self._check_context(context, batch)
        self._check_concat(concat, x)
        pooled = None
        if self.pool_embed is not None:
            pooled = context.pooled if isinstance(context, ContextCache) else context.mean(1)
        emb = self.embed(t, batch, labels, cond_vector, pooled, noise_level)
        if isinstance(context, ContextCache):
            cached = context.cond_vector  # (the same tensor every step: no comparison)
            if cached is not None and cached is not cond_vector and (
                    cond_vector.shape != cached.shape or not torch.equal(cond_vector, cached)):
                raise ValueError("cond_vector differs from the one given to cache_context, "
                                 "whose extra context tokens the cache holds")
        elif context is not None:
            context = self._with_extra_tokens(context, cond_vector)
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)

        h = self.conv_in(x.contiguous(memory_format=self.memory_format))
        skips = [h]
        for level in self.down:
            for stage in level.stages:
                h = stage(h, emb, context)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        for stage in self.mid:
            h = stage(h, emb, context)
        scale = self.config.skip_scale
        for level in self.up:
            for stage in level.stages:
                skip = skips.pop()
                h = stage(torch.cat([h, skip if scale == 1.0 else skip * scale], dim=1), emb,
                          context)
            if level.resample is not None:
                h = level.resample(h)
        out = self.conv_out(silu(self.norm_out(h)))
        return out.contiguous()
