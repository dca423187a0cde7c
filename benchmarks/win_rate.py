"""Win rate of one policy against another on the sentiment task, with fresh samples.

    python benchmarks/win_rate.py POLICY REFERENCE [DRAWS] [MAX_NEW_TOKENS] [--split eval]

POLICY and REFERENCE are saved policies (``runs/<dpo run>/policy`` and
``runs/<dpo run>/sft/policy``). For each of the 200 held-out prompts of the split
(default **validation**: this script compares settings; pass ``--split eval`` only to
re-draw a headline figure) it draws DRAWS (default 4) completions from each policy
with ``top-p`` (p = 0.9), seeds 11, 13, … for the policy and 12, 14, … for the
reference (a run's own evaluation uses other streams, so this is an independent
re-draw), scores them with the task's ground-truth reward and prints::

    win_rate POLICY split=validation draws=800 win_rate=… mean_reward=…
        reference_mean_reward=…

Ties count ½, as in ``summary.json``.
"""

from __future__ import annotations

import sys

import torch

import gaf
from gaf.plugins.alignment.tuning import TUNING_SPLIT


def main(policy_dir: str, reference_dir: str, draws: int = 4, max_new_tokens: int = 64,
         split: str = TUNING_SPLIT) -> dict[str, float]:
    policy, reference = gaf.load("policy", policy_dir), gaf.load("policy", reference_dir)
    task = gaf.create("task", "sentiment")
    reward = task.reward()
    prompts = list(task.prompts(split))
    sampler = gaf.create("sampler", "top-p", p=0.9)
    wins: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    for k in range(draws):
        seed = 11 + 2 * k
        with torch.no_grad():
            a = policy.generate(prompts, sampler=sampler, max_new_tokens=max_new_tokens,
                                generator=torch.Generator().manual_seed(seed))
            b = reference.generate(prompts, sampler=sampler, max_new_tokens=max_new_tokens,
                                   generator=torch.Generator().manual_seed(seed + 1))
        ra, rb = reward(prompts, a).tolist(), reward(prompts, b).tolist()
        wins += [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(ra, rb)]
        ours += ra
        theirs += rb
    n = len(wins)
    out = {"win_rate": sum(wins) / n, "mean_reward": sum(ours) / n,
           "reference_mean_reward": sum(theirs) / n}
    print(f"win_rate {policy_dir} split={split} draws={n} win_rate={out['win_rate']:.4f} "
          f"mean_reward={out['mean_reward']:.4f} "
          f"reference_mean_reward={out['reference_mean_reward']:.4f}")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    split = TUNING_SPLIT
    if "--split" in args:
        at = args.index("--split")
        split = args[at + 1]
        del args[at:at + 2]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    main(args[0], args[1], *(int(a) for a in args[2:4]), split=split)
