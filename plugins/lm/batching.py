"""Turning (prompt, completion) strings into padded token batches for causal LMs.

The layout, for one pair, with ``p = encode(prompt)`` and ``c = encode(completion)``::

    input_ids        BOS  p0  p1  c0  c1  EOS  PAD PAD
    target_ids       p0   p1  c0  c1  EOS PAD  PAD PAD     (input_ids shifted left)
    completion_mask  F    F   T   T   T   F    F   F
    attention_mask   T    T   T   T   T   T    F   F

Position ``t`` of the model's output predicts ``input_ids[t + 1]`` (= ``target_ids[t]``);
``completion_mask[t]`` is True exactly when that target is a completion token or the
final EOS. Sequences are right-padded with ``pad_id``.

Truncation to ``n_positions`` tokens: the prompt is cut from the left (BOS is kept);
if even ``BOS + completion + EOS`` does not fit, the prompt is dropped and the
completion is cut at the end to ``n_positions - 1`` tokens, without EOS.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from gaf.interfaces import Tokenizer

__all__ = ["LMBatch", "build_batch", "pair_ids", "prompt_ids"]


@attrs.frozen
class LMBatch:
    """A tokenised batch of (prompt, completion) pairs; all fields are ``(B, T)``.

    ``input_ids``/``target_ids`` are int64, the masks bool. See the module docstring
    for the alignment (``completion_mask[t]`` marks the target ``input_ids[t + 1]``).
    """

    input_ids: Tensor
    target_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> LMBatch:
        """The same batch on ``device``."""
        return LMBatch(*(t.to(device) for t in attrs.astuple(self, recurse=False)))


def pair_ids(tokenizer: Tokenizer, prompt: str, completion: str,
             n_positions: int) -> tuple[list[int], int]:
    """Token ids of one pair and the number of leading non-completion tokens.

    Returns ``(ids, n_context)`` where ``ids = BOS + prompt + completion (+ EOS)``
    after truncation (module docstring) and ``ids[n_context:]`` are the completion
    tokens (with EOS when it fits). ``n_context`` is ``1 + len(kept prompt)``.
    """
    p = tokenizer.encode(prompt)
    c = tokenizer.encode(completion)
    room_for_prompt = n_positions - 2 - len(c)
    if room_for_prompt >= 0:
        p = p[len(p) - room_for_prompt:] if len(p) > room_for_prompt else p
        return [tokenizer.bos_id, *p, *c, tokenizer.eos_id], 1 + len(p)
    return [tokenizer.bos_id, *c[:max(n_positions - 1, 0)]], 1


def prompt_ids(tokenizer: Tokenizer, prompt: str, n_positions: int) -> list[int]:
    """``BOS + prompt`` for generation, the prompt cut from the left so that at least
    one new token fits in ``n_positions``."""
    p = tokenizer.encode(prompt)
    keep = max(n_positions - 2, 0)
    if len(p) > keep:
        p = p[len(p) - keep:]
    return [tokenizer.bos_id, *p]


def build_batch(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                n_positions: int, device: torch.device | str = "cpu") -> LMBatch:
    """Tokenise, truncate and right-pad ``prompts``/``completions`` into an :class:`LMBatch`."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("prompts and completions must be sequences of strings, not a string")
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    pairs = [pair_ids(tokenizer, p, c, n_positions) for p, c in zip(prompts, completions)]
    B = len(pairs)
    T = max((len(ids) for ids, _ in pairs), default=1)
    input_ids = torch.full((B, T), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.bool)
    completion_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (ids, n_context) in enumerate(pairs):
        input_ids[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[b, :len(ids)] = True
        # targets ids[n_context:] sit at output positions n_context-1 .. len(ids)-2
        completion_mask[b, n_context - 1:len(ids) - 1] = True
    target_ids = torch.full_like(input_ids, tokenizer.pad_id)
    target_ids[:, :-1] = input_ids[:, 1:]
    return LMBatch(input_ids, target_ids, attention_mask, completion_mask).to(device)
