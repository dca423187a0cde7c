"""The held-out evaluation of an aligned policy: win rate, mean reward and KL.

On the held-out prompts (the objective's ``eval_split``), ``eval_samples``
completions per prompt are drawn from the policy and from the reference with the
run's sampler and judged by the task's true reward: ``win_rate`` (the policy's
completion has the higher reward; ties count ½), ``mean_reward`` and
``reference_mean_reward``.

``kl`` is the sequence ``KL(π‖π_ref)``, estimated as the mean of
``log π(y|x) − log π_ref(y|x)`` over samples ``y ~ π`` drawn by plain ancestral
sampling (temperature 1, no truncation, so the estimate is unbiased whatever the
run's sampler truncates). For a :class:`~gaf.interfaces.RolloutPolicy` both
log-probabilities are those of the very tokens drawn (EOS only where it was
sampled); a policy that can only ``generate`` text is scored on the text
re-tokenised with an EOS appended. ``samples/samples.jsonl`` keeps every completion
with its rewards and log-ratio.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.interfaces import PreferenceGroup, RolloutPolicy, batched
from gaf.runs import RunContext

__all__ = ["policy_evaluation", "is_ancestral", "generate", "mean_nll"]


def is_ancestral(sampler: Any) -> bool:
    """True for a sampler that draws from the model's own distribution (temperature 1,
    no truncation), whose samples estimate ``KL(π‖π_ref)`` without bias."""
    return getattr(sampler, "scoring_temperature", None) == 1.0


def generate(model: Any, prompts: Sequence[str], sampler: Any, max_new_tokens: int,
             batch_size: int, generator: Any) -> list[str]:
    """One completion per prompt, ``batch_size`` prompts at a time."""
    out: list[str] = []
    for chunk in batched(list(prompts), batch_size):
        out += model.generate(list(chunk), sampler=sampler, max_new_tokens=max_new_tokens,
                              generator=generator)
    return out


def _rollout_log_ratios(policy: Any, reference: Any, prompts: Sequence[str], sampler: Any,
                        max_new_tokens: int, batch_size: int,
                        generator: Any) -> tuple[list[str], list[float]]:
    """Ancestral rollouts of ``policy`` and ``log π − log π_ref`` of their drawn tokens."""
    texts: list[str] = []
    ratios: list[float] = []
    for chunk in batched(list(prompts), batch_size):
        rollout = policy.rollout(list(chunk), sampler=sampler, max_new_tokens=max_new_tokens,
                                 generator=generator)
        logp = _sequence_logp(policy, rollout.batch)
        ref_logp = _sequence_logp(reference, rollout.batch)
        texts += rollout.completions
        ratios += (logp - ref_logp).tolist()
    return texts, ratios


def _sequence_logp(model: Any, batch: Any) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.completion_logprobs(batch).sequence().sum.double().cpu()
    finally:
        model.train(was_training)


def policy_evaluation(obj: Any, ctx: RunContext, held_out: list[str]) -> dict[str, float]:
    """Win rate, rewards and KL of ``obj.policy`` against ``obj.reference`` on
    ``held_out`` prompts (module docstring). ``obj`` is an
    :class:`~gaf.plugins.alignment.base.AlignmentObjective` whose config has
    ``eval_samples``."""
    cfg = obj.config
    policy, reference = obj.policy, obj.reference
    prompts = [p for p in held_out for _ in range(cfg.eval_samples)]
    size, n_new = cfg.generation_batch_size, cfg.max_new_tokens
    ancestral = (obj.sampler if is_ancestral(obj.sampler)
                 else ctx.registry.create("sampler", "temperature", temperature=1.0))
    same_draws = ancestral is obj.sampler
    # the run's random streams: the judged samples, the reference's, and the KL samples
    # (the judged ones themselves when the run's sampler is ancestral)
    ours_stream, theirs_stream = "eval-policy-samples", "eval-reference-samples"
    kl_stream = ours_stream if same_draws else "eval-kl-samples"
    if isinstance(policy, RolloutPolicy):
        kl_samples, log_ratio = _rollout_log_ratios(
            policy, reference, prompts, ancestral, n_new, size, ctx.generator(kl_stream))
        ours = (kl_samples if same_draws
                else generate(policy, prompts, obj.sampler, n_new, size,
                              ctx.generator(ours_stream)))
    else:
        ours = generate(policy, prompts, obj.sampler, n_new, size, ctx.generator(ours_stream))
        kl_samples = (ours if same_draws
                      else generate(policy, prompts, ancestral, n_new, size,
                                    ctx.generator(kl_stream)))
        groups = [PreferenceGroup(p, (y,)) for p, y in zip(prompts, kl_samples)]
        log_ratio = (obj.score(policy, groups)[:, 0] - obj.score(reference, groups)[:, 0]).tolist()
    theirs = generate(reference, prompts, obj.sampler, n_new, size, ctx.generator(theirs_stream))
    out = {"kl": sum(log_ratio) / len(log_ratio), "eval_prompts": float(len(held_out)),
           "eval_samples": float(len(prompts))}
    reward_fn = obj.task.reward()
    rows: list[dict[str, Any]] = [{"prompt": p, "completion": y, "reference_completion": z}
                                  for p, y, z in zip(prompts, ours, theirs)]
    if reward_fn is not None:
        r = [float(x) for x in reward_fn(prompts, ours)]
        r_ref = [float(x) for x in reward_fn(prompts, theirs)]
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(r, r_ref)]
        out.update(win_rate=sum(wins) / len(wins), mean_reward=sum(r) / len(r),
                   reference_mean_reward=sum(r_ref) / len(r_ref))
        for row, a, b in zip(rows, r, r_ref):
            row["reward"], row["reference_reward"] = round(a, 5), round(b, 5)
    for row, y, k in zip(rows, kl_samples, log_ratio):
        if not same_draws:
            row["kl_sample"] = y
        row["log_ratio"] = round(k, 5)
    atomic_write_text(ctx.path("samples", "samples.jsonl"),
                      "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return out


def mean_nll(model: Any, examples: Sequence[Any], batch_size: int) -> float:
    """Mean per-token negative log-likelihood of SFT ``examples`` under ``model`` (eval
    mode, no gradients)."""
    total, count = 0.0, 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for chunk in batched(list(examples), batch_size):
                lp = model.completion_logprobs(model.prepare([e.prompt for e in chunk],
                                                             [e.completion for e in chunk]))
                total += float(-lp.token_logps.sum())
                count += float(lp.mask.sum())
    finally:
        model.train(was_training)
    return total / max(count, 1.0)
