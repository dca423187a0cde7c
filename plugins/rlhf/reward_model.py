"""``gpt2-reward``: a learned reward model r_φ(x, y), a :class:`~gaf.interfaces.RewardFn`.

InstructGPT's reward model: a copy of the SFT transformer whose LM head is replaced by
a scalar head. ``r(x, y)`` is the head applied to the final hidden state at the *last
real token* of ``BOS x y EOS`` (the EOS when the sequence fits; never a pad: batches
are right-padded and the index is ``attention_mask.sum() - 1``). The head starts at
``N(0, 1/(d_model + 1))`` weights and zero bias, so rewards start near 0.

Build one from a trained policy with :meth:`RewardModel.from_policy` (the ``reward``
objective does), or load a trained one: ``gaf.load("reward", RUN_DIR)``,
``--reward RUN_DIR``. Calling it scores strings::

    rm = gaf.load("reward", "runs/latest")
    rm(["The film"], [" was a joy."])        # tensor([...]), shape (1,)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gaf.plugins.lm.batching import LMBatch, build_batch
from gaf.plugins.lm.gpt2 import GPT2Config, GPT2Policy

__all__ = ["RewardModel"]


class RewardModel(nn.Module):
    """Scalar reward head on a GPT-2 body (``body.`` holds the transformer weights of
    the policy it was made from, ``score.`` the head)."""

    Config = GPT2Config
    #: methods the trainer routes through DDP/FSDP (besides ``forward``)
    gaf_ddp_methods = ("scores", "values")

    def __init__(self, config: GPT2Config | None = None):
        super().__init__()
        self.body = GPT2Policy(config)
        self.config = self.body.config
        self.score = nn.Linear(self.config.d_model, 1)
        nn.init.normal_(self.score.weight, std=1.0 / math.sqrt(self.config.d_model + 1))
        nn.init.zeros_(self.score.bias)

    @classmethod
    def from_policy(cls, policy: GPT2Policy, reward_model: RewardModel | None = None
                    ) -> RewardModel:
        """``reward_model`` (or a new one with ``policy``'s config) with the policy's
        transformer weights and tokenizer copied in; the head keeps its initialisation."""
        rm = reward_model if reward_model is not None else cls(policy.config)
        rm.body.tokenizer = policy.tokenizer
        rm.body.load_state_dict(policy.state_dict())
        return rm.to(policy.device)

    @property
    def tokenizer(self) -> Any:
        return self.body.tokenizer

    @property
    def device(self) -> torch.device:
        return self.body.device

    def save_assets(self, path: Path) -> None:
        self.body.save_assets(path)

    def load_assets(self, path: Path) -> None:
        self.body.load_assets(path)

    def prepare(self, prompts: Sequence[str], completions: Sequence[str]) -> LMBatch:
        """Right-padded ``BOS prompt completion EOS`` rows on this model's device."""
        return build_batch(self.tokenizer, prompts, completions, self.config.n_positions,
                           self.device, pack=False)

    def scores(self, batch: LMBatch) -> Tensor:
        """``(B,)`` rewards of a :meth:`prepare` batch, read at each row's last real token."""
        hidden = self.body(batch.input_ids)  # causal: pads after a token never reach it
        last = batch.attention_mask.long().sum(1) - 1
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.score(hidden[rows, last]).squeeze(-1).float()

    def values(self, batch: LMBatch) -> Tensor:
        """``(B, L)`` float32 per-token values of a policy's batch, laid out like
        :meth:`GPT2Policy.completion_logprobs` (completion positions packed to the left,
        0 elsewhere): entry ``t`` is the head applied where the model predicts
        completion token ``t``, i.e. ``V(x, y_<t)`` (PPO's critic)."""
        if batch.packed:
            hidden = self.body(batch.input_ids, position_ids=batch.position_ids,
                               mask_4d=batch.attention_mask_4d)
            pairs, slots = batch.score_pair, batch.score_slot
            at = hidden.flatten(0, 1)[batch.score_index]
            B = batch.n_pairs
        else:
            hidden = self.body(batch.input_ids)
            cmask = batch.completion_mask
            pairs, cols = cmask.nonzero(as_tuple=True)
            slots = cmask.long().cumsum(1)[pairs, cols] - 1
            at = hidden[pairs, cols]
            B = cmask.shape[0]
        L = int(slots.max()) + 1 if slots.numel() else 0
        v = self.score(at).squeeze(-1).float()
        return v.new_zeros(B, L).index_put((pairs, slots), v)

    def forward(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """The :class:`~gaf.interfaces.RewardFn` call: ``(B,)`` float32 rewards."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if not len(prompts):
            return torch.zeros(0, device=self.device)
        return self.scores(self.prepare(prompts, completions))
