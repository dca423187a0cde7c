"""Win rate of one policy against another on the sentiment task, with fresh samples.

    python benchmarks/win_rate.py POLICY REFERENCE [DRAWS] [MAX_NEW_TOKENS]

POLICY and REFERENCE are saved policies (``runs/<dpo run>/policy`` and
``runs/<dpo run>/sft/policy``). For each of the 200 held-out prompts it draws DRAWS
(default 4) completions from each policy with ``top-p`` (p = 0.9), seeds 11, 13, …
for the policy and 12, 14, … for the reference (a run's own evaluation uses other
streams, so this is an independent re-draw), scores them with the task's
ground-truth reward and prints::

    win_rate POLICY draws=800 win_rate=… mean_reward=… reference_mean_reward=…

Ties count ½, as in ``summary.json``.
"""

from __future__ import annotations

import sys

import torch

import gaf


def main(policy_dir: str, reference_dir: str, draws: int = 4, max_new_tokens: int = 64) -> None:
    policy, reference = gaf.load("policy", policy_dir), gaf.load("policy", reference_dir)
    policy.eval()
    reference.eval()
    task = gaf.create("task", "sentiment")
    reward = task.reward()
    prompts = list(task.prompts("eval"))
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
    print(f"win_rate {policy_dir} draws={n} win_rate={sum(wins) / n:.4f} "
          f"mean_reward={sum(ours) / n:.4f} reference_mean_reward={sum(theirs) / n:.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:5]))
