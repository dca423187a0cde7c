"""Estimators of the RLHF objectives: KL estimators, GAE, whitening, RLOO baselines.

Tensors are ``(B, T)`` over completion tokens, right-padded, with a bool ``mask``
(True = a real token); results are 0 at padded positions. Each function is tested
against its definition in ``tests/rlhf/test_advantages.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kl_k1", "kl_k3", "gae", "whiten", "masked_mean", "rloo_advantages", "token_rewards",
           "explained_variance"]


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k1 = log π − log π_ref`` per token: unbiased for KL(π‖π_ref) under samples of π,
    but each term can be negative."""
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k3 = e^{−k1} − 1 + k1`` per token (Schulman's estimator): unbiased and never
    negative (``e^x ≥ 1 + x``)."""
    k1 = logp - ref_logp
    return torch.expm1(-k1) + k1


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the True entries of ``mask`` (0 when there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x − mean) / std`` over the real tokens (population std); with ``shift_mean``
    False the mean is added back (only the scale changes). Padding stays 0."""
    m = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    r"""Generalised advantage estimation (Schulman et al. 2016) per sequence.

    ``δ_t = r_t + γ V_{t+1} − V_t`` with ``V`` 0 after a sequence's last real token
    (the episode ends there), ``Â_t = δ_t + γλ Â_{t+1}``, i.e.
    ``Â_t = Σ_{l ≥ 0} (γλ)^l δ_{t+l}`` over the real tokens. Returns ``(Â, Â + V)``:
    advantages and the value targets (returns).
    """
    B, T = rewards.shape
    m = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    running = rewards.new_zeros(B)
    for t in reversed(range(T)):
        alive_next = m[:, t + 1] if t + 1 < T else rewards.new_zeros(B)
        next_value = values[:, t + 1] * alive_next if t + 1 < T else rewards.new_zeros(B)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * alive_next * running) * m[:, t]
        adv[:, t] = running
    return adv, (adv + values) * m


def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): ``(P, k)`` rewards of k samples
    per prompt → ``A_i = r_i − mean_{j≠i} r_j``. Needs k ≥ 2."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got {k}")
    others = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """PPO's per-token reward ``r_t = −β·k_t + [t = last real token]·score``.

    ``scores`` ``(B,)`` are the sequence rewards (after any missing-EOS penalty), ``kl``
    ``(B, T)`` the per-token KL estimates. The score goes on each row's *last real*
    token (index ``mask.sum(1) − 1`` in the left-packed completion layout), never on
    a pad after it; padding stays 0. A row with no real token gets nothing.
    """
    m = mask.to(kl.dtype)
    rewards = -beta * kl * m
    last = (mask.long().sum(1) - 1).clamp_min(0)
    has = mask.any(1)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    bonus = torch.where(has, scores.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    return rewards.index_put((rows, last), rewards[rows, last] + bonus)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 − Var(R − V) / Var(R)`` over the real tokens: 1 for a perfect critic, 0 for
    one that predicts the mean, negative for a worse one (0 when ``Var(R)`` is 0)."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return torch.where(var_r > 0, 1 - var_d / var_r.clamp_min(1e-12), torch.zeros_like(var_r))
