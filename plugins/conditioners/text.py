"""``text-transformer``: a small text encoder trained jointly with the noise model.

The LDM recipe for text-to-image on a new domain (its LAION "BERT" conditioner): a
transformer encoder, trained from scratch together with the diffusion model, whose
per-token states are the cross-attention context. This is that encoder in miniature.

Architecture
------------
A caption that does not start with whitespace gets one leading space (GPT-2's
"prefix space": its first word then becomes the same token as anywhere else, so
``"red circle"`` and ``"a red circle"`` share the token for ``" red"``), is tokenised
(:func:`gaf.plugins.lm.tokenizer.make_tokenizer`) and padded with the tokenizer's
``pad_id`` to ``max_length``. No BOS or EOS is added: the encoder is bidirectional,
so it needs no summary token, every position already sees the whole caption, and
the first word sits at a fixed position. Then::

    h = token_embedding(ids) + position_embedding          (B, L, width)
    for each of `layers` blocks (pre-LayerNorm):
        h = h + Dropout(SelfAttention(LayerNorm(h), mask))
        h = h + Dropout(Linear(GELU(Linear(LayerNorm(h)))))  # width -> mlp_mult*width -> width
    states = LayerNorm(h)                                  (B, L, width)

:class:`SelfAttention` is bidirectional multi-head attention (``heads`` heads of
``head_dim`` channels each, ``head_dim = width // heads`` by default) computed by
:func:`torch.nn.functional.scaled_dot_product_attention` with a key-padding mask:
every position, real or pad, attends to the caption's real tokens only, so what a
caption encodes to does not depend on how much padding follows it, and a row never
sees another row. (An empty caption has no real token; its positions attend to all
``max_length`` positions instead, so it still encodes to finite states.)

The output has states at all ``max_length`` positions, pads included, as Stable
Diffusion's text encoder does; the noise model's cross-attention attends to all of
them (the pad states are functions of the caption, so they carry information too).
The shape is ``(B, tokens, width)`` with ``tokens = max_length``.

Unconditional embedding
-----------------------
``null(batch_size)`` is a learned ``(max_length, width)`` parameter (not the encoding
of any caption), expanded over the batch. It is initialised from ``N(0, 0.02^2)``
like the embeddings: near zero, so at the start the noise model's cross-attention
over the null context sees almost equal keys (uniform attention) and values close to
the projection bias, i.e. the unconditional branch starts out as "no information";
training (condition dropout) then moves it wherever it is useful.

Tokenizer
---------
The default, ``shapes-bpe`` (354 ids), is a byte-level BPE learned from the
``shapes`` dataset's training captions (with the prefix space) until every caption
word is one token (:func:`gaf.plugins.lm.bpe_training.shapes_corpus`). Word-level
tokens let a tiny encoder trained jointly with the noise model learn the captions in
minutes (it does not have to assemble ``circle`` from six bytes first), while any
other text still encodes losslessly through the byte fallback. The longest
``shapes`` caption is 15 tokens (e.g. "middle right: a large cyan diamond to the
right of a large green diamond"; ``:`` is a token of its own), so ``max_length =
24`` leaves room for a longer prompt; a caption longer than ``max_length`` raises
:class:`~gaf.errors.BadData`. ``byte`` or any other
:func:`~gaf.plugins.lm.tokenizer.make_tokenizer` spec also works (with ``byte`` the
longest ``shapes`` caption is 78 tokens: raise ``max_length`` accordingly). A BPE
tokenizer is saved beside the weights by :func:`gaf.save` and restored by
:func:`gaf.load`, so a saved encoder keeps the vocabulary it was trained with.

Default size (``width=64, layers=2, heads=4, mlp_mult=4``, ``shapes-bpe``): 125,824
parameters, of which 22,656 are the token embedding and 1,536 the null states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.errors import BadData
from gaf.plugins.lm.tokenizer import BPETokenizer, make_tokenizer

__all__ = ["TextTransformerConfig", "TextTransformer", "SelfAttention", "EMBEDDING_STD",
           "tokenize_captions"]

#: std of the normal initialisation of the token, position and null embeddings
EMBEDDING_STD = 0.02


@attrs.define
class TextTransformerConfig:
    """Options of the ``text-transformer`` conditioner."""

    tokenizer: str = option("shapes-bpe", "byte, sentiment-bpe, shapes-bpe, or a directory "
                            "with vocab.json and merges.txt")
    width: int = option(64, "state width (must equal the noise model's context_dim)", ge=1)
    layers: int = option(2, "number of transformer blocks", ge=1)
    heads: int = option(4, "number of attention heads", ge=1)
    head_dim: int = option(0, "width of each attention head; 0 means width // heads", ge=0)
    max_length: int = option(24, "tokens per caption (padded to it; longer captions are "
                             "rejected); the longest shapes caption is 15 shapes-bpe tokens",
                             ge=1)
    mlp_mult: int = option(4, "MLP hidden width as a multiple of width", ge=1)
    dropout: float = option(0.0, "dropout on attention weights and residual branches",
                            ge=0, lt=1)

    def __attrs_post_init__(self) -> None:
        # each option's own range is declared above; these rules a bound cannot say
        if not self.tokenizer:
            raise option_error("tokenizer", "must be a non-empty name or path", self.tokenizer)
        if self.head_dim == 0 and self.width % self.heads:
            raise option_error("heads", f"must divide width ({self.width}) when head_dim is "
                                        f"0; or set head_dim", self.heads)

    @property
    def resolved_head_dim(self) -> int:
        """``head_dim``, or ``width // heads`` when it is 0."""
        return self.head_dim or self.width // self.heads


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with a key-padding mask.

    ``forward(x (B, L, width), mask (B, L) bool, True = real token) -> (B, L, width)``:
    each query attends to the keys whose ``mask`` is True (softmax over those only),
    through ``heads`` heads of ``head_dim`` channels; ``qkv`` and ``proj`` are the
    input and output projections (``width -> 3 * heads * head_dim -> width``).
    """

    def __init__(self, width: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.proj(self.attend(self.qkv(x), mask))

    def attend(self, qkv: Tensor, mask: Tensor) -> Tensor:
        """The attention between the projections: ``qkv`` ``(B, L, 3 * heads * head_dim)``
        (the output of ``self.qkv``) and ``mask`` ``(B, L)`` to the heads' outputs
        ``(B, L, heads * head_dim)``, before ``proj``."""
        b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)


class Block(nn.Module):
    """One pre-LayerNorm transformer block: attention, then a GELU MLP."""

    def __init__(self, cfg: TextTransformerConfig):
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w)
        self.attn = SelfAttention(w, cfg.heads, cfg.resolved_head_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(w)
        self.mlp = nn.Sequential(nn.Linear(w, cfg.mlp_mult * w), nn.GELU(),
                                 nn.Linear(cfg.mlp_mult * w, w))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        h = h + self.drop(self.attn(self.norm1(h), mask))
        return h + self.drop(self.mlp(self.norm2(h)))

    def forward_real(self, h: Tensor, where: Tensor, mask: Tensor) -> Tensor:
        """:meth:`forward` on the real tokens only: ``h`` ``(N, width)`` holds the states
        of the ``N`` positions ``where`` (indices into the flattened ``(B, L)`` grid,
        ``mask.flatten()`` True there) and the result is their new states, the rows of
        ``forward`` at those positions. Only attention sees the grid (the other
        positions' projections are zeros, and ``mask`` keeps them out of every real
        token's keys); every other layer works on the ``N`` rows alone."""
        b, n = mask.shape
        qkv = self.attn.qkv(self.norm1(h))
        grid = qkv.new_zeros(b * n, qkv.shape[-1]).index_copy(0, where, qkv)
        out = self.attn.attend(grid.view(b, n, -1), mask).view(b * n, -1)
        h = h + self.drop(self.attn.proj(out.index_select(0, where)))
        return h + self.drop(self.mlp(self.norm2(h)))


def tokenize_captions(tokenizer: Any, captions: Sequence[str], limit: int, *, who: str,
                      option: str = "max_length", owner: str = "the conditioner's",
                      device: Any = None) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``, both ``(B, limit)``: each caption with a prefix space (see the
    module docstring), tokenised and padded with ``tokenizer.pad_id``; ``mask`` is True
    at the real tokens. A caption that is not a string, or longer than ``limit``
    tokens, is a :class:`~gaf.errors.BadData` naming ``who`` and the ``option`` (of
    ``owner``) to raise; a single string instead of a list is one too."""
    if isinstance(captions, (str, bytes)):
        raise BadData(f"{who}: expected a sequence of captions, got a single string "
                      f"{_shorten(str(captions))!r}; pass [caption]")
    pad = tokenizer.pad_id
    rows, lengths = [], []
    for caption in captions:
        if not isinstance(caption, str):
            raise BadData(f"{who}: a caption must be a string, got "
                          f"{type(caption).__name__} {_shorten(repr(caption))}")
        text = caption if not caption or caption[0].isspace() else " " + caption
        ids = tokenizer.encode(text)
        if len(ids) > limit:
            raise BadData(f"{who}: caption {_shorten(caption)!r} is {len(ids)} tokens long, "
                          f"more than {option}={limit}; raise {owner} {option} option")
        rows.append(ids + [pad] * (limit - len(ids)))
        lengths.append(len(ids))
    ids = torch.tensor(rows, dtype=torch.long).view(len(rows), limit).to(device)
    mask = torch.arange(limit, device=ids.device) < torch.tensor(
        lengths, dtype=torch.long, device=ids.device).view(-1, 1)
    return ids, mask


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


class TextTransformer(nn.Module):
    """Caption → ``(B, max_length, width)`` token states (see the module docstring).

    ``__call__(captions)`` encodes a sequence of strings; ``null(batch_size)`` is the
    learned unconditional context. ``tokenize`` and ``encode_ids`` are the two halves
    of ``__call__`` (ids and mask, then states).
    """

    Config = TextTransformerConfig
    condition_key = "caption"
    trainable = True

    def __init__(self, config: TextTransformerConfig | None = None):
        super().__init__()
        cfg = config if config is not None else TextTransformerConfig()
        self.config = cfg
        self.tokenizer = make_tokenizer(cfg.tokenizer)
        self.tokens = cfg.max_length
        self.width = cfg.width
        self.token_embedding = nn.Embedding(self.tokenizer.vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.empty(cfg.max_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.null_states = nn.Parameter(torch.empty(cfg.max_length, cfg.width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embeddings and null states ~ N(0, 0.02^2); Linear layers keep PyTorch's init,
        except the residual output projections, scaled down by ``1/sqrt(2 * layers)``
        (GPT-2's rule) so the residual stream's variance does not grow with depth."""
        for p in (self.token_embedding.weight, self.position_embedding, self.null_states):
            nn.init.normal_(p, std=EMBEDDING_STD)
        scale = 1.0 / math.sqrt(2 * self.config.layers)
        with torch.no_grad():
            for block in self.blocks:
                block.attn.proj.weight.mul_(scale)
                block.mlp[2].weight.mul_(scale)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids, mask)``, both ``(B, max_length)`` on the module's device: the token ids
        of each caption (with a prefix space) padded with ``pad_id``, and True at the
        real (non-pad) positions (:func:`tokenize_captions`).

        Raises :class:`BadData` for a caption that is not a string or is longer than
        ``max_length`` tokens."""
        return tokenize_captions(self.tokenizer, captions, self.config.max_length,
                                 who="text-transformer", device=self.position_embedding.device)

    def encode_ids(self, ids: Tensor, mask: Tensor) -> Tensor:
        """States ``(B, max_length, width)`` of padded ``ids`` with ``mask`` (True = real
        token; pads are never attended to, except in a row with no real token)."""
        mask = mask | ~mask.any(dim=1, keepdim=True)  # an empty caption attends to its pads
        h = self.token_embedding(ids) + self.position_embedding[:ids.shape[1]]
        for block in self.blocks:
            h = block(h, mask)
        return self.norm(h)

    def mean_state(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``(B, width)``: the mean of :meth:`encode_ids`'s states over each caption's
        real tokens (zeros for a caption with none), computed on the real tokens only.

        No real token attends to a pad, so the real tokens' states do not depend on the
        pads' and the pads' states need never be computed: the grid is cut after the
        last real position, and every layer but attention runs on the real tokens'
        rows alone (:meth:`Block.forward_real`). The same result as
        ``masked_mean(encode_ids(ids, mask))`` (tested in float64), for a fraction of
        its work when captions are shorter than ``max_length``: what CLIP's text
        features need, where the pads' states are never read."""
        b = ids.shape[0]
        real = mask.any(dim=0).nonzero()
        if b == 0 or len(real) == 0:  # no real token anywhere: every mean is zero
            return self.position_embedding.new_zeros(b, self.width)
        n = int(real[-1]) + 1  # positions after the last real token are pads in every row
        ids, mask = ids[:, :n], mask[:, :n]
        flat = mask.reshape(-1)
        where = flat.nonzero().squeeze(1)
        h = (self.token_embedding(ids.reshape(-1).index_select(0, where))
             + self.position_embedding[:n].repeat(b, 1).index_select(0, where))
        attend = mask | ~mask.any(dim=1, keepdim=True)  # an empty row's grid stays finite
        for block in self.blocks:
            h = block.forward_real(h, where, attend)
        h = self.norm(h)
        rows = torch.div(where, n, rounding_mode="floor")
        total = h.new_zeros(b, self.width).index_add(0, rows, h)
        return total / mask.sum(dim=1, keepdim=True).clamp_min(1).to(h.dtype)

    # ------------------------------------------------------------------ files

    def save_assets(self, path: Path) -> None:
        """Called by :func:`gaf.save`: a BPE tokenizer is saved beside the weights
        (``vocab.json`` + ``merges.txt``), so the saved embedding rows keep their
        meaning even if the named tokenizer changes later; ``byte`` needs no files."""
        if isinstance(self.tokenizer, BPETokenizer):
            self.tokenizer.save_files(path)

    def load_assets(self, path: Path) -> None:
        """Called by :func:`gaf.load`: installs the BPE tokenizer saved beside the weights."""
        vocab, merges = Path(path) / "vocab.json", Path(path) / "merges.txt"
        if vocab.is_file() and merges.is_file():
            self.tokenizer = BPETokenizer.from_files(vocab, merges)

    # ------------------------------------------------------------------ Conditioner

    def forward(self, conditions: Sequence[str]) -> Tensor:
        """``(B, max_length, width)`` states of ``B`` captions."""
        ids, mask = self.tokenize(conditions)
        if ids.shape[0] == 0:
            return self.null_states.new_zeros(0, self.tokens, self.width)
        return self.encode_ids(ids, mask)

    def null(self, batch_size: int) -> Tensor:
        """The learned unconditional context, ``(batch_size, max_length, width)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise BadData(f"text-transformer: null() needs a batch size >= 0, got "
                          f"{batch_size!r}")
        return self.null_states.unsqueeze(0).expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        return f"tokenizer={self.config.tokenizer!r}, tokens={self.tokens}"
