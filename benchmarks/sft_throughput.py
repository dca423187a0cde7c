"""SFT training throughput of gpt2-tiny on the embedded sentiment task.

    python benchmarks/sft_throughput.py [STEPS] [BATCH] [--tokenizer byte] [--warmup 5]
                                        [--no-cost] [--write-examples EXAMPLES.jsonl]

Times optimiser steps of the ``sft`` loss (completion tokens only, the prompt masked:
``policy.completion_logprobs``, mean NLL per completion token, fused AdamW at lr 1e-3)
on the CPU, after ``--warmup`` untimed steps, over the first ``STEPS`` batches of
``BATCH`` training examples in order, and prints ``gaf_sft examples_per_s=…
tokens_per_s=…``. ``--tokenizer`` picks gpt2-tiny's tokenizer (default: its own,
``sentiment-bpe``; ``byte`` for the peer comparison).

Then (unless ``--no-cost``) it prints the timed steps' cost (``benchmarks/step_cost.py``):
``gaf_sft_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… …``, the unit being
one more step of the loop (the timed batches again, in order, from the first), ``STEPS``
units in the timed seconds. The batches' padded lengths vary, so ``gflop_per_unit`` (the
first timed batch's step) times ``STEPS`` is the timed FLOPs only approximately (exactly
when one step is timed), taken as the mean step.

``--write-examples`` writes, instead of timing, the ``{"prompt", "completion"}`` rows the
timed loop would train on (warm-up batches included, in order), for the peer
``benchmarks/trl_sft_peer.py`` (TRL's ``SFTTrainer``): run both with ``--tokenizer
byte --warmup 0`` so that both time every step, the first one included, on the same
examples (docs/benchmarks.md § SFT).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import gaf
from gaf.train import TrainConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402


def step(policy: Any, opt: Any, chunk: Sequence[Any]) -> tuple[torch.Tensor, int]:
    """One SFT step on the examples ``chunk``: ``prepare``, the completion log-probs, the
    token-mean NLL, backward, the optimiser step; ``(loss, real tokens in the batch)``."""
    b = policy.prepare([e.prompt for e in chunk], [e.completion for e in chunk])
    lp = policy.completion_logprobs(b)
    loss = -lp.token_logps.sum() / lp.mask.sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss, int(b.attention_mask.sum())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=50)
    p.add_argument("batch", nargs="?", type=int, default=16)
    p.add_argument("--tokenizer", default="", help="gpt2-tiny's tokenizer (default: its own)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--no-cost", action="store_true", help="skip the cost pass")
    p.add_argument("--write-examples", default="", metavar="EXAMPLES.jsonl")
    args = p.parse_args(argv)
    examples = gaf.create("task", "sentiment").sft_examples("train")
    n = args.steps + args.warmup
    batches = [examples[i * args.batch:(i + 1) * args.batch] for i in range(n)]
    if args.write_examples:
        with Path(args.write_examples).open("w") as f:
            for chunk in batches:
                for e in chunk:
                    f.write(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n")
        return
    torch.manual_seed(0)
    options = {"tokenizer": args.tokenizer} if args.tokenizer else {}
    policy = gaf.create("policy", "gpt2-tiny", **options)
    opt = make_optimizer(TrainConfig(lr=1e-3), policy.parameters())
    tokens = 0
    start = time.perf_counter()
    for i, chunk in enumerate(batches):
        if i == args.warmup:
            start, tokens = time.perf_counter(), 0
        loss, real = step(policy, opt, chunk)
        tokens += real
    elapsed = time.perf_counter() - start
    print(f"gaf_sft examples_per_s={args.steps * args.batch / elapsed:.1f} "
          f"tokens_per_s={tokens / elapsed:.0f} steps={args.steps} warmup={args.warmup} "
          f"last_loss={loss.item():.4f} tokenizer={policy.config.tokenizer} "
          f"params={sum(q.numel() for q in policy.parameters())} "
          f"threads={torch.get_num_threads()}")
    if not args.no_cost:
        timed = itertools.cycle(batches[args.warmup:])
        cost = step_cost.measure(lambda: step(policy, opt, next(timed)), units=args.steps,
                                 seconds=elapsed, inference=False)
        print(step_cost.line("gaf_sft", cost, "step"))


if __name__ == "__main__":
    main()
