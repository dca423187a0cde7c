"""min-p sampling as a gaf plugin: the complete example of docs/writing-plugins.md.

A gaf sampler is any callable ``(logits (B, V), generator) -> (B,) token ids`` (see
``gaf.interfaces.Sampler``). Giving it an attrs ``Config`` class lets users set its
options with ``--set`` and see them in ``gaf show sampler min-p``.
"""

from __future__ import annotations

import attrs
import torch

from gaf.config import option


@attrs.define
class MinPConfig:
    min_p: float = option(0.1, "keep tokens with p >= min_p * max p", ge=0, le=1)
    temperature: float = option(1.0, "softmax temperature applied first", gt=0)


class MinP:
    """min-p sampling: drop tokens less likely than min_p x the top token, then sample."""

    Config = MinPConfig

    def __init__(self, config: MinPConfig | None = None):
        self.config = config or MinPConfig()

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.softmax(logits.float() / self.config.temperature, dim=-1)
        threshold = self.config.min_p * probs.max(dim=-1, keepdim=True).values
        probs = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
