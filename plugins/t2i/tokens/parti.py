"""``parti``: an encoder–decoder over image codes (Yu et al. 2022, Parti), in miniature.

The **encoder** is the project's bidirectional ``text-transformer`` (its tokenizer,
key-padding mask and final LayerNorm; ``d_model`` wide, ``encoder_layers`` deep). Its
learned null context (``null``, a ``(text_length, d_model)`` parameter) replaces the
caption's states when a caption is dropped, Parti's learned null for classifier-free
guidance (lucidrains' ``cond_drop_prob``).

The **decoder** reads ``[BOS, c_1 … c_{N-1}]`` (BOS a learned vector, code ``c_k`` its
embedding plus the row and column embeddings of its grid cell, as in ``dalle``) through
``n_layer`` blocks of pre-LayerNorm causal self-attention (the GPT-2 block's, with its
KV cache), cross-attention to the encoder's states (pads masked out; the null context
is attended whole) and an MLP, then a LayerNorm and a linear head over the ``K`` codes
only. The loss is the mean cross-entropy of ``c_1 … c_N`` (there are no text targets:
the encoder does not predict). :meth:`PartiTransformer.prefill` encodes the caption,
projects every block's cross-attention keys and values once and runs BOS;
:meth:`PartiTransformer.step` feeds one code; both return the next code's logits for
:mod:`.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaf.config import option
from gaf.plugins.conditioners.text import (EMBEDDING_STD, TextTransformer,
                                           TextTransformerConfig)
from gaf.plugins.lm.gpt2 import MLP, Attention, GPT2Config, KVBuffer

from .dalle import TokenModelConfig, grid_positions

__all__ = ["PartiConfig", "PartiTransformer", "CrossBlock"]


@attrs.define
class PartiConfig(TokenModelConfig):
    """Options of the ``parti`` token model (``d_model``, ``n_head`` and ``mlp_ratio`` are
    the encoder's too)."""

    encoder_layers: int = option(2, "encoder blocks", ge=1)
    n_layer: int = option(3, "decoder blocks", ge=1)
    dropout: float = option(0.0, "dropout in the decoder's attention and residual branches",
                            ge=0, lt=1)


class CrossBlock(nn.Module):
    """``x + self_attn(ln_1 x)`` (causal, cached), ``x + cross_attn(ln_x x, context)``,
    ``x + mlp(ln_2 x)``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln_x = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def cross_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, heads, L, head_dim)`` of the context, computed once."""
        k, v = self.kv(context).chunk(2, dim=-1)
        return tuple(rearrange(t, "b l (h d) -> b h l d", h=self.n_head) for t in (k, v))

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | KVBuffer | None,
                cross: tuple[Tensor, Tensor], key_mask: Tensor
                ) -> tuple[Tensor, tuple[Tensor, Tensor] | KVBuffer]:
        a, kv = self.attn(self.ln_1(x), None, past)
        x = x + a
        q = rearrange(self.q(self.ln_x(x)), "b t (h d) -> b h t d", h=self.n_head)
        y = F.scaled_dot_product_attention(q, *cross, attn_mask=key_mask[:, None, None, :])
        x = x + self.proj(rearrange(y, "b h t d -> b t (h d)"))
        return x + self.mlp(self.ln_2(x)), kv


class PartiTransformer(nn.Module):
    """The ``parti`` token model (see the module docstring)."""

    Config = PartiConfig
    #: the objective calls ``loss``: routed through DDP so gradients are averaged
    gaf_ddp_methods = ("loss",)

    def __init__(self, config: PartiConfig | None = None):
        super().__init__()
        self.config = cfg = config or PartiConfig()
        self.encoder = TextTransformer(TextTransformerConfig(
            tokenizer=cfg.tokenizer, width=cfg.d_model, layers=cfg.encoder_layers,
            heads=cfg.n_head, mlp_mult=cfg.mlp_ratio, max_length=cfg.text_length))
        self.block_config = GPT2Config(
            vocab_size=cfg.codebook, n_positions=cfg.rows * cfg.cols, d_model=cfg.d_model,
            n_layer=cfg.n_layer, n_head=cfg.n_head, mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout, tokenizer="byte")
        self.code_embedding = nn.Embedding(cfg.codebook, cfg.d_model)
        self.bos = nn.Parameter(torch.empty(cfg.d_model))
        self.row_pos = nn.Parameter(torch.empty(cfg.rows, cfg.d_model))
        self.col_pos = nn.Parameter(torch.empty(cfg.cols, cfg.d_model))
        self.blocks = nn.ModuleList(CrossBlock(self.block_config) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.codebook)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) embeddings and decoder weights, residual output projections scaled
        by 1/√(2 n_layer), zero biases (the encoder keeps its own initialisation)."""
        for p in (self.code_embedding.weight, self.bos, self.row_pos, self.col_pos):
            nn.init.normal_(p, std=EMBEDDING_STD)
        for name, p in [*self.blocks.named_parameters(), *self.head.named_parameters()]:
            if p.dim() == 2:
                std = EMBEDDING_STD
                if name.endswith("proj.weight"):  # c_proj of the GPT-2 parts, proj
                    std /= (2 * self.config.n_layer) ** 0.5
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    @property
    def image_tokens(self) -> int:
        return self.config.rows * self.config.cols

    @property
    def device(self) -> torch.device:
        return self.bos.device

    @property
    def tokenizer(self) -> object:
        return self.encoder.tokenizer

    # ---------------------------------------------------------------- text

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        """``(B, L)`` text ids, padded with the tokenizer's pad id (a caption longer
        than L is a BadData)."""
        return self.encoder.tokenize(captions)[0]

    def context(self, text: Tensor, drop: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(states (B, L, d), key_mask (B, L))``: the encoder's states of ``text``,
        the learned null context (attended whole) where ``drop`` is True."""
        mask = text != self.encoder.tokenizer.pad_id
        states = self.encoder.encode_ids(text, mask)
        mask = mask | ~mask.any(dim=1, keepdim=True)  # an empty caption: all positions
        if drop is not None:
            null = self.encoder.null(len(text)).to(states)
            states = torch.where(drop[:, None, None], null, states)
            mask = mask | drop[:, None]
        return states, mask

    def save_assets(self, path: Path) -> None:
        self.encoder.save_assets(path)

    def load_assets(self, path: Path) -> None:
        self.encoder.load_assets(path)

    # ------------------------------------------------------------- decoder

    def _positions(self, start: int, count: int) -> Tensor:
        return grid_positions(self.row_pos, self.col_pos, start, count)

    def _decode(self, h: Tensor, past: list | None, cross: list, mask: Tensor
                ) -> tuple[Tensor, list]:
        cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if past is None else past[i], cross[i], mask)
            cache.append(kv)
        return self.head(self.ln_f(h)), cache

    def forward(self, text: Tensor, codes: Tensor, drop: Tensor | None = None) -> Tensor:
        """Code logits ``(B, N, K)``: position ``k`` predicts code ``k`` from BOS and
        codes ``0 … k-1``."""
        states, mask = self.context(text, drop)
        cross = [block.cross_kv(states) for block in self.blocks]
        B = text.shape[0]
        h = torch.cat([self.bos.expand(B, 1, -1),
                       self.code_embedding(codes[:, :-1]) + self._positions(0, codes.shape[1] - 1)],
                      dim=1)
        return self._decode(h, None, cross, mask)[0]

    def loss(self, text: Tensor, codes: Tensor,
             drop: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Mean cross-entropy of the codes (module docstring)."""
        logits = self.forward(text, codes, drop)
        wide = torch.promote_types(logits.dtype, torch.float32)
        loss = F.cross_entropy(logits.flatten(0, 1).to(wide), codes.flatten())
        return loss, {"loss_image": float(loss.detach())}

    # ------------------------------------------------------------ sampling

    def prefill(self, text: Tensor, drop: Tensor | None = None) -> tuple[Tensor, tuple]:
        """Encode the caption (the null context where ``drop``), project the
        cross-attention keys and values, run BOS; the first code's logits and the cache."""
        states, mask = self.context(text, drop)
        cross = [block.cross_kv(states) for block in self.blocks]
        logits, past = self._decode(self.bos.expand(len(text), 1, -1), None, cross, mask)
        # the self-attention's keys and values go into storage sized for every code
        past = [KVBuffer(k, v, self.image_tokens) for k, v in past]
        return logits[:, -1], (past, cross, mask)

    def step(self, codes: Tensor, index: int, cache: tuple) -> tuple[Tensor, tuple]:
        """Feed code ``codes`` ``(B,)`` of cell ``index``; the next code's logits (the
        cache is extended in place)."""
        past, cross, mask = cache
        h = self.code_embedding(codes)[:, None] + self._positions(index, 1)
        logits, past = self._decode(h, past, cross, mask)
        return logits[:, -1], (past, cross, mask)
