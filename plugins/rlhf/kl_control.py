"""The KL coefficient β of PPO's reward ``r − β·KL``: fixed, or adapted to a target.

Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", §2.2:
after each rollout of ``n`` episodes whose mean sequence KL is ``KL``,

    e = clip(KL / KL_target − 1, −0.2, 0.2),    β ← β · (1 + e · n / horizon)

so β grows while the policy drifts past the target and shrinks while it stays below
it, by at most ``0.2 · n / horizon`` per rollout.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KLController"]


class KLController:
    """β, fixed (``target = 0``) or adaptive (module docstring). Its state (β) goes into
    checkpoints through :meth:`state` / :meth:`load_state`."""

    def __init__(self, beta: float, target: float = 0.0, horizon: int = 10_000):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if target < 0 or horizon < 1:
            raise ValueError(f"need target >= 0 and horizon >= 1, got {target}, {horizon}")
        self.beta, self.target, self.horizon = float(beta), float(target), int(horizon)

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def update(self, kl: float, n: int) -> float:
        """Adapt β to a rollout of ``n`` episodes with mean sequence KL ``kl``; returns β."""
        if self.adaptive:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n / self.horizon
        return self.beta

    def state(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def load_state(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
