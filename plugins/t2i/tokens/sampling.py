"""Sampling image codes from a token model: a KV cache, classifier-free guidance on the
logits of every token, then any registered ``sampler``.

The loop (:func:`sample_codes`) needs a token model with ``image_tokens``,
``prefill(text, drop) -> (logits (B, K), cache)`` and ``step(codes (B,), index, cache)
-> (logits (B, K), cache)``, whose logits cover the ``K`` image codes only (so no
other token can ever be drawn). With guidance ``s != 1`` the conditional and the
unconditional rows run as one batch of ``2B`` rows with their own caches (the second
half reads the null caption, ``drop = True``), and each token's logits are::

    ℓ̃ = ℓ_∅ + s · (ℓ_c − ℓ_∅)

(Parti's per-token guidance; ``s = 1`` skips the unconditional half). The guided
logits go to the sampler (``greedy``, ``temperature``, ``top-k``, ``top-p`` or a
third-party one: ``sampler(logits, generator=…)``), one row at a time with that row's
generator, so an image depends only on its caption and its seed, never on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gaf.errors import BadConfig

__all__ = ["guide", "sample_codes"]


def guide(cond: Tensor, null: Tensor, scale: float) -> Tensor:
    """``ℓ_∅ + s (ℓ_c − ℓ_∅)``: classifier-free guidance of logits."""
    return null + scale * (cond - null)


@torch.no_grad()
def sample_codes(model: Any, text: Tensor, *, sampler: Any, guidance: float,
                 generators: Sequence[torch.Generator]) -> Tensor:
    """``(B, N)`` image codes for the captions' token ids ``text`` (see the module
    docstring); ``generators`` holds one generator per row."""
    batch = text.shape[0]
    if len(generators) != batch:
        raise BadConfig(f"{len(generators)} generators for {batch} captions")
    guided = guidance != 1.0
    devices = [g.device for g in generators]
    same_device = all(d == devices[0] for d in devices)
    if guided:
        drop = torch.cat([torch.zeros(batch, dtype=torch.bool),
                          torch.ones(batch, dtype=torch.bool)]).to(text.device)
        logits, cache = model.prefill(torch.cat([text, text]), drop)
    else:
        logits, cache = model.prefill(text, None)
    out = []
    for index in range(model.image_tokens):
        scores = guide(logits[:batch], logits[batch:], guidance) if guided else logits
        scores = scores.float().to(devices[0]) if same_device else scores.float()
        codes = torch.cat([sampler(scores[i:i + 1] if same_device
                                   else scores[i:i + 1].to(generators[i].device),
                                   generator=generators[i]) for i in range(batch)])
        codes = codes.to(text.device)
        out.append(codes)
        if index + 1 < model.image_tokens:
            logits, cache = model.step(torch.cat([codes, codes]) if guided else codes,
                                       index, cache)
    return torch.stack(out, dim=1)
