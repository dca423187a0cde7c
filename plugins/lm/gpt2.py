"""GPT-2 as a gaf :class:`~gaf.interfaces.Policy`, in plain torch + einops.

Architecture (as Hugging Face ``GPT2LMHeadModel``): learned token and position
embeddings, ``n_layer`` pre-LayerNorm blocks (causal self-attention, then a GELU-tanh
MLP of width ``mlp_ratio * d_model``), a final LayerNorm, and an output layer tied to
the token embedding (``logits = h @ wte.weight.T``; there is no separate
``lm_head`` parameter, so the state dict holds no shared tensors).

Parameter names and layouts match HF's state dict under ``transformer.``:
``transformer.wte.weight``, ``transformer.wpe.weight``,
``transformer.h.{i}.ln_1.{weight,bias}``, ``transformer.h.{i}.attn.c_attn.{weight,bias}``,
``attn.c_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, ``transformer.ln_f``. Linear
layers use HF's ``Conv1D`` layout: weight ``(in, out)``, ``y = x @ W + b``.

Initialisation follows GPT-2: weights and embeddings ~ N(0, 0.02), biases 0,
LayerNorms (1, 0), and every ``c_proj`` weight ~ N(0, 0.02 / sqrt(2 * n_layer)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.errors import BadConfig
from gaf.interfaces import CompletionLogProbs, Rollout, Sampler, Tokenizer

from .batching import LMBatch, batch_from_ids, build_batch, prompt_ids
from .generation import generate_ids
from .tokenizer import BPETokenizer, make_tokenizer

__all__ = ["GPT2Config", "GPT2Policy", "KVCache", "KVBuffer"]

#: One ``(key, value)`` pair per layer, each ``(B, n_head, S, head_dim)``.
KVCache = tuple[tuple[Tensor, Tensor], ...]


class KVBuffer:
    """One attention layer's keys and values in storage preallocated for ``capacity``
    positions: :meth:`extend` writes the new positions in place and returns views of
    every position so far, where a ``(key, value)`` pair is concatenated (the whole past
    copied) at every step. :class:`Attention` takes either as ``past``; a buffer is
    updated in place, so an earlier state of it cannot be reused."""

    def __init__(self, key: Tensor, value: Tensor, capacity: int):
        b, h, t, d = key.shape
        if capacity < t:
            raise ValueError(f"KVBuffer: capacity {capacity} below the {t} positions given")
        self.key = key.new_empty(b, h, capacity, d)
        self.value = value.new_empty(b, h, capacity, d)
        self.key[:, :, :t], self.value[:, :, :t] = key, value
        self.length = t

    def extend(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``(B, n_head, T, head_dim)`` keys and values; all positions' views."""
        end = self.length + key.shape[2]
        if end > self.key.shape[2]:
            raise ValueError(f"KVBuffer: {end} positions exceed its capacity "
                             f"{self.key.shape[2]}")
        self.key[:, :, self.length:end], self.value[:, :, self.length:end] = key, value
        self.length = end
        return self.key[:, :, :end], self.value[:, :, :end]


@attrs.define
class GPT2Config:
    """Shape of a GPT-2 model (embeddings are always tied to the output layer)."""

    vocab_size: int = option(0, "number of token ids; 0 = the tokenizer's (259 for byte)", ge=0)
    n_positions: int = option(256, "longest sequence, in tokens (learned positions)", ge=1)
    d_model: int = option(128, "width of the residual stream", ge=1)
    n_layer: int = option(4, "number of transformer blocks", ge=1)
    n_head: int = option(4, "attention heads per block (must divide d_model)", ge=1)
    mlp_ratio: int = option(4, "MLP hidden width as a multiple of d_model", ge=1)
    dropout: float = option(0.0, "dropout on embeddings, attention weights and residual branches",
                            ge=0, lt=1)
    layer_norm_eps: float = option(1e-5, "LayerNorm epsilon", gt=0)
    tokenizer: str = option("byte", "byte, sentiment-bpe, or a directory with vocab.json "
                            "and merges.txt")

    def __attrs_post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise option_error("n_head", f"must divide d_model ({self.d_model})", self.n_head)


# ------------------------------------------------------------------------- layers


class Conv1D(nn.Module):
    """HF's "Conv1D": a linear layer with weight stored ``(in, out)``; ``y = x @ W + b``."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.t(), self.bias)


class Attention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head, self.d_model = cfg.n_head, cfg.d_model
        self.c_attn = Conv1D(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = Conv1D(cfg.d_model, cfg.d_model)
        # an nn.Dropout so that every dropout of the model is a module (setting its
        # ``p`` to 0 switches it off, as alignment objectives do); SDPA applies it
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor | None,
                past: tuple[Tensor, Tensor] | KVBuffer | None
                ) -> tuple[Tensor, tuple[Tensor, Tensor] | KVBuffer]:
        """``past``: the earlier positions' keys and values, a pair (returned extended,
        a new pair) or a :class:`KVBuffer` (extended in place and returned)."""
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=self.n_head)
                   for t in self.c_attn(x).split(self.d_model, dim=-1))
        cache: tuple[Tensor, Tensor] | KVBuffer
        if isinstance(past, KVBuffer):
            k, v = past.extend(k, v)
            cache = past
        else:
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            cache = (k, v)
        p = self.attn_dropout.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                           is_causal=mask is None and past is None)
        y = self.resid_dropout(self.c_proj(rearrange(y, "b h t d -> b t (h d)")))
        return y, cache


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.c_proj = Conv1D(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, mask: Tensor | None,
                past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln_1(x), mask, past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


class Transformer(nn.Module):
    """The ``transformer.`` submodule: embeddings, blocks and the final LayerNorm."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)


def init_block_weights_(blocks: nn.Module, n_layer: int, std: float = 0.02) -> None:
    """GPT-2's initialisation of transformer ``blocks`` (in parameter order): every
    matrix N(0, ``std``), the residual output projections (``c_proj``) N(0, ``std`` /
    √(2 ``n_layer``)), biases zero; LayerNorms keep their ones and zeros."""
    for name, p in blocks.named_parameters():
        if name.endswith("weight") and p.dim() == 2:
            scale = std / (2 * n_layer) ** 0.5 if name.endswith("c_proj.weight") else std
            nn.init.normal_(p, std=scale)
        elif name.endswith("bias") and "ln_" not in name:
            nn.init.zeros_(p)


def attention_mask_4d(attention_mask: Tensor | None, batch: int, n_query: int, past_len: int,
                      device: torch.device) -> Tensor:
    """``(B, 1, T, past_len + T)`` bool mask: query ``i`` (absolute ``past_len + i``)
    sees key ``j`` when ``j <= past_len + i`` and ``attention_mask[:, j]`` is True.

    A query always sees itself, so padded queries have one finite score and produce
    finite (ignored) outputs instead of NaN.
    """
    S = past_len + n_query
    q = torch.arange(past_len, S, device=device).unsqueeze(1)
    k = torch.arange(S, device=device).unsqueeze(0)
    allowed = (k <= q).unsqueeze(0)
    if attention_mask is not None:
        allowed = (allowed & attention_mask.bool()[:, None, :]) | (k == q).unsqueeze(0)
    return allowed.expand(batch, n_query, S).unsqueeze(1)


# ------------------------------------------------------------------------- policy


class GPT2Policy(nn.Module):
    """A GPT-2 language model implementing :class:`gaf.interfaces.Policy`.

    Build it as ``GPT2Policy(GPT2Config(...))``. The tokenizer is the one
    ``config.tokenizer`` names (:func:`~gaf.plugins.lm.tokenizer.make_tokenizer`)
    unless ``tokenizer`` is given (the HF loader passes the checkpoint's); its ids must
    be below ``config.vocab_size``, and ``vocab_size = 0`` is replaced by the
    tokenizer's size.
    """

    Config = GPT2Config

    def __init__(self, config: GPT2Config | None = None, tokenizer: Tokenizer | None = None):
        super().__init__()
        config = config if config is not None else GPT2Config()
        self.tokenizer: Tokenizer = (tokenizer if tokenizer is not None
                                     else make_tokenizer(config.tokenizer))
        if config.vocab_size == 0:
            config = attrs.evolve(config, vocab_size=self.tokenizer.vocab_size)
        self.config = config
        if self.config.vocab_size < self.tokenizer.vocab_size:
            raise BadConfig(f"gpt2: vocab_size {self.config.vocab_size} is smaller than the "
                            f"tokenizer's {self.tokenizer.vocab_size}")
        self.transformer = Transformer(self.config)
        self.reset_parameters()

    # ------------------------------------------------------------- saved assets

    def save_assets(self, path: Path) -> None:
        """Called by :func:`gaf.save`: a BPE tokenizer is saved beside the weights
        (``vocab.json`` + ``merges.txt``); the byte tokenizer needs no files."""
        if isinstance(self.tokenizer, BPETokenizer):
            self.tokenizer.save_files(path)

    def load_assets(self, path: Path) -> None:
        """Called by :func:`gaf.load`: installs the BPE tokenizer saved beside the weights."""
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if vocab.is_file() and merges.is_file():
            self.tokenizer = BPETokenizer.from_files(vocab, merges)

    # ------------------------------------------------------------------ model

    def reset_parameters(self) -> None:
        """GPT-2 initialisation (see the module docstring)."""
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (Conv1D, nn.Embedding)):
                std = proj_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if isinstance(module, Conv1D):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def context_length(self) -> int:
        """Longest scored sequence, in tokens (``config.n_positions``)."""
        return self.config.n_positions

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: KVCache | None = None,
                use_cache: bool = False,
                mask_4d: Tensor | None = None) -> Tensor | tuple[Tensor, KVCache]:
        """Final hidden states ``(B, T, d_model)`` (after ``ln_f``); with ``use_cache``
        also the new :data:`KVCache`.

        ``attention_mask`` is ``(B, past + T)`` bool over the cached and new tokens
        (False = padding); ``position_ids`` ``(B, T)`` default to ``past + arange(T)``.
        ``mask_4d`` ``(B, 1, T, past + T)`` bool (True = attend) replaces the
        mask built from ``attention_mask`` and causality (e.g. the block mask of a
        packed batch); every query must see at least one key.
        Without a mask or cache, attention uses SDPA's built-in causal mask.
        """
        B, T = input_ids.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if position_ids is None:
            if past_len + T > self.config.n_positions:
                raise ValueError(f"sequence of {past_len + T} tokens exceeds n_positions="
                                 f"{self.config.n_positions}")
            position_ids = torch.arange(past_len, past_len + T, device=input_ids.device)
            position_ids = position_ids.unsqueeze(0)
        tr = self.transformer
        x = tr.drop(tr.wte(input_ids) + tr.wpe(position_ids))
        mask = mask_4d
        if mask is None and (attention_mask is not None or (past_len and T > 1)):
            mask = attention_mask_4d(attention_mask, B, T, past_len, input_ids.device)
        cache = []
        for i, block in enumerate(tr.h):
            x, kv = block(x, mask, None if past_key_values is None else past_key_values[i])
            cache.append(kv)
        x = tr.ln_f(x)
        return (x, tuple(cache)) if use_cache else x

    def logits(self, hidden: Tensor) -> Tensor:
        """The tied output layer: ``hidden @ wte.weight.T`` (any leading shape)."""
        return F.linear(hidden, self.transformer.wte.weight)

    # ----------------------------------------------------------------- policy API

    def prepare(self, prompts: Sequence[str], completions: Sequence[str]) -> LMBatch:
        """Tokenise pairs into an :class:`~gaf.plugins.lm.batching.LMBatch` on this
        model's device. Layout, target alignment and truncation are documented in
        :mod:`gaf.plugins.lm.batching`: ``completion_mask[:, t]`` marks outputs whose
        target ``input_ids[:, t + 1]`` is a completion token or the final EOS.

        Consecutive pairs with the same prompt share one packed row (the prompt runs
        once) when that is estimated cheaper; results are the same either way."""
        cfg = self.config
        # one (query, key) pair costs 2 * d MACs (scores and values); a token's dense
        # layers (qkv, projection, MLP) (4 + 2 * mlp_ratio) * d^2
        key_cost = 2 / ((4 + 2 * cfg.mlp_ratio) * cfg.d_model)
        return build_batch(self.tokenizer, prompts, completions, cfg.n_positions,
                           self.device, key_cost=key_cost)

    def completion_logprobs(self, batch: LMBatch, *, temperature: float = 1.0,
                            entropy: bool = False) -> CompletionLogProbs:
        """Per-token ``log π(y_t | x, y_<t)`` of each completion, packed to the left.

        Runs the transformer over the whole (right-padded, so plain causal) batch,
        then gathers the hidden states at completion positions only and applies the
        output layer there: ``logit[target] - logsumexp(logits)`` in at least float32.
        Returns ``(B, L)`` tensors, ``L`` the longest completion in the batch.

        ``temperature`` scores under ``softmax(logits / temperature)``, the
        distribution a temperature sampler draws from (on-policy objectives that
        sample at ``T ≠ 1`` score their samples this way, as TRL does). ``entropy``
        also returns the detached per-token entropy of that distribution
        (``CompletionLogProbs.entropy``), a metric.

        A batch with packed shared prompts (:mod:`gaf.plugins.lm.batching`) runs with
        its position ids and block mask and scores its listed outputs; the rows of
        the result are the pairs in their original order, as unpacked.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if batch.packed:
            hidden = self(batch.input_ids, position_ids=batch.position_ids,
                          mask_4d=batch.attention_mask_4d)
            B = batch.n_pairs
            rows, slots = batch.score_pair, batch.score_slot
            L = int(slots.max()) + 1 if slots.numel() else 0
            states = hidden.flatten(0, 1)[batch.score_index]
            targets = batch.score_target
        else:
            hidden = self(batch.input_ids)
            cmask = batch.completion_mask
            B = cmask.shape[0]
            rows, cols = cmask.nonzero(as_tuple=True)
            slots = cmask.long().cumsum(1)[rows, cols] - 1
            L = int(cmask.sum(1).max()) if B else 0
            states = hidden[rows, cols]
            targets = batch.target_ids[rows, cols]
        logits = self.logits(states)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if temperature != 1.0:
            logits = logits / temperature
        norm = logits.logsumexp(-1)
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - norm
        token_logps = logp.new_zeros(B, L).index_put((rows, slots), logp)
        mask = torch.zeros(B, L, dtype=torch.bool, device=logp.device)
        mask[rows, slots] = True
        ent = None
        if entropy:
            with torch.no_grad():  # H = logsumexp(z) − Σ softmax(z)·z
                h = norm - (torch.softmax(logits, -1) * logits).sum(-1)
                ent = h.new_zeros(B, L).index_put((rows, slots), h)
        return CompletionLogProbs(token_logps=token_logps, mask=mask, entropy=ent)

    def banned_ids(self) -> Tensor:
        """``(vocab_size,)`` bool: ids generation never samples — BOS and PAD (unless
        they equal EOS) and ids beyond the tokenizer's vocabulary."""
        tok = self.tokenizer
        banned = torch.zeros(self.config.vocab_size, dtype=torch.bool)
        banned[tok.vocab_size:] = True
        for i in (tok.bos_id, tok.pad_id):
            if i != tok.eos_id:
                banned[i] = True
        return banned

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], *, sampler: Sampler,
                     max_new_tokens: int = 64,
                     generator: torch.Generator | None = None) -> list[list[int]]:
        """New ids for already-tokenised prompts (include BOS yourself); see
        :func:`gaf.plugins.lm.generation.generate_ids`. Lists end with EOS when the
        row stopped on it."""
        return generate_ids(self, prompt_ids, sampler=sampler, max_new_tokens=max_new_tokens,
                            eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
                            banned=self.banned_ids(), generator=generator)

    def generate(self, prompts: Sequence[str], *, sampler: Sampler, max_new_tokens: int = 64,
                 generator: torch.Generator | None = None) -> list[str]:
        """One completion per prompt (without the prompt, stopped at EOS).

        Each prompt becomes ``BOS + encode(prompt)``, cut from the left to leave room
        for a new token; prompts are batched with left padding and a KV cache, so
        the result (with a deterministic sampler) equals one prompt at a time.
        """
        ids = [prompt_ids(self.tokenizer, p, self.config.n_positions) for p in prompts]
        new = self.generate_ids(ids, sampler=sampler, max_new_tokens=max_new_tokens,
                                generator=generator)
        eos = self.tokenizer.eos_id
        return [self.tokenizer.decode(t[:-1] if t and t[-1] == eos else t) for t in new]

    def rollout(self, prompts: Sequence[str], *, sampler: Sampler, max_new_tokens: int = 64,
                generator: torch.Generator | None = None) -> Rollout:
        """Sample one completion per prompt, as :meth:`generate` does, and keep the drawn
        tokens: a :class:`~gaf.interfaces.Rollout` whose batch (unpacked, right-padded)
        scores exactly them, with EOS only where it was sampled."""
        if max_new_tokens < 1:
            raise ValueError(f"a rollout needs max_new_tokens >= 1, got {max_new_tokens}")
        ids = [prompt_ids(self.tokenizer, p, self.config.n_positions) for p in prompts]
        new = self.generate_ids(ids, sampler=sampler, max_new_tokens=max_new_tokens,
                                generator=generator)
        eos = self.tokenizer.eos_id
        ended = [bool(t) and t[-1] == eos for t in new]
        batch = batch_from_ids([(p + t, len(p)) for p, t in zip(ids, new)],
                               self.tokenizer.pad_id, self.device)
        texts = [self.tokenizer.decode(t[:-1] if e else t) for t, e in zip(new, ended)]
        return Rollout(batch=batch, completions=texts,
                       ended=torch.tensor(ended, dtype=torch.bool, device=self.device))
