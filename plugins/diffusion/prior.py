"""unCLIP's diffusion prior (Ramesh et al. 2022, DALL-E 2): :class:`PriorTransformer`.

The prior models the CLIP image embedding ``z_i`` of an image given its caption: a
diffusion model over vectors, whose denoiser is a decoder-only transformer.

Token layout
------------
For a noised embedding ``x_t`` ``(B, E)`` at timestep ``t`` and a caption given as its
CLIP text states ``(B, L, W)`` (with the real-token ``mask`` ``(B, L)``) and its CLIP
text embedding ``z_t`` ``(B, E)`` (:class:`PriorCondition`), the transformer reads the
``L + 4`` tokens, each of width ``d`` (``width``)::

    position  0 … L−1     L              L+1          L+2          L+3
    token     text_proj   embed_proj     time_embed   x_proj       query
              (states)    (z_t)          (t)          (x_t)        (learned)

plus a learned position embedding per position. Attention is causal (a token sees
itself and the tokens before it) and no token sees a text position whose ``mask`` is
False (a pad); the blocks are the project's GPT-2 blocks (pre-LayerNorm, GELU MLP).
The prediction is ``out_proj(LayerNorm(h_query))`` ``(B, E)``, the last token's output:
by default the clean embedding itself (``prediction_type = "sample"``, x0, the paper's
choice), trained with ``‖f(x_t, t, c) − x0‖²``.

The first ``L + 1`` tokens do not depend on ``t`` or ``x_t``, and attention is causal,
so their keys and values are the same at every denoising step:
:meth:`PriorTransformer.cache_context` computes them once and each later call runs only
the three step tokens against them (the same function: a float64 test holds the cached
and full forwards equal).

Embedding statistics
--------------------
CLIP embeddings are unit vectors, so each of their ``E`` components has a spread of
about ``1/√E``, far below the unit-variance noise of the diffusion. The prior works in
standardised coordinates ``(z − mean) / std`` per component (the ``clip_mean`` and
``clip_std`` of diffusers' ``PriorTransformer`` and of Karlo), fitted on the training
embeddings once (:meth:`PriorTransformer.fit_embedding_stats`) and saved with the
weights as buffers; :meth:`~PriorTransformer.standardize` and
:meth:`~PriorTransformer.unstandardize` convert.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.errors import BadConfig

from ..lm.gpt2 import Block, GPT2Config, attention_mask_4d, init_block_weights_
from .unet.embeddings import TimeEmbedding, as_timesteps

__all__ = ["PriorCondition", "PriorConfig", "PriorTransformer", "PriorCache", "STEP_TOKENS"]

#: tokens that change with every denoising step: the timestep, x_t and the query
STEP_TOKENS = 3
#: the standard deviation of the embeddings' and position table's initial weights
EMBEDDING_STD = 0.02


@attrs.frozen
class PriorCondition:
    """A batch of captions as the prior reads them: CLIP text ``states`` ``(B, L, W)``,
    the real-token ``mask`` ``(B, L)`` (pads False) and the (unit) CLIP text embedding
    ``pooled`` ``(B, E)``."""

    states: Tensor
    mask: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @staticmethod
    def cat(parts: list[PriorCondition]) -> PriorCondition:
        """The conditions of ``parts`` stacked on the batch (e.g. ``[null; cond]``)."""
        return PriorCondition(torch.cat([p.states for p in parts]),
                              torch.cat([p.mask for p in parts]),
                              torch.cat([p.pooled for p in parts]))

    def where(self, keep: Tensor, other: PriorCondition) -> PriorCondition:
        """Row ``i`` from ``self`` where ``keep[i]``, else from ``other`` (whose rows may
        broadcast: the null caption of classifier-free guidance training)."""
        k = keep.to(self.states.device)
        return PriorCondition(torch.where(k[:, None, None], self.states, other.states),
                              torch.where(k[:, None], self.mask, other.mask),
                              torch.where(k[:, None], self.pooled, other.pooled))

    def to(self, device: Any) -> PriorCondition:
        return PriorCondition(self.states.to(device), self.mask.to(device),
                              self.pooled.to(device))


@attrs.define
class PriorConfig:
    """Options of the ``prior-transformer`` prior (see the module doc for the layout)."""

    embed_dim: int = option(64, "width E of the CLIP embeddings (the clip's embed_dim)", ge=1)
    text_width: int = option(64, "width W of the CLIP text states (the clip's text_width)",
                             ge=1)
    text_length: int = option(24, "text tokens L (the clip's max_length)", ge=1)
    width: int = option(128, "width d of the transformer's tokens", ge=1)
    layers: int = option(4, "transformer blocks", ge=1)
    heads: int = option(4, "attention heads (must divide width)", ge=1)
    mlp_ratio: int = option(4, "MLP hidden width as a multiple of width", ge=1)
    dropout: float = option(0.0, "dropout on attention weights and residual branches",
                            ge=0, lt=1)
    prediction_type: Literal["sample", "epsilon", "v_prediction"] = option(
        "sample", "what the prior predicts: sample (the clean embedding x0, the paper's), "
                  "epsilon or v_prediction")

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise option_error("heads", f"must divide width ({self.width})", self.heads)


@attrs.frozen
class PriorCache:
    """The caption prefix's keys and values at every layer, from
    :meth:`PriorTransformer.cache_context` (pass it as ``context``)."""

    past: list[tuple[Tensor, Tensor]]
    mask: Tensor  # (B, L + 1 + STEP_TOKENS) bool: which keys a token may see
    owner_id: int

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class PriorTransformer(nn.Module):
    """The unCLIP prior's denoiser: ``forward(x_t (B, E), t, context) -> (B, E)``.

    ``context`` is a :class:`PriorCondition` or the :class:`PriorCache` of one;
    ``t`` an int, a 0-d or ``(1,)`` tensor (shared by the batch) or a ``(B,)`` tensor.
    See the module doc.
    """

    Config = PriorConfig

    def __init__(self, config: PriorConfig | None = None):
        super().__init__()
        self.config = cfg = config or PriorConfig()
        self.prediction_type = cfg.prediction_type
        self.embed_dim = cfg.embed_dim
        d = cfg.width
        self.text_proj = nn.Linear(cfg.text_width, d)
        self.embed_proj = nn.Linear(cfg.embed_dim, d)
        self.time_embed = TimeEmbedding(d, d)
        self.x_proj = nn.Linear(cfg.embed_dim, d)
        self.query = nn.Parameter(torch.randn(d) * EMBEDDING_STD)
        self.positions = nn.Parameter(
            torch.randn(cfg.text_length + 1 + STEP_TOKENS, d) * EMBEDDING_STD)
        block = GPT2Config(d_model=d, n_head=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                           dropout=cfg.dropout, vocab_size=1)
        self.blocks = nn.ModuleList(Block(block) for _ in range(cfg.layers))
        init_block_weights_(self.blocks, cfg.layers, EMBEDDING_STD)
        self.norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, cfg.embed_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.register_buffer("embed_mean", torch.zeros(cfg.embed_dim))
        self.register_buffer("embed_std", torch.ones(cfg.embed_dim))
        self.register_buffer("stats_fitted", torch.tensor(False))

    # ------------------------------------------------------------ statistics

    @torch.no_grad()
    def fit_embedding_stats(self, embeddings: Tensor) -> None:
        """Set the per-component mean and standard deviation from ``(N, E)`` training
        embeddings (N ≥ 2; the std is floored at 1e-4)."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim or len(embeddings) < 2:
            raise ValueError(f"fit_embedding_stats takes (N >= 2, {self.embed_dim}) "
                             f"embeddings, got {tuple(embeddings.shape)}")
        e = embeddings.double()
        self.embed_mean.copy_(e.mean(0))
        self.embed_std.copy_(e.std(0).clamp_min(1e-4))
        self.stats_fitted.fill_(True)

    def standardize(self, embeddings: Tensor) -> Tensor:
        """``(z − mean) / std``: the prior's coordinates of CLIP embeddings."""
        return (embeddings - self.embed_mean) / self.embed_std

    def unstandardize(self, x: Tensor) -> Tensor:
        """``x · std + mean``: CLIP embeddings from the prior's coordinates."""
        return x * self.embed_std + self.embed_mean

    # ----------------------------------------------------------------- forward

    def _check_condition(self, cond: Any) -> None:
        cfg = self.config
        if not isinstance(cond, PriorCondition):
            raise BadConfig(f"the prior's context must be a PriorCondition or its "
                            f"cache_context(), got {type(cond).__name__}")
        want = (cfg.text_length, cfg.text_width)
        if cond.states.dim() != 3 or tuple(cond.states.shape[1:]) != want:
            raise BadConfig(f"the prior takes text states (B, {want[0]}, {want[1]}) but got "
                            f"{tuple(cond.states.shape)}; set prior.text_length and "
                            f"prior.text_width to the CLIP's max_length and text_width")
        if tuple(cond.mask.shape) != tuple(cond.states.shape[:2]):
            raise ValueError(f"mask {tuple(cond.mask.shape)} must be (B, L) of the states "
                             f"{tuple(cond.states.shape)}")
        if cond.pooled.dim() != 2 or cond.pooled.shape[1] != cfg.embed_dim:
            raise BadConfig(f"the prior takes text embeddings (B, {cfg.embed_dim}), got "
                            f"{tuple(cond.pooled.shape)}; set prior.embed_dim to the CLIP's "
                            f"embed_dim")
        if cond.pooled.shape[0] != cond.states.shape[0]:
            raise ValueError(f"the condition has {cond.states.shape[0]} captions' states "
                             f"but {cond.pooled.shape[0]} text embeddings")

    def _prefix_tokens(self, cond: PriorCondition) -> Tensor:
        w = self.text_proj.weight
        text = self.text_proj(cond.states.to(w.dtype))
        pooled = self.embed_proj(cond.pooled.to(w.dtype))[:, None]
        return torch.cat([text, pooled], dim=1) + self.positions[:text.shape[1] + 1]

    def _step_tokens(self, x_t: Tensor, t: Any) -> Tensor:
        batch = x_t.shape[0]
        w = self.x_proj.weight
        time = self.time_embed(as_timesteps(t, batch, w.device)).to(w.dtype).expand(batch, -1)
        x = self.x_proj(x_t.to(w.dtype))
        query = self.query.to(w.dtype).expand(batch, -1)
        return torch.stack([time, x, query], dim=1) + self.positions[-STEP_TOKENS:]

    def _key_mask(self, cond: PriorCondition) -> Tensor:
        """``(B, L + 1 + STEP_TOKENS)``: every key but the text pads."""
        rest = torch.ones(len(cond), 1 + STEP_TOKENS, dtype=torch.bool,
                          device=cond.mask.device)
        return torch.cat([cond.mask.bool(), rest], dim=1)

    def cache_context(self, context: PriorCondition) -> PriorCache:
        """The caption prefix run once (keys and values of every layer); pass the result
        as ``context`` to every denoising step of the same batch."""
        self._check_condition(context)
        h = self._prefix_tokens(context)
        keys = self._key_mask(context).to(h.device)
        prefix = h.shape[1]
        mask = attention_mask_4d(keys[:, :prefix], len(context), prefix, 0, h.device)
        past = []
        for block in self.blocks:
            h, kv = block(h, mask, None)
            past.append(kv)
        return PriorCache(past, keys, id(self))

    def forward(self, x_t: Tensor, t: Any, context: PriorCondition | PriorCache) -> Tensor:
        if not isinstance(x_t, Tensor) or x_t.dim() != 2 or x_t.shape[1] != self.embed_dim:
            shape = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"x_t must be (B, embed_dim={self.embed_dim}), got {shape}")
        batch = x_t.shape[0]
        step = self._step_tokens(x_t, t)
        if isinstance(context, PriorCache):
            if context.owner_id != id(self):
                raise ValueError("this prior cache was made by another model's cache_context")
            if len(context) != batch:
                raise ValueError(f"the prior cache has batch {len(context)} but x_t has "
                                 f"batch {batch}")
            past, keys = context.past, context.mask.to(step.device)
            prefix = keys.shape[1] - STEP_TOKENS
            mask = attention_mask_4d(keys, batch, STEP_TOKENS, prefix, step.device)
            h = step
            for block, kv in zip(self.blocks, past):
                h, _ = block(h, mask, kv)
        else:
            self._check_condition(context)
            if len(context) != batch:
                raise ValueError(f"the condition has batch {len(context)} but x_t has "
                                 f"batch {batch}")
            h = torch.cat([self._prefix_tokens(context), step], dim=1)
            keys = self._key_mask(context).to(h.device)
            mask = attention_mask_4d(keys, batch, h.shape[1], 0, h.device)
            for block in self.blocks:
                h, _ = block(h, mask, None)
        return self.out_proj(self.norm(h[:, -1]))
