"""Losses of the RLHF objectives, as pure tensor functions (tested against float64
references in ``tests/rlhf``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ranked_reward_loss", "clipped_policy_loss", "clipped_value_loss"]


def ranked_reward_loss(r_chosen: Tensor, r_rejected: Tensor, group: Tensor, n_groups: int,
                       margin: float = 0.0) -> Tensor:
    r"""InstructGPT's reward-model loss over K-ranked lists.

    For every labelled pair ``y_w ≻ y_l`` of a prompt's ranking (all ``C(K, 2)`` of
    them for a full ranking), ``−log σ(r(x, y_w) − r(x, y_l) − m)``; each prompt's
    pairs are averaged (``1/C(K, 2) Σ``), then the prompts. With K = 2 it is the
    pairwise (Bradley–Terry) loss. ``group[p]`` (int64) is the prompt of pair ``p``,
    in ``[0, n_groups)``; ``margin`` m ≥ 0 asks for a gap of at least m.
    """
    per = F.softplus(-(r_chosen - r_rejected - margin))  # −log σ(x) = softplus(−x)
    sums = per.new_zeros(n_groups).index_add(0, group, per)
    counts = per.new_zeros(n_groups).index_add(0, group, torch.ones_like(per))
    return (sums / counts.clamp_min(1)).mean()


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                        clip: float = 0.2) -> tuple[Tensor, Tensor]:
    r"""PPO's clipped surrogate, averaged over real tokens:
    ``max(−Â ρ, −Â clip(ρ, 1−ε, 1+ε))`` with ``ρ = exp(log π − log π_old)``.

    Outside the trust region, in the direction the advantage pushes (``ρ > 1+ε`` with
    ``Â > 0``, ``ρ < 1−ε`` with ``Â < 0``) the clipped term is the larger one and its
    gradient is 0. Returns ``(loss, clipfrac)``, the fraction of real tokens where the
    clipped term was used.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    m = mask.to(logp.dtype)
    n = m.sum().clamp_min(1)
    loss = (torch.maximum(unclipped, clipped) * m).sum() / n
    clipfrac = ((clipped > unclipped).to(logp.dtype) * m).sum() / n
    return loss, clipfrac.detach()


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip: float = 0.2) -> Tensor:
    """PPO's clipped value loss over real tokens:
    ``½ max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²)``."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    per = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    m = mask.to(values.dtype)
    return (per * m).sum() / m.sum().clamp_min(1)
