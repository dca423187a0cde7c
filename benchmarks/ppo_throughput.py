"""PPO speed: rollout tokens/s and update samples/s of the ``ppo`` objective.

    python benchmarks/ppo_throughput.py [ROLLOUTS] [ROLLOUT_SIZE] [NEW_TOKENS] [--no-cost]

Builds the ``ppo`` objective on gpt2-tiny (sentiment-bpe, as built: no SFT stage) with
the task's true reward and a critic copied from the policy, then, for ROLLOUTS
rollouts (default 4 of 64 prompts, 64 new tokens each), times separately:

* ``rollout``: sampling with the KV cache (ancestral, temperature 1), then the scoring
  pass (policy, reference and critic log-probs/values of the drawn tokens, the
  reward, GAE and whitening): generated completion tokens per second, of sampling
  alone and of the whole rollout;
* ``update``: the PPO minibatch steps over the rollout (4 epochs × 4 minibatches of 16,
  policy and critic forward/backward, clipping, AdamW): sequences per second.

An untrained policy rarely samples EOS, so nearly every completion runs to
NEW_TOKENS tokens: the numbers are for full-length rollouts. It prints::

    ppo rollout_tokens_per_s=… sampling_tokens_per_s=… update_samples_per_s=… …

then (unless ``--no-cost``) the cost of each figure (``benchmarks/step_cost.py``; the
shares are of one profiled call of each unit)::

    ppo_rollout_cost unit=rollout gflop_per_unit=… achieved_gflops=… conv=… …
    ppo_sampling_cost unit=sampling gflop_per_unit=… achieved_gflops=… conv=… …
    ppo_update_cost unit=minibatch gflop_per_unit=… achieved_gflops=… conv=… …

``rollout``: one more rollout's ``train_batch`` (sampling and scoring), ``ROLLOUTS``
units in the rollout seconds; ``sampling``: one more sampling call on the rollout's
prompts, ``ROLLOUTS`` units in the sampling seconds; ``minibatch``: one more
:func:`update` on a minibatch of the last rollout (``train_batch`` then the step),
``ROLLOUTS × 16`` units in the update seconds. Each is exact only while every rollout
has the same lengths (every completion running to NEW_TOKENS, as an untrained policy's
nearly all do); otherwise ``gflop_per_unit`` times the units is taken as the mean.

TRL has no PPO trainer to compare against (it removed PPO); docs/benchmarks.md
records the figures.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.train import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402


def update(obj: Any, optimizer: Any, params: list[Any], batch: dict[str, Any]) -> None:
    """One PPO minibatch step: loss, backward, gradient clipping at 1.0, AdamW."""
    loss, _ = obj.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


def main(rollouts: int = 4, size: int = 64, new_tokens: int = 64, cost: bool = True) -> None:
    from gaf.plugins.rlhf.ppo import PPO

    mini = 16
    spec = resolve(objective="ppo", sets=[
        "device=\"cpu\"", "progress=false", "objective.sft_steps=0",
        f"objective.max_new_tokens={new_tokens}", f"train.batch_size={mini}",
        f"objective.num_mini_batches={size // mini}", "objective.ppo_epochs=4",
        f"train.steps={4 * (size // mini) * rollouts}"])
    torch.manual_seed(0)
    obj = PPO(spec.objective_config)
    with tempfile.TemporaryDirectory() as tmp:
        obj.setup(RunContext(spec, Path(tmp)))
        params = [p for m in obj.modules().values() for p in m.parameters()]
        optimizer = make_optimizer(spec.train, params)
        per_rollout = obj.updates
        t_sample = t_rollout = t_update = 0.0
        tokens = sampled = samples = 0
        for r in range(rollouts + 1):  # rollout 0 warms up
            prompts = obj.train_prompts[:size]
            t0 = time.perf_counter()
            rollout = obj.sample(prompts, r)
            t1 = time.perf_counter()
            obj.buffer = None
            batch = obj.train_batch(r * per_rollout)  # samples again and scores
            t2 = time.perf_counter()
            n_tokens = int(batch["buffer"].mask.sum())
            t3 = time.perf_counter()
            for u in range(per_rollout):
                b = batch if u == 0 else obj.train_batch(r * per_rollout + u)
                update(obj, optimizer, params, b)
            t4 = time.perf_counter()
            if r:
                t_sample += t1 - t0
                t_rollout += t2 - t1
                t_update += t4 - t3
                tokens += n_tokens
                sampled += int(rollout.batch.completion_mask.sum())
                samples += per_rollout * mini
            del rollout
        print(f"ppo rollout_tokens_per_s={tokens / t_rollout:.1f} "
              f"sampling_tokens_per_s={sampled / t_sample:.1f} "
              f"update_samples_per_s={samples / t_update:.1f} rollouts={rollouts} "
              f"rollout_size={size} new_tokens={new_tokens} "
              f"mean_completion_tokens={tokens / (rollouts * size):.1f} "
              f"threads={torch.get_num_threads()}")
        if cost:
            last = rollouts * per_rollout  # the last rollout's minibatches, then new rollouts
            minibatches = itertools.cycle(range(last + 1, last + per_rollout))
            draws = itertools.count(rollouts + 1)

            def new_rollout() -> None:
                obj.buffer = None
                obj.train_batch(next(draws) * per_rollout)

            costs = {  # the update first, while the buffer is the last rollout's
                "update": step_cost.measure(
                    lambda: update(obj, optimizer, params, obj.train_batch(next(minibatches))),
                    units=rollouts * per_rollout, seconds=t_update, inference=False, calls=1),
                "sampling": step_cost.measure(lambda: obj.sample(prompts, next(draws)),
                                              units=rollouts, seconds=t_sample,
                                              inference=False, calls=1),
                "rollout": step_cost.measure(new_rollout, units=rollouts, seconds=t_rollout,
                                             inference=False, calls=1)}
            for name, unit in (("rollout", "rollout"), ("sampling", "sampling"),
                               ("update", "minibatch")):
                print(step_cost.line(f"ppo_{name}", costs[name], unit))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rollouts", nargs="?", type=int, default=4)
    ap.add_argument("size", nargs="?", type=int, default=64)
    ap.add_argument("new_tokens", nargs="?", type=int, default=64)
    ap.add_argument("--no-cost", action="store_true", help="skip the cost pass")
    a = ap.parse_args()
    main(a.rollouts, a.size, a.new_tokens, cost=not a.no_cost)
