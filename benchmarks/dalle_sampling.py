"""Image tokens per second of ``dalle`` sampling: the default token model (random
weights), 16 captions, 64 image tokens each after 24 text tokens and BOS, guidance 3
(both halves in one batch of 32 rows with their own caches), top-k 32.

    python benchmarks/dalle_sampling.py [RUNS]          (RUNS: 5)

The peer, ``benchmarks/dalle_transformers_peer.py`` (run it in the peer venv), samples
the same shape with transformers' ``GPT2LMHeadModel.generate`` (its classifier-free
guidance runs the unconditional branch as a second forward pass per token). One warm-up
call, then ``RUNS`` timed calls; prints the median.

Prints ``gaf_dalle image_tokens_per_s=<f> params=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gaf.plugins.lm.samplers import TopK, TopKConfig
from gaf.plugins.t2i.tokens.dalle import DalleTransformer
from gaf.plugins.t2i.tokens.sampling import sample_codes

BATCH, GUIDANCE, TOP_K = 16, 3.0, 32
CAPTIONS = ["a red circle above a blue square", "bottom right: a small yellow cross",
            "a large green diamond to the left of a cyan triangle", "a magenta square"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", type=int, default=5)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
