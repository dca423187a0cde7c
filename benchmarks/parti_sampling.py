"""Image tokens per second of ``parti`` sampling: the default ``parti`` token model
(random weights, seeded), 16 captions, the 64 image codes of the default 8 x 8 grid,
the objective's default guidance (``fd_guidance``, 2) and sampler (top-k, k = 8).

    python benchmarks/parti_sampling.py [RUNS] [--threads 2] [--no-cost]      (RUNS: 80)

The peer, ``benchmarks/parti_transformers_peer.py`` (run it with
``/tmp/gaf-peers/bin/python``), samples the same shape with transformers'
``EncoderDecoderModel.generate`` (a pre-LayerNorm RoBERTa encoder and a GPT-2 decoder
with cross-attention: gaf's model block for block); its docstring lists what differs.

What is timed: one call of :func:`gaf.plugins.t2i.tokens.sampling.sample_codes` (the
loop ``gaf sample`` and the objective's evaluation run) on the 16 captions' token ids:
the encoder over both guidance halves (32 rows of 24 tokens; the unconditional half's
states replaced by the learned null context), each block's cross-attention keys and
values projected once, then 64 decoder passes of 32 rows (BOS, then one code per pass,
the self-attention keys and values in a preallocated ``KVBuffer``), the guided logits
``l0 + s (lc - l0)`` of each token and one top-k draw per row with that row's own
generator. Not timed: building the model, tokenising the captions (done once) and
making the per-row generators. float32, eager, ``torch.no_grad`` (``sample_codes``'s
own), ``--threads`` threads. One warm-up call, then ``RUNS`` timed calls; prints the
median.

Protocol: on an otherwise idle machine, run this script and the peer alternately, at
least 3 times each, with the load average before and after, and report the ratio of
the medians of ``image_tokens_per_s``::

    for i in 1 2 3; do uptime; python benchmarks/parti_sampling.py; uptime; \\
        /tmp/gaf-peers/bin/python benchmarks/parti_transformers_peer.py; done

Prints one line: ``gaf_parti image_tokens_per_s=<f> params=<n> batch=16
image_tokens=64 text_tokens=24 guidance=2 top_k=8 runs=<n> threads=<n>
codes_sum=<n>`` (``codes_sum``: the sum of the last call's codes, a checksum that the
seeds fix). Then, unless ``--no-cost``, a cost line (``benchmarks/step_cost.py``)::

    gaf_parti_cost unit=call gflop_per_unit=… achieved_gflops=… conv=… … outside=…

The unit is one timed call (generators, ``sample_codes``) again, after the result line;
units = 1 and seconds = the median call's, the call behind ``image_tokens_per_s``. Every
call has the same shapes, so FLOPs(a timed call) = ``gflop_per_unit`` exactly. The cost
pass runs 2 more calls (one counted, one profiled: ``calls=1``, the profiler's overhead
on a call's many small operators being large). Measured figures go to
docs/benchmarks.md with the commit and the commands; tests/benchmarks/test_parti_sampling.py
runs this script with one timed call and checks its shapes and output, and at 2 captions
that the cost line's unit has a timed call's FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from gaf.plugins.lm.samplers import TopK, TopKConfig
from gaf.plugins.t2i.tokens.objective import PartiT2I, TokenT2IConfig
from gaf.plugins.t2i.tokens.parti import PartiTransformer
from gaf.plugins.t2i.tokens.sampling import sample_codes

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402

BATCH = 16
#: the objective's defaults: the guidance of its headline row and its sampler's k
GUIDANCE = TokenT2IConfig().fd_guidance
TOP_K = PartiT2I.component_defaults["sampler"]["k"]
CAPTIONS = ["a red circle above a blue square", "bottom right: a small yellow cross",
            "a large green diamond to the left of a cyan triangle", "a magenta square"]


def captions() -> list[str]:
    """The ``BATCH`` captions sampled: ``CAPTIONS`` repeated in order."""
    return [CAPTIONS[i % len(CAPTIONS)] for i in range(BATCH)]


def build() -> PartiTransformer:
    """The default ``parti`` token model with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    return PartiTransformer().eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cost", action="store_true", help="skip the cost line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build()
    text = model.tokenize(captions())
    sampler = TopK(TopKConfig(k=TOP_K))
    last: list[torch.Tensor] = []

    def once() -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(BATCH)]
        t0 = time.perf_counter()
        codes = sample_codes(model, text, sampler=sampler, guidance=GUIDANCE,
                             generators=gens)
        dt = time.perf_counter() - t0
        assert codes.shape == (BATCH, model.image_tokens)
        last[:] = [codes]
        return dt

    once()
    median = statistics.median(once() for _ in range(args.runs))
    params = sum(p.numel() for p in model.parameters())
    print(f"gaf_parti image_tokens_per_s={BATCH * model.image_tokens / median:.1f} "
          f"params={params} batch={BATCH} image_tokens={model.image_tokens} "
          f"text_tokens={text.shape[1]} guidance={GUIDANCE:g} top_k={TOP_K} "
          f"runs={args.runs} threads={torch.get_num_threads()} "
          f"codes_sum={int(last[0].sum())}")
    if not args.no_cost:
        model.requires_grad_(False)  # (FlopCounterMode's module hooks need it)
        cost = step_cost.measure(once, units=1, seconds=median, inference=True, calls=1)
        print(step_cost.line("gaf_parti", cost, "call"))


if __name__ == "__main__":
    main()
