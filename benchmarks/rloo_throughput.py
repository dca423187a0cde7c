"""RLOO speed: completions per second through gaf's whole ``rloo`` iteration.

    python benchmarks/rloo_throughput.py [STEPS] [PROMPTS_PER_STEP] [--k K] [--warmup N]
        [--threads 2] [--tokenizer byte] [--reward target-fraction|oracle]
        [--write-prompts PROMPTS.jsonl] [--no-cost]

Builds the ``rloo`` objective at its defaults, as ``gaf run --objective rloo`` does
(gpt2-tiny with its own ``sentiment-bpe`` vocabulary, but as built:
``objective.sft_steps=0``; the ``sentiment`` task's train prompts in the run's order; the
``temperature`` sampler at T = 1; k = ``samples_per_prompt`` = 4; ``max_new_tokens`` =
64; β = 0.05; AdamW at lr 1e-4, weight decay 0, clipping at 1.0; fp32, CPU) and runs
STEPS iterations (default 20) of PROMPTS_PER_STEP prompts (default 16, the objective's
``batch_size``) after ``--warmup`` untimed ones (default 2). The lr stays constant (a
run's warm-up and cosine decay change the value, not the cost). One iteration is what a
training step of the objective does:

* ``rollout`` (``RLOO.train_batch``): sample k completions of each prompt with the KV
  cache (P × k rows at once), score the drawn tokens under the policy (no gradient) and
  the frozen reference, the reward, R = r − β · Σ_t (log π − log π_ref), and the
  leave-one-out advantages;
* ``update``: ``RLOO.loss`` (the policy forward with gradient over the P × k rows),
  backward, clipping, one AdamW step: one update per batch.

It prints one line::

    gaf_rloo completions_per_s=… rollout_share=… update_share=… mean_completion_tokens=… …

``completions_per_s`` counts the P × k completions of every timed iteration over the
timed wall time; the shares split that time between the two phases above;
``mean_completion_tokens`` is the mean number of generated tokens per completion, EOS
included where it was sampled (an untrained policy rarely samples EOS, so completions
run to nearly ``max_new_tokens``); ``prompt_tokens`` the timed prompts' tokens (BOS
included); ``mean_reward`` the mean reward over the timed completions.

The reward (``--reward``): ``target-fraction`` (the default) is :func:`target_fraction`,
the fraction of the letter ``e`` in the completion text, a cheap deterministic Python
function that ``benchmarks/trl_rloo_peer.py`` defines identically (the peer cannot run
gaf's reward); ``oracle`` is the task's own reward, the ``sentiment-oracle`` that a
default run scores with (a lexicon scorer in Python), for timing gaf's default run.

Then, unless ``--no-cost``, a cost line (``benchmarks/step_cost.py``)::

    gaf_rloo_cost unit=iteration gflop_per_unit=… achieved_gflops=… conv=… … outside=…

The unit is one iteration (rollout and update, as above) on the last timed iteration's
prompts again, run after the result line is taken; units = STEPS, seconds = the timed
wall time, so ``achieved_gflops`` is the timed iterations' rate. The identity
FLOPs(timed) = ``gflop_per_unit`` × STEPS is approximate: an iteration's FLOPs grow
with its batch's longest prompt and longest completion, which differ between batches,
and ``gflop_per_unit`` (the last batch's) stands for the mean iteration. The cost pass
runs 2 more iterations (one counted, one profiled: ``calls=1``, the profiler's overhead
on the rollout's many small operators being large); the optimiser steps on.

The peer, TRL's ``RLOOTrainer`` (docs/benchmarks.md § RLOO)::

    python benchmarks/rloo_throughput.py --write-prompts /tmp/rloo_prompts.jsonl
    python benchmarks/rloo_throughput.py
    /tmp/gaf-peers/bin/python benchmarks/trl_rloo_peer.py /tmp/rloo_prompts.jsonl

``--write-prompts`` writes, instead of timing, a settings line (``{"settings": …}``: the
shapes, k, lengths, temperature, β, optimiser, steps and warm-up of the run it
describes, which the peer adopts) and then one ``{"prompt", "prompt_ids"}`` row per
prompt in the order the loop consumes them (warm-up iterations first; each prompt once,
its k samples are drawn in the iteration), ``prompt_ids`` being the ids gaf generates
from (BOS + prompt), which the peer checks its tokenizer reproduces. Write the file with
the same STEPS, PROMPTS_PER_STEP, ``--k``, ``--warmup`` and ``--tokenizer`` as the timed
run. Protocol: an otherwise idle machine (write the load average down), alternate gaf
and peer, at least 3 runs each, compare the ratio of the medians of
``completions_per_s``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gaf.plugins.lm.batching import prompt_ids
from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.train import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402

TARGET = "e"


def target_fraction(text: str) -> float:
    """The benchmark's reward: the fraction of the characters of ``text`` that are
    ``TARGET`` (0 for the empty text). Defined identically in trl_rloo_peer.py."""
    return text.count(TARGET) / len(text) if text else 0.0


def build(args: argparse.Namespace, run_dir: Path) -> tuple[Any, Any]:
    """The set-up ``rloo`` objective and its resolved spec, at the defaults but for the
    command line's prompts per step, k, tokenizer and step count."""
    from gaf.plugins.rlhf.policy_gradient import RLOO

    sets = ["device=\"cpu\"", "progress=false", "objective.sft_steps=0",
            f"train.batch_size={args.prompts}", f"train.steps={args.warmup + args.steps}"]
    if args.k:
        sets.append(f"objective.samples_per_prompt={args.k}")
    if args.tokenizer:
        sets.append(f"policy.tokenizer=\"{args.tokenizer}\"")
    spec = resolve(objective="rloo", sets=sets)
    torch.manual_seed(spec.seed)
    obj = RLOO(spec.objective_config)
    obj.setup(RunContext(spec, run_dir))
    if args.reward == "target-fraction":
        obj.reward_fn = lambda prompts, completions: [target_fraction(c) for c in completions]
    return obj, spec


def step_prompts(obj: Any, index: int) -> list[str]:
    """The prompts of iteration ``index``, as ``RLOO.train_batch(index)`` takes them."""
    start, count = obj.ctx.world.shard(index * obj.batch_size, obj.batch_size)
    return [obj.train_prompts[i] for i in obj.order.slice(start, count)]


def update(obj: Any, optimizer: Any, params: list, spec: Any, batch: dict) -> torch.Tensor:
    """The update half of an iteration on a rollout ``batch``: ``RLOO.loss``, backward,
    clipping, one optimiser step; returns the loss."""
    loss, _ = obj.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if spec.train.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, spec.train.max_grad_norm)
    optimizer.step()
    return loss


def settings(obj: Any, spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What the peer must match: model shape, sampling, loss and optimiser settings."""
    policy, train = obj.policy, spec.train
    c = policy.config
    return {"tokenizer": c.tokenizer, "vocab_size": c.vocab_size, "n_positions": c.n_positions,
            "d_model": c.d_model, "n_layer": c.n_layer, "n_head": c.n_head,
            "mlp_ratio": c.mlp_ratio, "layer_norm_eps": c.layer_norm_eps, "dropout": 0.0,
            "bos_id": policy.tokenizer.bos_id, "eos_id": policy.tokenizer.eos_id,
            "pad_id": policy.tokenizer.pad_id,
            "params": sum(p.numel() for p in policy.parameters()),
            "k": obj.config.samples_per_prompt, "max_new_tokens": obj.config.max_new_tokens,
            "temperature": obj.temperature, "beta": obj.config.beta,
            "lr": train.lr, "betas": list(train.betas), "weight_decay": train.weight_decay,
            "max_grad_norm": train.max_grad_norm, "prompts_per_step": obj.batch_size,
            "steps": args.steps, "warmup": args.warmup, "seed": spec.seed,
            "reward": args.reward, "target": TARGET}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=20)
    p.add_argument("prompts", nargs="?", type=int, default=16, metavar="PROMPTS_PER_STEP")
    p.add_argument("--k", type=int, default=0, help="samples per prompt (default: rloo's)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokenizer", default="", help="gpt2-tiny's tokenizer (default: its own)")
    p.add_argument("--reward", choices=("target-fraction", "oracle"), default="target-fraction")
    p.add_argument("--write-prompts", default="", metavar="PROMPTS.jsonl")
    p.add_argument("--no-cost", action="store_true", help="skip the cost line")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        obj, spec = build(args, Path(tmp))
        n = args.warmup + args.steps
        if args.write_prompts:
            if args.reward != "target-fraction":
                p.error("the peer computes only the target-fraction reward")
            tok, n_pos = obj.policy.tokenizer, obj.policy.config.n_positions
            with Path(args.write_prompts).open("w") as f:
                f.write(json.dumps({"settings": settings(obj, spec, args)}) + "\n")
                for i in range(n):
                    for prompt in step_prompts(obj, i):
                        f.write(json.dumps({"prompt": prompt,
                                            "prompt_ids": prompt_ids(tok, prompt, n_pos)}) + "\n")
            return
        params = list(obj.policy.parameters())
        optimizer = make_optimizer(spec.train, params)
        k = obj.config.samples_per_prompt
        t_rollout = t_update = 0.0
        completions = gen_tokens = prompt_tokens = 0
        reward_sum = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            batch = obj.train_batch(i)
            t1 = time.perf_counter()
            loss = update(obj, optimizer, params, spec, batch)
            t2 = time.perf_counter()
            if i >= args.warmup:
                t_rollout += t1 - t0
                t_update += t2 - t1
                lm = batch["batch"]
                completions += lm.completion_mask.shape[0]
                gen_tokens += int(lm.completion_mask.sum())
                prompt_tokens += int(lm.attention_mask.sum()) - int(lm.completion_mask.sum())
                reward_sum += float(batch["scores"].sum())
        total = t_rollout + t_update
        c = obj.policy.config
        print(f"gaf_rloo completions_per_s={completions / total:.1f} "
              f"rollout_share={t_rollout / total:.3f} update_share={t_update / total:.3f} "
              f"mean_completion_tokens={gen_tokens / completions:.1f} "
              f"prompt_tokens={prompt_tokens // k} mean_reward={reward_sum / completions:.4f} "
              f"last_loss={loss.item():.4f} steps={args.steps} warmup={args.warmup} "
              f"prompts_per_step={obj.batch_size} k={k} max_new_tokens={obj.config.max_new_tokens} "
              f"temperature={obj.temperature:g} beta={obj.config.beta:g} lr={spec.train.lr:g} "
              f"reward={args.reward} tokenizer={c.tokenizer} "
              f"params={sum(q.numel() for q in params)} threads={torch.get_num_threads()} "
              f"wall_s={total:.2f}")
        if not args.no_cost:
            cost = step_cost.measure(
                lambda: update(obj, optimizer, params, spec, obj.train_batch(n - 1)),
                units=args.steps, seconds=total, inference=False, calls=1)
            print(step_cost.line("gaf_rloo", cost, "iteration"))


if __name__ == "__main__":
    main()
