"""Reward-model training pairs/s: K-ranked batches against the pairwise expansion.

    python benchmarks/reward_model_throughput.py [STEPS] [K] [PROMPTS_PER_STEP] [--no-cost]
                                                 [--write-pairs PAIRS.jsonl]

A gpt2-reward model (gpt2-tiny shape, sentiment-bpe) trains on rankings of K
completions of sentiment-task prompts (defaults: 30 steps, K = 4, 16 prompts a step).
The same pairs are trained two ways, alternating step by step:

* ``ranked``: what the ``reward`` objective does: each prompt's K responses are scored
  once (K sequences) and its C(K, 2) pairs are formed from those scores;
* ``pairwise``: what a pairwise trainer does with the same data expanded to C(K, 2)
  ``(chosen, rejected)`` rows: 2·C(K, 2) sequences per prompt.

Both compute the same loss (``ranked_reward_loss``) with AdamW; it prints the pairs/s
of each and their ratio::

    reward_model ranked_pairs_per_s=… pairwise_pairs_per_s=… ratio=…

then (unless ``--no-cost``) the cost of each way (``benchmarks/step_cost.py``)::

    reward_model_ranked_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… …
    reward_model_pairwise_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… …

the unit being one more step of that way on a newly drawn batch, ``STEPS`` units in that
way's timed seconds. The drawn batches' padded lengths vary, so ``gflop_per_unit`` times
``STEPS`` is the timed FLOPs only approximately, taken as the mean step.

``--write-pairs PAIRS.jsonl`` writes, instead of timing, ``STEPS`` batches drawn as the
timed loop draws them (the same seed, prompts and completions; one ``{"prompt",
"chosen", "rejected"}`` object per pair, ``STEPS * PROMPTS_PER_STEP * C(K, 2)`` lines,
step by step): the data of the TRL peer, ``benchmarks/trl_reward_peer.py``, which trains ``RewardTrainer`` on them in
batches of ``PROMPTS_PER_STEP * C(K, 2)`` rows, the same pairs a step as here.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import sys
import time
from pathlib import Path

import torch

import gaf
from gaf.plugins.rlhf.losses import ranked_reward_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402


def main(steps: int = 30, k: int = 4, per_step: int = 16, write_pairs: str = "",
         cost: bool = True) -> None:
    torch.manual_seed(0)
    random.seed(0)
    task = gaf.create("task", "sentiment")
    examples = task.sft_examples("train")
    prompts = sorted({e.prompt for e in examples})
    completions = sorted({e.completion for e in examples})
    pairs = list(itertools.combinations(range(k), 2))
    if write_pairs:  # batches drawn as the timed loop draws them
        with Path(write_pairs).open("w") as f:
            for _ in range(steps):
                batch = [(random.choice(prompts), random.sample(completions, k))
                         for _ in range(per_step)]
                for p, ys in batch:
                    for i, j in pairs:
                        f.write(json.dumps({"prompt": p, "chosen": ys[i],
                                            "rejected": ys[j]}) + "\n")
        return
    rm = gaf.create("reward", "gpt2-reward")
    opt = torch.optim.AdamW(rm.parameters(), lr=1e-4)

    def step(ranked: bool) -> float:
        batch = [(random.choice(prompts), random.sample(completions, k)) for _ in range(per_step)]
        t0 = time.perf_counter()
        if ranked:
            r = rm.scores(rm.prepare([p for p, ys in batch for _ in ys],
                                     [y for _, ys in batch for y in ys])).view(per_step, k)
            rw = torch.stack([r[:, i] for i, _ in pairs], 1).flatten()
            rl = torch.stack([r[:, j] for _, j in pairs], 1).flatten()
        else:
            rows_p = [p for p, _ in batch for _ in pairs]
            rw = rm.scores(rm.prepare(rows_p, [ys[i] for _, ys in batch for i, _ in pairs]))
            rl = rm.scores(rm.prepare(rows_p, [ys[j] for _, ys in batch for _, j in pairs]))
        group = torch.arange(per_step).repeat_interleave(len(pairs))
        loss = ranked_reward_loss(rw, rl, group, per_step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step(True), step(False)  # warm-up
    t = {True: 0.0, False: 0.0}
    for _ in range(steps):
        for ranked in (True, False):
            t[ranked] += step(ranked)
    n_pairs = steps * per_step * len(pairs)
    ranked_ps, pairwise_ps = n_pairs / t[True], n_pairs / t[False]
    print(f"reward_model ranked_pairs_per_s={ranked_ps:.1f} pairwise_pairs_per_s="
          f"{pairwise_ps:.1f} ratio={ranked_ps / pairwise_ps:.2f} k={k} steps={steps} "
          f"prompts_per_step={per_step} threads={torch.get_num_threads()}")
    if cost:
        for ranked, way in ((True, "ranked"), (False, "pairwise")):
            row = step_cost.measure(functools.partial(step, ranked), units=steps,
                                    seconds=t[ranked], inference=False)
            print(step_cost.line(f"reward_model_{way}", row, "step"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("steps", nargs="?", type=int, default=30)
    ap.add_argument("k", nargs="?", type=int, default=4)
    ap.add_argument("per_step", nargs="?", type=int, default=16)
    ap.add_argument("--write-pairs", default="", metavar="PAIRS.jsonl")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost pass")
    a = ap.parse_args()
    main(a.steps, a.k, a.per_step, a.write_pairs, cost=not a.no_cost)
