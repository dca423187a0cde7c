"""Imagen cascade sampling throughput on the CPU: the base stage, then super-resolution.

    python benchmarks/imagen_throughput.py [--batch 50] [--steps 25] [--sr-steps 25]
                                           [--repeats 3] [--warmup 1] [--threads 2]
                                           [--without-fast-paths] [--system-malloc]
                                           [--no-cost]

The peer, ``benchmarks/imagen_diffusers_peer.py`` (run it with /tmp/gaf-peers/bin/python),
does the same work with diffusers' ``UNet2DConditionModel`` and ``DDIMScheduler``. Both
scripts build randomly initialised models of the same shapes (seeded; nothing is
downloaded), draw the text states from one seeded generator, run float32, eager (no
torch.compile), under ``torch.inference_mode``, on ``--threads`` threads
(``torch.set_num_threads``), make ``--warmup`` untimed cascade calls and then time
``--repeats`` calls, and report the median.

What is timed: one call of gaf's ``cascade`` pipeline (``CascadePipeline`` of
``gaf.plugins.t2i.imagen.pipeline``, the code a user's ``pipe(captions)`` runs) on
``--batch`` captions, with the ``imagen`` objective's two default noise models:

* **base**: ``gaf.create("noise-model", "unet", **BASE_UNET, context_dim=64)``, 3x16x16
  pixels, ``--steps`` DDIM steps, classifier-free guidance 3 (the unconditional and
  conditional halves in one batched call of ``2 * batch`` rows per step);
* **super-resolution**: ``gaf.create("noise-model", "unet", **SR_UNET, context_dim=64)``,
  3x32x32, the base images upsampled (bilinear) and noise-augmented to level
  ``aug_level = 0.25`` (cosine schedule, one noise row per image from its own generator)
  on 3 concatenated input channels with their level in the time embedding,
  ``--sr-steps`` DDIM steps, guidance 3 (batched as the base).

Both stages: ``gaf.create("scheduler", "ddim", prediction_type="v_prediction")`` (linear
betas, 1000 training steps, ``leading`` spacing; the UNets' default prediction type is
``v_prediction``), rebuilt by the pipeline with Imagen's dynamic thresholding
(``thresholding="dynamic"`` and ``sr_thresholding="dynamic"``, both stages, as the peer:
percentile 0.995, no upper bound, diffusers' ``sample_max_value=1e6``; the thresholding
mode changes one element-wise step, not the cost of the networks); each stage's output is clamped to [-1, 1]. The per-stage split
is taken at the conditioner's second call, the start of the super-resolution stage's
conditioning (its scheduler rebuild and initial noise, both tiny, fall in the base's
share); the peer splits at the same point of its loop.

Not timed, on either side: the frozen text encoder. Its states are a fixed random tensor
(batch, 24 tokens, 64) returned by :class:`FixedConditioner`, a stand-in with the
conditioner interface the pipeline calls (``__call__(captions)``, ``null(n)``: zeros of
the same shape, Imagen's empty caption); the pipeline's own work around it (the
``[null; cond]`` batch, ``UNet.cache_context``, the pooled text, noise augmentation, the
DDIM loop with thresholding) is inside the timing.

What a gaf user's sampling does, and the peer (written as diffusers' pipelines do) does
not: ``UNet.cache_context`` projects the text states to every cross-attention layer's
keys and values once per stage and pools them once; the shared timestep and the shared
noise level are embedded once per step for the whole batch; GroupNorm on the channels-last
maps under 32x32 is computed from channel sums, with each ResBlock's per-image time shift
folded into it, and attention at short key lengths runs as GEMMs per head (the module docs
of ``gaf.plugins.diffusion.unet.group_norm`` and ``.attention``). What gaf does and
diffusers cannot: the efficient UNet's ``skip_scale`` (every skip connection multiplied
by 1/sqrt(2) before it is concatenated; diffusers has no such option, so the peer skips
that element-wise work).

``--without-fast-paths`` switches off the UNet's two inference-only paths for the run
(``GroupNorm32``'s sums path, by setting ``group_norm.SUMS_MAX_BYTES`` to -1, and
``attend``'s GEMMs per head, by setting ``attention.KEYS_MAX`` to 0): the ablation of
what they are worth, measured beside the default in the same session.

Like the ``gaf`` command, the script first calls ``gaf.tune_malloc()`` (glibc's mmap and
trim thresholds fixed, so that the activations freed at each step are reused rather than
returned to the system and page-faulted again; ``gaf.malloc``'s module docs);
``--system-malloc`` leaves glibc's own thresholds, for the ablation. The peer's
``--tune-malloc`` applies the same two settings to the peer. Both print the process's
minor page faults, system CPU seconds and peak resident memory.

Prints one JSON line: ``name`` (``gaf_imagen``), ``fast_paths`` (false with
``--without-fast-paths``), ``samples_per_s`` (batch over the median
cascade time), ``base_s`` / ``sr_s`` / ``total_s`` (medians, seconds), ``runs`` (every
timed call), the shapes and options, ``base_params`` / ``sr_params`` and the torch
version and thread count, and ``cost`` (``benchmarks/step_cost.py``), after every other
field is taken: ``{"samples_per_s": {"unit", "units", "gflop_per_unit",
"achieved_gflops", "shares"}}``, the FLOPs of one unit, the rate that the median cascade
call achieved (``gflop_per_unit`` x units over ``total_s``), and the operator groups'
shares of the unit's profiled time (the unit run three more times: once counted, twice
profiled). The unit is the same cascade call with fewer steps: with ``u`` the greatest
common divisor of ``--steps`` and ``--sr-steps``, a call of ``steps/u`` base and
``sr_steps/u`` super-resolution steps (``cascade_1+1_steps`` at the defaults), and
units = ``u``. Every DDIM step of a stage has the same work, but each call also does its
per-call work once (the conditioner lookup, ``cache_context`` and the pooled text for
each stage, the upsampling and the noise augmentation), which the ``u`` units count
``u`` times: ``gflop_per_unit`` x units exceeds the timed call's FLOPs by ``u - 1``
times that per-call work, small beside the steps' (the test bounds it).
``--no-cost`` leaves ``cost`` out.

Protocol: on an otherwise idle machine (with two OpenMP threads on two cores, another
busy process slows every op several-fold), run this script and the peer alternately at
least 3 times each (gaf, peer, gaf, peer, gaf, peer), with the load average beside each
run, and report the ratio of the medians of ``samples_per_s`` (and of the per-stage
times)::

    for i in 1 2 3; do uptime; python benchmarks/imagen_throughput.py; uptime; \\
        /tmp/gaf-peers/bin/python benchmarks/imagen_diffusers_peer.py --tune-malloc; done

(``--tune-malloc`` gives the peer the allocator settings this script applies: the
like-for-like comparison; without it the peer runs on glibc's own thresholds.)

Measured figures go to docs/benchmarks.md with the commit and the commands; no timing
is asserted by any test (tests/benchmarks/test_imagen_throughput.py runs this script at
a tiny size and checks its output's form and parameter counts only).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import gaf
from gaf.plugins.diffusion.unet import attention, group_norm
from gaf.plugins.t2i.imagen.objective import BASE_UNET
from gaf.plugins.t2i.imagen.pipeline import CascadePipeline, CascadeStage
from gaf.plugins.t2i.imagen.super_resolution import SR_UNET

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402  (this folder)

TOKENS, WIDTH = 24, 64                # text states per caption: tokens x width
BASE_SHAPE, SR_SHAPE = (3, 16, 16), (3, 32, 32)
GUIDANCE = SR_GUIDANCE = 3.0
AUG_LEVEL = 0.25
CALL = {"guidance": GUIDANCE, "sr_guidance": SR_GUIDANCE, "aug_level": AUG_LEVEL,
        "thresholding": "dynamic", "sr_thresholding": "dynamic"}


def text_states(batch: int) -> torch.Tensor:
    """The stand-in text encoder states ``(batch, 24, 64)``: the peer's tensor (the same
    seeded generator and draw)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, TOKENS, WIDTH, generator=g)


class FixedConditioner:
    """A frozen text encoder stand-in: caption ``i`` of :func:`captions` maps to row ``i``
    of fixed states; ``null(n)`` is zero states (Imagen's empty caption)."""

    condition_key = "caption"
    trainable = False

    def __init__(self, states: torch.Tensor):
        self.states = states
        self.rows = {caption: i for i, caption in enumerate(captions(len(states)))}
        self.calls: list[float] = []  # perf_counter at each call (the stage split)

    def __call__(self, conditions: Sequence[str]) -> torch.Tensor:
        self.calls.append(time.perf_counter())
        index = torch.tensor([self.rows[c] for c in conditions])
        return self.states.index_select(0, index)

    def null(self, n: int) -> torch.Tensor:
        return torch.zeros(n, *self.states.shape[1:])


def captions(batch: int) -> list[str]:
    return [f"caption {i}" for i in range(batch)]


def build(batch: int) -> tuple[CascadePipeline, FixedConditioner]:
    """The two-stage cascade with the objective's default UNets (random weights, seed 0)."""
    torch.manual_seed(0)
    base = gaf.create("noise-model", "unet", **BASE_UNET, context_dim=WIDTH).eval()
    sr = gaf.create("noise-model", "unet", **SR_UNET, context_dim=WIDTH).eval()
    assert base.prediction_type == sr.prediction_type == "v_prediction"
    sched = gaf.create("scheduler", "ddim", prediction_type="v_prediction")
    cond = FixedConditioner(text_states(batch))
    pipe = CascadePipeline([CascadeStage(base, sched, BASE_SHAPE, cond),
                            CascadeStage(sr, sched, SR_SHAPE, cond, upsample="bilinear")])
    return pipe, cond


def usage() -> dict:
    """Page faults, system seconds and peak memory of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"minflt": r.ru_minflt, "sys_s": round(r.ru_stime, 2),
            "maxrss_mb": round(r.ru_maxrss / 1024)}


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the base stage")
    p.add_argument("--sr-steps", type=int, default=25, help="DDIM steps of the SR stage")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--without-fast-paths", action="store_true",
                   help="switch off GroupNorm from channel sums and attention as GEMMs")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's own malloc thresholds (no gaf.tune_malloc)")
    p.add_argument("--no-cost", action="store_true",
                   help="leave out the cost pass (FLOPs and the profiler's shares)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.system_malloc:
        gaf.tune_malloc()
    limits = group_norm.SUMS_MAX_BYTES, attention.KEYS_MAX
    if args.without_fast_paths:
        group_norm.SUMS_MAX_BYTES, attention.KEYS_MAX = -1, 0
    try:
        return run(args)
    finally:
        group_norm.SUMS_MAX_BYTES, attention.KEYS_MAX = limits


def run(args: argparse.Namespace) -> dict:
    pipe, cond = build(args.batch)
    caps = captions(args.batch)
    options = {**CALL, "steps": args.steps, "sr_steps": args.sr_steps}
    for _ in range(args.warmup):
        pipe(caps, seed=0, **options)
    runs = []
    for _ in range(args.repeats):
        cond.calls.clear()
        t0 = time.perf_counter()
        images = pipe(caps, seed=0, **options)
        t1 = time.perf_counter()
        assert images.shape == (args.batch, *SR_SHAPE) and len(cond.calls) == 2
        runs.append({"base_s": cond.calls[1] - t0, "sr_s": t1 - cond.calls[1],
                     "total_s": t1 - t0})
    med = {k: statistics.median(r[k] for r in runs) for k in ("base_s", "sr_s", "total_s")}
    result = {"name": "gaf_imagen", "fast_paths": not args.without_fast_paths,
              "samples_per_s": args.batch / med["total_s"], **med,
              "runs": runs, "batch": args.batch, "steps": args.steps,
              "sr_steps": args.sr_steps, "guidance": GUIDANCE, "sr_guidance": SR_GUIDANCE,
              "aug_level": AUG_LEVEL, "thresholding": "dynamic",
              "base_shape": list(BASE_SHAPE), "sr_shape": list(SR_SHAPE),
              "text_states": [TOKENS, WIDTH], "repeats": args.repeats,
              "warmup": args.warmup, "base_params": params(pipe.stages[0].noise_model),
              "sr_params": params(pipe.stages[1].noise_model), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "tune_malloc": not args.system_malloc,
              **usage()}
    if not args.no_cost:
        u = math.gcd(args.steps, args.sr_steps)
        fewer = {**options, "steps": args.steps // u, "sr_steps": args.sr_steps // u}
        cost = step_cost.measure(lambda: pipe(caps, seed=0, **fewer), units=u,
                                 seconds=med["total_s"], inference=True)
        unit = f"cascade_{fewer['steps']}+{fewer['sr_steps']}_steps"
        result["cost"] = {"samples_per_s": {"unit": unit, "units": u, **cost}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
