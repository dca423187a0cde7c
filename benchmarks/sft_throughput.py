"""SFT training throughput of gpt2-tiny on the embedded sentiment task.

    python benchmarks/sft_throughput.py [STEPS] [BATCH]

Times optimiser steps of the `sft` objective (after 5 warm-up steps) on the CPU and
prints ``gaf_sft examples_per_s=… tokens_per_s=…``. The first slice has no peer
script; the DPO and LDM benchmarks (later issues) compare with TRL and diffusers.
"""

from __future__ import annotations

import sys
import time

import torch

import gaf
from gaf.train import TrainConfig, make_optimizer


def main(steps: int = 50, batch: int = 16) -> None:
    torch.manual_seed(0)
    policy = gaf.create("policy", "gpt2-tiny")
    examples = gaf.create("task", "sentiment").sft_examples("train")
    opt = make_optimizer(TrainConfig(lr=1e-3), policy.parameters())
    batches = [examples[i * batch:(i + 1) * batch] for i in range(steps + 5)]
    tokens = 0
    for i, chunk in enumerate(batches):
        if i == 5:
            start, tokens = time.perf_counter(), 0
        b = policy.prepare([e.prompt for e in chunk], [e.completion for e in chunk])
        lp = policy.completion_logprobs(b)
        loss = -lp.token_logps.sum() / lp.mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b.attention_mask.sum())
    elapsed = time.perf_counter() - start
    print(f"gaf_sft examples_per_s={steps * batch / elapsed:.1f} "
          f"tokens_per_s={tokens / elapsed:.0f} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
