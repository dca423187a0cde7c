"""The LDM noise model: :class:`UNet` and its options :class:`UNetConfig`.

Layout (Rombach et al. 2022's ``UNetModel``; the same modules and order as diffusers'
``UNet2DConditionModel`` with ``layers_per_block = layers_per_level``), for
``channels = (c_0, ..., c_{L-1})``::

    emb  = TimeEmbedding(t) (+ label embedding)              (B|1, D), D = time_embed_mult * c_0
    h    = conv_in 3x3 (in_channels -> c_0)                  pushed as a skip
    down, level i = 0 .. L-1:
        layers_per_level x [ResBlock -> c_i (+ SpatialTransformer if i in attention_levels)]
                                                             each output pushed
        Downsample (stride-2 conv) unless i = L-1            output pushed
    mid: ResBlock, SpatialTransformer (if mid_attention), ResBlock      at c_{L-1}
    up, level i = L-1 .. 0:
        (layers_per_level + 1) x [ResBlock(concat(h, skips.pop())) -> c_i
                                  (+ SpatialTransformer if i in attention_levels)]
        Upsample (nearest x2 + conv 3x3) unless i = 0
    out  = conv_out 3x3 (SiLU(GroupNorm(h)))  -> out_channels, zero-initialised

Level 0 is the full resolution; inputs need sides divisible by ``2 ** (L - 1)``. The
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

Parameters: the defaults with ``in_channels=4`` have the same parameter count as
diffusers' ``UNet2DConditionModel`` of the same shape (``benchmarks/ldm_throughput.py``),
and with diffusers' weights mapped in both compute the same function; the measured
agreement and the speed against diffusers are in docs/benchmarks.md § Latent diffusion
against diffusers.

Speed choices (CPU; what each is worth is measured in docs/benchmarks.md):

* feature maps and conv weights are channels-last (:attr:`UNet.memory_format`): oneDNN's
  3x3 convolutions get faster and the transformer's token views cost no copy, but
  PyTorch's CPU GroupNorm is slower on channels-last tensors, so end to end the two
  layouts are within noise of each other;
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

from ..schedule_math import PREDICTION_TYPES
from .attention import ContextCache, SpatialTransformer
from .embeddings import TimeEmbedding
from .resnet import Downsample, GroupNorm32, ResBlock, Upsample, silu

__all__ = ["UNetConfig", "UNet", "PREDICTION_TYPES"]  # PREDICTION_TYPES: schedule_math's


@attrs.define
class UNetConfig:
    """Architecture options of the ``unet`` noise model (see the module doc for the layout)."""

    in_channels: int = option(3, "channels of x_t (latent channels for an LDM)", ge=1)
    out_channels: int = option(0, "channels of the prediction; 0 = in_channels", ge=0)
    channels: tuple[int, ...] = option((64, 128), "width of each resolution level, "
                                                  "full resolution first", ge=1)
    layers_per_level: int = option(1, "ResBlocks per down level (up levels get one more)",
                                   ge=1)
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
        for name in ("channels", "attention_levels"):
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
        if self.position_embedding == "sincos":
            for width in self.attention_widths():
                inner = self.heads * self.head_width(width)
                if inner % 4:
                    raise option_error("heads x head_dim", "must be divisible by 4 for "
                                                           "position_embedding='sincos'", inner)

    @property
    def levels(self) -> int:
        return len(self.channels)

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
    """The LDM UNet noise model: ``forward(x_t, t, context=None, *, labels=None)``.

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
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        skips, width = [ch[0]], ch[0]
        self.down = nn.ModuleList()
        for i, c in enumerate(ch):
            stages = []
            for _ in range(cfg.layers_per_level):
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
            for _ in range(cfg.layers_per_level + 1):
                stages.append(Stage(width + skips.pop(), ch[i], cfg, i in cfg.attention_levels))
                width = ch[i]
            self.up.append(Level(stages, Upsample(width) if i else None))

        self.norm_out = GroupNorm32(cfg.norm_groups, width, eps=1e-5)
        self.conv_out = nn.Conv2d(width, cfg.output_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self._cross = [a for m in self.modules() if isinstance(m, SpatialTransformer)
                       for a in m.cross_attentions()]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=self.memory_format)

    # ---------------------------------------------------------------- conditioning

    def cache_context(self, context: Tensor) -> ContextCache:
        """Project ``context`` ``(B, L, context_dim)`` to every cross-attention layer's keys
        and values once; pass the result as ``context=`` (same output, less work per step)."""
        self._check_context_tensor(context, None)
        return ContextCache(context, self._cross, self)

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

    def embed(self, t: Any, batch: int, labels: Tensor | None = None) -> Tensor:
        """The ResBlocks' conditioning ``SiLU(time embedding + label embedding)``: ``(1, D)``
        for one shared timestep without labels (or all-null ones), else ``(B, D)``."""
        device = self.conv_in.weight.device
        if isinstance(t, Tensor):
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, batch)):
                raise ValueError(f"t must be a number, a 0-d tensor or a (B,) tensor with "
                                 f"B = {batch}, got shape {tuple(t.shape)}")
            t = t.reshape(-1).to(device)
        elif isinstance(t, (int, float)) and not isinstance(t, bool):
            t = torch.tensor([t], dtype=torch.float32, device=device)
        else:
            raise ValueError(f"t must be a number or a tensor, got {type(t).__name__}")
        emb = self.time_embed(t)
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
        return F.silu(emb)

    # --------------------------------------------------------------------- forward

    def forward(self, x: Tensor, t: Any, context: Tensor | ContextCache | None = None, *,
                labels: Tensor | None = None) -> Tensor:
        self._check_input(x)
        batch = x.shape[0]
        self._check_context(context, batch)
        emb = self.embed(t, batch, labels)

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
        for level in self.up:
            for stage in level.stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb, context)
            if level.resample is not None:
                h = level.resample(h)
        out = self.conv_out(silu(self.norm_out(h)))
        return out.contiguous()
