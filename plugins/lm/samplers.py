"""Decoding strategies (:class:`gaf.interfaces.Sampler`): greedy, temperature, top-k, top-p.

Each sampler is built as ``Sampler(Sampler.Config(...))`` and called as
``sampler(logits, generator=None)`` with ``(B, V)`` logits; it returns ``(B,)`` int64
ids. Randomness comes only from ``torch.multinomial(..., generator=generator)``, so a
seeded generator repeats its draws. Tokens whose logit is ``-inf`` get probability
exactly zero and are never returned; a row whose logits are all ``-inf`` (or NaN) is
an error.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from gaf.config import option

__all__ = ["Greedy", "Temperature", "TopK", "TopP"]


def _check_logits(logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise ValueError("a sampler expects (batch, vocab) logits, "
                         f"got shape {tuple(logits.shape)}")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN")
    if (logits == float("-inf")).all(-1).any():
        raise ValueError("a row of logits is all -inf: no token can be chosen")
    return logits


def _draw(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One multinomial draw per row of softmax(logits) (computed in float32 or wider)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    probs = torch.softmax(logits.to(dtype), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@attrs.define
class GreedyConfig:
    """Greedy decoding has no options."""


class Greedy:
    """Always the highest-logit token (``argmax``; the lowest id on ties)."""

    Config = GreedyConfig

    def __init__(self, config: GreedyConfig | None = None):
        self.config = config or GreedyConfig()

    #: greedy decoding is not a distribution an on-policy objective can score
    scoring_temperature = None

    def __call__(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _check_logits(logits).argmax(dim=-1)


@attrs.define
class TemperatureConfig:
    temperature: float = option(1.0, "divide logits by this before sampling", gt=0)


class Temperature:
    """Sample from ``softmax(logits / temperature)`` over the whole vocabulary."""

    Config = TemperatureConfig

    def __init__(self, config: TemperatureConfig | None = None):
        self.config = config or TemperatureConfig()

    @property
    def scoring_temperature(self) -> float:
        """``T``: samples are draws of ``softmax(logits / T)`` (:class:`gaf.interfaces.Sampler`)."""
        return self.config.temperature

    def __call__(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _draw(_check_logits(logits) / self.config.temperature, generator)


@attrs.define
class TopKConfig:
    k: int = option(50, "sample among the k highest-logit tokens", ge=1)
    temperature: float = option(1.0, "divide logits by this before sampling", gt=0)


class TopK:
    """Sample from ``softmax(logits / temperature)`` restricted to the top ``k`` tokens.

    Exactly ``min(k, V)`` candidates per row (``torch.topk``; ties broken by topk),
    so a token outside them is never returned.
    """

    Config = TopKConfig

    def __init__(self, config: TopKConfig | None = None):
        self.config = config or TopKConfig()

    #: truncated to k tokens: not ``softmax(logits / T)``, which on-policy objectives score
    scoring_temperature = None

    def __call__(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits = _check_logits(logits)
        k = min(self.config.k, logits.shape[-1])
        values, indices = logits.topk(k, dim=-1)
        choice = _draw(values / self.config.temperature, generator)
        return indices.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


@attrs.define
class TopPConfig:
    p: float = option(0.9, "sample within the smallest set of tokens whose probability "
                           "reaches p", gt=0, le=1)
    temperature: float = option(1.0, "divide logits by this before sampling", gt=0)


class TopP:
    """Nucleus sampling: sample within the smallest set of most-likely tokens whose
    total probability (after temperature) is at least ``p``.

    Tokens are sorted by probability; token ``i`` is kept when the mass of the tokens
    before it is still below ``p``, so the most likely token is always kept.
    """

    Config = TopPConfig

    def __init__(self, config: TopPConfig | None = None):
        self.config = config or TopPConfig()

    @property
    def scoring_temperature(self) -> float | None:
        """``T`` when ``p = 1`` (nothing is truncated), else ``None``: a nucleus is not
        ``softmax(logits / T)``, the distribution on-policy objectives score."""
        return self.config.temperature if self.config.p >= 1.0 else None

    def __call__(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits = _check_logits(logits)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        scaled = logits.to(dtype) / self.config.temperature
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(-1) - probs
        keep = mass_before < self.config.p
        keep[:, 0] = True
        choice = _draw(sorted_logits.masked_fill(~keep, float("-inf")), generator)
        return order.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
