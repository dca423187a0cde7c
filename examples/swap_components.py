"""Swap one component for another in a script: the same policy, four decoding samplers,
judged by the task's ground-truth reward on validation prompts (an example that
compares settings never reads the eval split).

    python examples/swap_components.py [RUN_DIR]     # default: runs/latest

Without a trained run it trains a short SFT run first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import gaf
from gaf.plugins.alignment.tuning import tuning_prompts


def main(run_dir: str | None = None) -> None:
    path = Path(run_dir or "runs/latest")
    if not (path / "policy").is_dir():
        path, _ = gaf.run("sft", policy="gpt2-tiny", sets=["train.steps=400"])
    policy = gaf.load("policy", path).eval()
    task = gaf.create("task", "sentiment")
    reward = task.reward()
    prompts = tuning_prompts(task, 48)
    for name in gaf.names("sampler"):
        sampler = gaf.create("sampler", name)
        with torch.no_grad():
            completions = policy.generate(prompts, sampler=sampler, max_new_tokens=48,
                                          generator=torch.Generator().manual_seed(0))
        score = float(reward(prompts, completions).mean())
        print(f"{name:12s} mean reward {score:.3f}   e.g. {prompts[0]!r} ->{completions[0]!r}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
