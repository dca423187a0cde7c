"""Image tokens per second of ``dalle`` sampling: the default token model (random
weights), 16 captions, 64 image tokens each after 24 text tokens and BOS, guidance 3
(both halves in one batch of 32 rows with their own caches), top-k 32.

    python benchmarks/dalle_sampling.py [RUNS] [--no-cost]          (RUNS: 5)

The peer, ``benchmarks/dalle_transformers_peer.py`` (run it in the peer venv), samples
the same shape with transformers' ``GPT2LMHeadModel.generate`` (its classifier-free
guidance runs the unconditional branch as a second forward pass per token). One warm-up
call, then ``RUNS`` timed calls; prints the median.

Prints ``gaf_dalle image_tokens_per_s=<f> params=<n>``, then, unless ``--no-cost``, a
cost line (``benchmarks/step_cost.py``)::

    gaf_dalle_cost unit=call gflop_per_unit=… achieved_gflops=… conv=… … outside=…

The unit is one timed call (generators, ``sample_codes``) again, after the result line;
units = 1 and seconds = the median call's, the call behind ``image_tokens_per_s``. Every
call has the same shapes, so FLOPs(a timed call) = ``gflop_per_unit`` exactly. The cost
pass runs 2 more calls (one counted, one profiled: ``calls=1``); no smaller unit has a
timed call's FLOPs (the decoding steps attend over a growing cache, and the prefill is
no step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from gaf.plugins.lm.samplers import TopK, TopKConfig
from gaf.plugins.t2i.tokens.dalle import DalleTransformer
from gaf.plugins.t2i.tokens.sampling import sample_codes

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402

BATCH, GUIDANCE, TOP_K = 16, 3.0, 32
CAPTIONS = ["a red circle above a blue square", "bottom right: a small yellow cross",
            "a large green diamond to the left of a cyan triangle", "a magenta square"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--no-cost", action="store_true", help="skip the cost line")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = DalleTransformer().eval()
    text = model.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(BATCH)])
    sampler = TopK(TopKConfig(k=TOP_K))

    def once() -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(BATCH)]
        t0 = time.perf_counter()
        codes = sample_codes(model, text, sampler=sampler, guidance=GUIDANCE, generators=gens)
        dt = time.perf_counter() - t0
        assert codes.shape == (BATCH, model.image_tokens)
        return dt

    once()
    median = statistics.median(once() for _ in range(args.runs))
    params = sum(p.numel() for p in model.parameters())
    print(f"gaf_dalle image_tokens_per_s={BATCH * model.image_tokens / median:.1f} "
          f"params={params}")
    if not args.no_cost:
        model.requires_grad_(False)  # (FlopCounterMode's module hooks need it)
        cost = step_cost.measure(once, units=1, seconds=median, inference=True, calls=1)
        print(step_cost.line("gaf_dalle", cost, "call"))


if __name__ == "__main__":
    main()
