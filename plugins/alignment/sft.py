"""``sft``: supervised fine-tuning of a policy on a task's examples.

The loss is the mean negative log-likelihood over completion tokens (including the
final EOS) of the batch; prompt and padding tokens are masked out. The objective
only talks to the :class:`~gaf.interfaces.Policy` and :class:`~gaf.interfaces.Task`
interfaces, so any policy or task plugin can be fine-tuned.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import attrs

from gaf.config import option
from gaf.errors import BadData
from gaf.interfaces import SFTExample, batched
from gaf.runs import RunContext
from gaf.seeding import EpochOrder



@attrs.define
class SFTConfig:
    """Options of the ``sft`` objective (the ``[objective]`` section)."""

    eval_examples: int = option(256, "held-out examples scored for eval_loss (0 = all)")
    eval_batch_size: int = option(64, "batch size of the evaluation passes")
    samples: int = option(64, "held-out prompts completed for samples.jsonl and mean_reward")
    max_new_tokens: int = option(64, "tokens generated per evaluation prompt")
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads: 'eval' for headline figures, "
                "'validation' for tuning")


class SFT:
    """Supervised fine-tuning: NLL on completion tokens, prompt masked."""

    Config = SFTConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "top-p"}
    # How these were chosen, and what they give: docs/results.md § SFT.
    train_defaults = {"steps": 1200, "batch_size": 16, "lr": 4e-3, "warmup_steps": 50,
                      "log_every": 20}

    def __init__(self, config: SFTConfig | None = None):
        self.config = config or SFTConfig()

    def setup(self, ctx: RunContext) -> None:
        self.policy = ctx.component("policy")
        self.task = ctx.component("task")
        self.examples: list[SFTExample] = list(self.task.sft_examples("train"))
        if not self.examples:
            raise BadData("the task has no training examples")
        self.batch_size = ctx.spec.train.batch_size
        self.world = ctx.world
        self.order = EpochOrder(len(self.examples), ctx.spec.seed, "sft-order")

    def modules(self) -> dict[str, Any]:
        return {"policy": self.policy}

    def train_batch(self, index: int) -> Any:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = [self.examples[i] for i in self.order.slice(start, count)]
        return self.policy.prepare([e.prompt for e in picks], [e.completion for e in picks])

    def loss(self, batch: Any) -> tuple[Any, dict[str, float]]:
        lp = self.policy.completion_logprobs(batch)
        tokens = lp.mask.sum()
        nll = self.world.mean(-lp.token_logps.sum(), tokens)  # global token mean
        return nll, {"tokens": float(tokens)}

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        cfg = self.config
        out: dict[str, float] = {}
        held_out = list(self.task.sft_examples(cfg.eval_split))
        if cfg.eval_examples:
            held_out = held_out[: cfg.eval_examples]
        if held_out:
            total, count = 0.0, 0.0
            for chunk in batched(held_out, cfg.eval_batch_size):
                lp = self.policy.completion_logprobs(
                    self.policy.prepare([e.prompt for e in chunk], [e.completion for e in chunk]))
                total += float(-lp.token_logps.sum())
                count += float(lp.mask.sum())
            out["eval_loss"] = total / max(count, 1.0)
            out["eval_ppl"] = math.exp(min(out["eval_loss"], 50.0))
        prompts = list(self.task.prompts(cfg.eval_split))[: cfg.samples]
        if prompts:
            out.update(self._samples(ctx, prompts))
        return out

    def _samples(self, ctx: RunContext, prompts: list[str]) -> dict[str, float]:
        sampler = ctx.component("sampler")
        generator = ctx.generator("sft-eval-samples")
        completions: list[str] = []
        for chunk in batched(prompts, self.config.eval_batch_size):
            completions += self.policy.generate(chunk, sampler=sampler,
                                                max_new_tokens=self.config.max_new_tokens,
                                                generator=generator)
        reward_fn = self.task.reward()
        rewards = [float(r) for r in reward_fn(prompts, completions)] if reward_fn else None
        lines = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            row: dict[str, Any] = {"prompt": p, "completion": c}
            if rewards is not None:
                row["reward"] = rewards[i]
            lines.append(json.dumps(row, ensure_ascii=False))
        from gaf.atomic import atomic_write_text

        atomic_write_text(ctx.path("samples", "samples.jsonl"), "\n".join(lines) + "\n")
        out = {"samples": float(len(completions))}
        if rewards is not None:
            out["mean_reward"] = sum(rewards) / len(rewards)
        return out
