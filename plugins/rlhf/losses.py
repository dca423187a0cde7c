"""Losses of the RLHF objectives, as pure tensor functions (tested against float64
references in ``tests/rlhf``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ranked_reward_loss"]


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
