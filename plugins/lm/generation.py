"""Batched autoregressive generation with a KV cache, for any model with the GPT-2 call shape.

The model must provide ``model(input_ids, attention_mask=, position_ids=,
past_key_values=, use_cache=True) -> (hidden, cache)``, ``model.logits(hidden)`` and
``model.config.n_positions``.

Prompts are LEFT-padded to a common length; the attention mask hides the padding and
position ids count from 0 at each prompt's first real token, so each row computes
exactly what it would alone. Every step feeds one token per row through the cache.
A row stops after emitting ``eos_id``, after ``max_new_tokens`` tokens, or when its
sequence (prompt + new tokens) reaches ``n_positions``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gaf.interfaces import Sampler

__all__ = ["generate_ids"]


@torch.no_grad()
def generate_ids(model, prompts: Sequence[Sequence[int]], *, sampler: Sampler,
                 max_new_tokens: int, eos_id: int, pad_id: int,
                 banned: Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """New token ids for each prompt (the prompt ids already include any BOS).

    ``banned`` is an optional ``(V,)`` bool mask of ids whose logits are set to
    ``-inf`` before sampling. Each returned list ends with ``eos_id`` when the row
    stopped on EOS. Runs in eval mode and restores the model's train/eval mode.
    ``generator`` is passed to the sampler, so it must live on the model's device.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    n_positions = model.config.n_positions
    lens = [len(p) for p in prompts]
    if not prompts:
        return []
    if min(lens) < 1:
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    if max(lens) > n_positions:
        raise ValueError(f"a prompt has {max(lens)} tokens; the model holds {n_positions}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        B, T = len(prompts), max(lens)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.bool)
        for b, p in enumerate(prompts):
            ids[b, T - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[b, T - len(p):] = True
        ids, mask = ids.to(device), mask.to(device)
        lengths = torch.tensor(lens, device=device)
        room = (n_positions - lengths).clamp_max(max_new_tokens)
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)
        hidden, cache = model(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        last = hidden[:, -1]
        out = torch.full((B, max(max_new_tokens, 1)), pad_id, dtype=torch.long, device=device)
        count = torch.zeros(B, dtype=torch.long, device=device)
        active = room > 0
        next_pos = lengths.clone()  # position of the token fed next
        banned = None if banned is None else banned.to(device)
        for step in range(max_new_tokens):
            if not bool(active.any()):
                break
            logits = model.logits(last).float()
            if banned is not None:
                logits = logits.masked_fill(banned, float("-inf"))
            token = sampler(logits, generator).to(device)
            out[:, step] = torch.where(active, token, out[:, step])
            count += active.long()
            active = active & (token != eos_id) & (count < room)
            if step + 1 == max_new_tokens or not bool(active.any()):
                break
            feed = torch.where(active, token, torch.full_like(token, pad_id))
            mask = torch.cat([mask, active.unsqueeze(1)], dim=1)
            pos = next_pos.clamp_max(n_positions - 1).unsqueeze(1)
            hidden, cache = model(feed.unsqueeze(1), attention_mask=mask, position_ids=pos,
                                  past_key_values=cache, use_cache=True)
            last = hidden[:, -1]
            next_pos += 1
        return [out[b, :int(count[b])].tolist() for b in range(B)]
    finally:
        model.train(was_training)
