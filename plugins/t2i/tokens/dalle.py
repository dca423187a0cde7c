"""``dalle``: one decoder-only transformer over ``[text tokens; image-BOS; image tokens]``
(Ramesh et al. 2021, DALL-E), built from the project's GPT-2 blocks.

Vocabulary
----------
One embedding table holds every token, in four ranges (:class:`Layout`)::

    [0, V_t)                      text tokens (the tokenizer's, shapes-bpe by default)
    [V_t, V_t + L)                L pad tokens, one per text position (DALL-E's "each
                                  text position has its own pad token")
    V_t + L                       the image-BOS token
    [V_t + L + 1, V_t + L + 1 + K)  the K image codes of the VQGAN codebook

A caption is tokenised with a prefix space (:func:`~gaf.plugins.conditioners.text.
tokenize_captions`) and padded to ``L = text_length`` with the pad token *of each
position*; the null caption of classifier-free guidance is all pads.

Sequence and positions
----------------------
The model reads ``[t_1 … t_L, BOS, c_1 … c_{N-1}]`` (``N = rows × cols`` image codes,
row-major) and predicts the next token at every position. Text position ``i`` adds a
learned text position embedding; BOS adds a learned vector of its own; image code
``c_k`` at grid cell ``(r, q)`` adds a row embedding ``row[r]`` and a column embedding
``col[q]`` (separate text and image positions, as in DALL-E). Attention is causal over
the whole sequence (GPT-2 blocks, pre-LayerNorm, a final LayerNorm, the output layer
tied to the embedding table).

Loss
----
``(L_text + 7 · L_img) / 8`` (DALL-E's weights): ``L_text`` the mean cross-entropy of
the next text-or-pad token at positions ``1 … L-1`` (over the text and pad logits),
``L_img`` the mean cross-entropy of ``c_1 … c_N`` predicted from ``BOS, c_1 …
c_{N-1}`` (over the code logits only). The other ranges never enter a softmax, so
the sampler cannot draw a non-image token.

Cached sampling
---------------
:meth:`DalleTransformer.prefill` runs the text and BOS once and returns the logits of
``c_1`` with the key/value cache; :meth:`DalleTransformer.step` feeds one code and
returns the next code's logits, extending the cache. :mod:`.sampling` runs guidance
over both (a test holds the cached logits equal to a full recomputation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option
from gaf.plugins.conditioners.text import EMBEDDING_STD, tokenize_captions
from gaf.plugins.lm.gpt2 import Block, GPT2Config, KVBuffer, KVCache, init_block_weights_
from gaf.plugins.lm.tokenizer import BPETokenizer, make_tokenizer

__all__ = ["DalleConfig", "DalleTransformer", "Layout", "IMAGE_WEIGHT", "grid_positions",
           "TokenModelConfig"]

#: DALL-E's weight of the image tokens' loss: (L_text + 7 L_img) / 8
IMAGE_WEIGHT = 7 / 8


def grid_positions(row_pos: Tensor, col_pos: Tensor, start: int, count: int) -> Tensor:
    """Row + column embeddings ``(count, d)`` of image cells ``start … start+count-1``
    (0-based, row-major over ``len(row_pos) × len(col_pos)``): the image positions of
    both token models."""
    k = torch.arange(start, start + count, device=row_pos.device)
    return row_pos[k // len(col_pos)] + col_pos[k % len(col_pos)]


@attrs.define
class TokenModelConfig:
    """The options every token model shares (``dalle``, ``parti``): the captions it
    reads, the code grid it writes (which the objective checks against the first
    stage) and its width."""

    tokenizer: str = option("shapes-bpe", "text tokenizer: byte, sentiment-bpe, shapes-bpe "
                                          "or a directory with vocab.json and merges.txt")
    text_length: int = option(24, "text tokens L (captions padded to it)", ge=1)
    codebook: int = option(256, "image codes K: the VQGAN's codebook size", ge=2)
    rows: int = option(8, "image token rows (image size / VQGAN factor)", ge=1)
    cols: int = option(8, "image token columns", ge=1)
    d_model: int = option(128, "width of the residual stream", ge=1)
    n_head: int = option(4, "attention heads (must divide d_model)", ge=1)
    mlp_ratio: int = option(4, "MLP width as a multiple of d_model", ge=1)


@attrs.define
class DalleConfig(TokenModelConfig):
    """Options of the ``dalle`` token model."""

    n_layer: int = option(4, "transformer blocks", ge=1)
    dropout: float = option(0.0, "dropout on embeddings, attention and residual branches",
                            ge=0, lt=1)


@attrs.frozen
class Layout:
    """Where each kind of token lives in the shared vocabulary (module docstring)."""

    text_vocab: int
    text_length: int
    codebook: int

    @property
    def pad0(self) -> int:
        return self.text_vocab

    @property
    def bos(self) -> int:
        return self.text_vocab + self.text_length

    @property
    def code0(self) -> int:
        return self.bos + 1

    @property
    def size(self) -> int:
        return self.code0 + self.codebook

    @property
    def text_slice(self) -> slice:
        """Text and pad tokens: what a text position may be followed by."""
        return slice(0, self.bos)

    @property
    def code_slice(self) -> slice:
        return slice(self.code0, self.size)


class DalleTransformer(nn.Module):
    """The ``dalle`` token model (see the module docstring)."""

    Config = DalleConfig
    #: the objective calls ``loss``: routed through DDP so gradients are averaged
    gaf_ddp_methods = ("loss",)

    def __init__(self, config: DalleConfig | None = None):
        super().__init__()
        self.config = cfg = config or DalleConfig()
        self.tokenizer = make_tokenizer(cfg.tokenizer)
        self.layout = Layout(self.tokenizer.vocab_size, cfg.text_length, cfg.codebook)
        n = cfg.rows * cfg.cols
        self.block_config = GPT2Config(
            vocab_size=self.layout.size, n_positions=cfg.text_length + n, d_model=cfg.d_model,
            n_layer=cfg.n_layer, n_head=cfg.n_head, mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout, tokenizer="byte")
        self.wte = nn.Embedding(self.layout.size, cfg.d_model)
        self.text_pos = nn.Parameter(torch.empty(cfg.text_length, cfg.d_model))
        self.bos_pos = nn.Parameter(torch.empty(cfg.d_model))
        self.row_pos = nn.Parameter(torch.empty(cfg.rows, cfg.d_model))
        self.col_pos = nn.Parameter(torch.empty(cfg.cols, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(self.block_config) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) embeddings and weights, residual output
        projections scaled by 1/√(2 n_layer)."""
        for p in (self.wte.weight, self.text_pos, self.bos_pos, self.row_pos, self.col_pos):
            nn.init.normal_(p, std=EMBEDDING_STD)
        init_block_weights_(self.blocks, self.config.n_layer, EMBEDDING_STD)

    @property
    def image_tokens(self) -> int:
        return self.config.rows * self.config.cols

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    # ---------------------------------------------------------------- text

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        """``(B, L)`` text ids: each caption's tokens, then the pad token of each
        remaining position (a caption longer than L is a BadData)."""
        ids, mask = tokenize_captions(self.tokenizer, captions, self.config.text_length,
                                      who="dalle", option="text_length",
                                      owner="the token model's", device=self.device)
        return torch.where(mask, ids, self.pads(len(ids)))

    def pads(self, batch: int) -> Tensor:
        """``(batch, L)``: the null caption, each position's own pad token."""
        row = torch.arange(self.layout.pad0, self.layout.pad0 + self.config.text_length,
                           device=self.device)
        return row.expand(batch, -1)

    def save_assets(self, path: Path) -> None:
        """A BPE tokenizer is saved beside the weights (:func:`gaf.save`)."""
        if isinstance(self.tokenizer, BPETokenizer):
            self.tokenizer.save_files(path)

    def load_assets(self, path: Path) -> None:
        vocab, merges = Path(path) / "vocab.json", Path(path) / "merges.txt"
        if vocab.is_file() and merges.is_file():
            self.tokenizer = BPETokenizer.from_files(vocab, merges)

    # ------------------------------------------------------------- forward

    def _image_positions(self, start: int, count: int) -> Tensor:
        return grid_positions(self.row_pos, self.col_pos, start, count)

    def embed(self, text: Tensor, codes: Tensor | None) -> Tensor:
        """Input states of ``[text, BOS, codes]`` (``codes``: ``(B, n)`` code indices in
        ``[0, K)`` of the first ``n`` image cells, or ``None``)."""
        B = text.shape[0]
        bos = torch.full((B, 1), self.layout.bos, dtype=torch.long, device=text.device)
        parts = [self.wte(text) + self.text_pos, self.wte(bos) + self.bos_pos]
        if codes is not None and codes.shape[1]:
            parts.append(self.wte(codes + self.layout.code0)
                         + self._image_positions(0, codes.shape[1]))
        return self.drop(torch.cat(parts, dim=1))

    def _run(self, h: Tensor, past: KVCache | None) -> tuple[Tensor, KVCache]:
        cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None, None if past is None else past[i])
            cache.append(kv)
        return self.ln_f(h), tuple(cache)

    def logits(self, hidden: Tensor) -> Tensor:
        """Logits over the whole vocabulary (the output layer is the embedding table)."""
        return F.linear(hidden, self.wte.weight)

    def with_null(self, text: Tensor, drop: Tensor | None) -> Tensor:
        """``text`` with the rows where ``drop`` is True replaced by the null caption."""
        if drop is None:
            return text
        return torch.where(drop[:, None], self.pads(len(text)), text)

    def forward(self, text: Tensor, codes: Tensor) -> Tensor:
        """Hidden states ``(B, L + N, d)`` of ``[text, BOS, codes[:, :-1]]``: position
        ``L + k`` (BOS, then the codes) predicts code ``k`` (0-based), position
        ``i < L - 1`` the text token ``i + 1``."""
        return self._run(self.embed(text, codes[:, :-1]), None)[0]

    def loss(self, text: Tensor, codes: Tensor,
             drop: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """``(L_text + 7 L_img) / 8`` (module docstring); ``codes`` ``(B, N)``; the rows
        where ``drop`` is True read the null caption (classifier-free guidance)."""
        L, lay = self.config.text_length, self.layout
        text = self.with_null(text, drop)
        hidden = self.forward(text, codes)
        wide = torch.promote_types(hidden.dtype, torch.float32)  # bf16 logits: CE in fp32
        img_logits = self.logits(hidden[:, L:])[..., lay.code_slice]
        loss_img = F.cross_entropy(img_logits.flatten(0, 1).to(wide), codes.flatten())
        if L > 1:
            txt_logits = self.logits(hidden[:, :L - 1])[..., lay.text_slice]
            loss_txt = F.cross_entropy(txt_logits.flatten(0, 1).to(wide), text[:, 1:].flatten())
        else:
            loss_txt = hidden.new_zeros(())
        loss = (1 - IMAGE_WEIGHT) * loss_txt + IMAGE_WEIGHT * loss_img
        return loss, {"loss_text": float(loss_txt.detach()), "loss_image": float(loss_img.detach())}

    # ------------------------------------------------------------ sampling

    def prefill(self, text: Tensor, drop: Tensor | None = None) -> tuple[Tensor, KVCache]:
        """Run ``[text, BOS]`` (the null caption where ``drop``); return the code logits
        ``(B, K)`` of the first image cell and the cache."""
        hidden, cache = self._run(self.embed(self.with_null(text, drop), None), None)
        # every later position's keys and values are written into storage sized for the
        # whole sequence (the GPT-2 attention would otherwise copy the past at each step)
        capacity = self.config.text_length + self.image_tokens
        return self.code_logits(hidden[:, -1]), tuple(KVBuffer(k, v, capacity)
                                                      for k, v in cache)

    def step(self, codes: Tensor, index: int, cache: KVCache) -> tuple[Tensor, KVCache]:
        """Feed code ``codes`` ``(B,)`` of image cell ``index`` (0-based); return the
        code logits of cell ``index + 1`` and the cache (extended in place)."""
        h = self.wte(codes + self.layout.code0)[:, None] + self._image_positions(index, 1)
        hidden, cache = self._run(self.drop(h), cache)
        return self.code_logits(hidden[:, -1]), cache

    def code_logits(self, hidden: Tensor) -> Tensor:
        """The image codes' logits only (the rows of the output layer that sampling can
        draw): ``logits(hidden)[..., code_slice]`` without the other rows' products."""
        return F.linear(hidden, self.wte.weight[self.layout.code_slice])

