"""``lm-text``: a frozen language model, trained on text alone, as the text encoder.

Imagen's finding (Saharia et al. 2022) is that a large language model pretrained on
text only and kept *frozen* (T5-XXL) is a better text encoder for text-to-image
diffusion than CLIP's text tower, and that scaling it helps more than scaling the UNet.
This conditioner is that encoder in miniature: a gaf GPT-2 policy (the language-model
half's ``policy`` kind), trained with the ``sft`` objective on caption text alone (the
``imagen`` objective does this as its first stage, see
:func:`gaf.plugins.t2i.imagen.stages.text_encoder_stage`), loaded and frozen.

Encoding
--------
A caption gets a prefix space (as the ``text-transformer``'s, so a caption's words are
the tokens the LM was trained on: the stage writes its captions the same way), is
tokenised with the LM's own tokenizer and laid out as in training::

    ids   = BOS  c0  c1 … cn  PAD … PAD                  (max_length tokens)
    states = ln_f(GPT-2(ids, attention_mask))             (B, max_length, d_model)
           + LayerNorm(wte(ids))                          (with ``embeddings``, the default)

The LM is causal, so the state at ``ck`` has read ``BOS c0 … ck``; the last real
token's state has read the whole caption. But a causal LM's last layer keeps what
predicts the *next* token, and drops what does not: at a caption's last word ("… in
the top **left**") the next token is the end whatever the word was, so the word itself
fades from the state. T5's encoder, trained to fill in masked spans, has no such loss.
``embeddings`` (default true) therefore adds each token's input embedding
(``wte``, layer-normed without affine weights, so it has the final states' scale) to
its final state, as ELMo's mix keeps the embedding layer for the words' identity: a
4-head attention probe on the captions of ``shapes`` reads the stated position from
the final states alone far less well than from the sum (``docs/results.md`` § Imagen
gives the figures), while colour and shape read fully from either.

The states at the pads are set to **zero** (as imagen-pytorch masks T5's pad states):
the pads were never inputs the LM learned from, and a zero state is one fixed key for
the cross-attention, the same for every caption. The BOS state is the same for every
caption too (it has read nothing).

``null(batch_size)`` is the encoding of the empty caption ``""`` (the BOS state, then
zeros), the unconditional context a frozen encoder offers: it has no learned null
(Stable Diffusion does the same with its frozen CLIP text encoder).

``trainable`` is False: an objective never trains it (``ldm`` leaves it out of its
optimiser and records its options, so a pipeline rebuilds it from the ``lm`` path).

Options: ``lm``, a run directory of ``gaf run --objective sft`` (its ``policy/``) or a
directory written by ``gaf.save`` of a policy, made absolute; ``max_length``, tokens per
caption including BOS (the longest ``shapes`` caption is 15 ``shapes-bpe`` tokens).
Loading reads safetensors and JSON only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gaf.config import option
from gaf.errors import BadConfig

from .text import tokenize_captions

__all__ = ["FrozenLMText", "FrozenLMTextConfig", "load_language_model"]

_HOW = ("a language model trained on captions: --set conditioner.lm=RUN_DIR, the "
        "directory of a `gaf run --objective sft` run (or of gaf.save of a policy); the "
        "imagen objective trains one itself when lm is empty")


def load_language_model(path: str | Path) -> nn.Module:
    """The policy saved in ``path`` (an sft run directory or a saved policy), frozen:
    eval mode, no parameter requires a gradient. It must be a GPT-2 policy (one that
    returns hidden states and has a tokenizer)."""
    from gaf.components import load_from
    from gaf.registry import REGISTRY

    if not str(path):
        raise BadConfig("conditioner lm-text needs " + _HOW)
    p = Path(path)
    if not p.exists():
        raise BadConfig(f"conditioner lm-text: {str(path)!r} does not exist; it needs " + _HOW)
    model = load_from(REGISTRY, "policy", p)
    if not (isinstance(model, nn.Module) and hasattr(model, "tokenizer")
            and hasattr(model, "config") and hasattr(model.config, "d_model")):
        raise BadConfig(f"conditioner lm-text: {str(path)!r} holds a {type(model).__name__}, "
                        f"not a GPT-2 policy")
    model.requires_grad_(False)
    return model.eval()


@attrs.define
class FrozenLMTextConfig:
    """Options of the ``lm-text`` conditioner."""

    lm: str = option("", "an sft run directory (or a saved policy) of a language model "
                         "trained on captions")
    max_length: int = option(24, "tokens per caption, BOS included (longer captions are "
                                 "rejected)", ge=2)
    embeddings: bool = option(True, "add the layer-normed input token embeddings to the "
                                    "final states (a causal LM's last layer loses words it "
                                    "need not predict from)")


class FrozenLMText(nn.Module):
    """Captions → a frozen language model's hidden states (see the module docstring)."""

    Config = FrozenLMTextConfig
    condition_key = "caption"
    trainable = False

    def __init__(self, config: FrozenLMTextConfig | None = None):
        super().__init__()
        cfg = config or FrozenLMTextConfig()
        self.config = attrs.evolve(cfg, lm=str(Path(cfg.lm).resolve())) if cfg.lm else cfg
        self.lm = load_language_model(self.config.lm)
        if self.config.max_length > self.lm.config.n_positions:
            raise BadConfig(f"conditioner lm-text: max_length {self.config.max_length} exceeds "
                            f"the language model's n_positions {self.lm.config.n_positions}")
        self.tokenizer = self.lm.tokenizer
        self.tokens = self.config.max_length
        self.width = int(self.lm.config.d_model)
        self.wte = getattr(getattr(self.lm, "transformer", None), "wte", None)
        if self.config.embeddings and not isinstance(self.wte, nn.Embedding):
            raise BadConfig(f"conditioner lm-text: embeddings = true needs the language "
                            f"model's input embeddings (transformer.wte); "
                            f"{type(self.lm).__name__} has none: set "
                            f"conditioner.embeddings=false")
        self._empty: Tensor | None = None

    def train(self, mode: bool = True) -> FrozenLMText:
        """Stays in eval mode: the language model is frozen."""
        return super().train(False)

    def tokenize(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids, mask)``, ``(B, max_length)``: BOS, the caption's tokens (with a prefix
        space), pads; ``mask`` True at BOS and the caption's tokens."""
        device = self.lm.device
        ids, mask = tokenize_captions(self.tokenizer, captions, self.tokens - 1,
                                      who="conditioner lm-text", device=device,
                                      option="max_length (less 1 for BOS)")
        b = ids.shape[0]
        bos = torch.full((b, 1), self.tokenizer.bos_id, dtype=ids.dtype, device=device)
        return torch.cat([bos, ids], 1), torch.cat([mask.new_ones(b, 1), mask], 1)

    @torch.no_grad()
    def forward(self, captions: Sequence[str]) -> Tensor:
        """``(B, max_length, d_model)`` states, zero at the pads."""
        ids, mask = self.tokenize(captions)
        if ids.shape[0] == 0:
            return torch.zeros(0, self.tokens, self.width, device=ids.device)
        states = self.lm(ids, attention_mask=mask)
        if self.config.embeddings:
            words = self.wte(ids)
            states = states + F.layer_norm(words, words.shape[-1:]).to(states.dtype)
        return states * mask.unsqueeze(-1).to(states.dtype)

    def null(self, batch_size: int) -> Tensor:
        """The empty caption's states, ``(batch_size, max_length, d_model)``, encoded once
        (again after the module moved to another device)."""
        if self._empty is None or self._empty.device != self.lm.device:
            self._empty = self.forward([""])
        return self._empty.expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        cfg = self.lm.config
        return (f"lm={self.config.lm!r}, layers={cfg.n_layer}, width={cfg.d_model}, "
                f"tokens={self.tokens}")
