"""LDM UNet throughput on the CPU: DDIM sampling with classifier-free guidance and training.

    python benchmarks/ldm_throughput.py [DDIM_STEPS] [--fused-attention] [--system-malloc]
                                        [--no-cost]

The same work as the peer script ``/work/shared/peers/diffusers_ldm_bench.py`` (diffusers'
``UNet2DConditionModel`` + ``DDIMScheduler``), measured the same way (no warm-up call,
so the first call's one-time set-up cost is inside both timings):

* the UNet: latents 4x8x8, channels (64, 128), one ResBlock per level, cross-attention
  (8 heads, 16 context tokens x 64) at full resolution and in the middle block;
* sampling: 50 DDIM steps (linear betas, no clipping), batch 16 with classifier-free
  guidance ``eps = e_u + 3 (e_c - e_u)``, the unconditional and conditional halves in one
  batched call of 32 per step, under ``torch.inference_mode``;
* training: 10 AdamW steps (lr 1e-4, weight decay 0.01: torch's defaults, as the peer) on
  ε-MSE at batch 64 with random timesteps.

Like the ``gaf`` command, the script first calls ``gaf.tune_malloc()`` (``gaf.malloc``);
``--system-malloc`` keeps glibc's own thresholds. Run the peer through
``benchmarks/tuned_malloc.py`` for the same setting on its side. ``--fused-attention``
sets ``attention.KEYS_MAX`` to 0, so that every attention runs PyTorch's fused
``scaled_dot_product_attention`` (the ablation of ``attend``'s short-key paths, the
inference GEMMs per head and the training ``_ShortAttention``).

Prints ``gaf_ldm sample_img_per_s=<f> train_img_per_s=<f> params=<n>``, then the options,
then two cost lines (``benchmarks/step_cost.py``: the FLOPs of one unit, the timed run's
achieved GFLOP/s, and the operator groups' shares of the unit's profiled time), computed
after both timings by running each unit again: once counted, then profiled twice (the
sampling step) or once (the training step, a tenth of the timed training by itself):

* ``gaf_ldm_sample_cost unit=step ...``: one guided DDIM step (:func:`sample_step`: the
  UNet on the 32 rows with the cached context, the guidance, the scheduler step),
  units = DDIM_STEPS, seconds = the sampling timing. Every step has the same work, but
  the timed region also holds the one ``cache_context`` call, which no unit counts:
  ``gflop_per_unit`` x units falls short of the timed FLOPs by that projection;
* ``gaf_ldm_train_cost unit=step ...``: one training step (:func:`train_step`), units =
  10, seconds = the training timing: exactly the timed FLOPs (every step has the same
  shapes).

``--no-cost`` skips the cost pass.

The parameter count is the peer's exactly (3,152,644): the same layers with the same
shapes; only the fused projections (q|k|v of self-attention, k|v of cross-attention) are
stored as one matrix each, which holds the same number of weights, and ``proj_in`` /
``proj_out`` are Linear layers holding the 1x1 convs' weights. With the diffusers weights
loaded, the two UNets agree to ~1e-7.

What a gaf user's sampling does, and the peer does not: the context's cross-attention
keys/values are projected once (``UNet.cache_context``, inside the timed region), and the
shared timestep's embedding is computed once per step for the batch. The optimiser is
gaf's ``make_optimizer`` (torch's fused AdamW kernel: the same update as the peer's
per-tensor loop, in one kernel). Everything runs in float32 on the
default 2 threads, eager mode (no torch.compile).

Measure on a quiet machine: with two OpenMP threads on two cores, another busy process
slows every op several-fold (up to 100x for small ones), so run this script and the
peer alternately and compare runs made under the same load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import gaf
from gaf.plugins.diffusion.schedulers import DDIMScheduler, SchedulerConfig
from gaf.plugins.diffusion.unet import UNet, UNetConfig, attention
from gaf.plugins.diffusion.unet.model import ContextCache
from gaf.train import TrainConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402  (this folder)


def build() -> UNet:
    return UNet(UNetConfig(in_channels=4, channels=(64, 128), layers_per_level=1,
                           attention_levels=(0,), mid_attention=True, heads=8, context_dim=64,
                           norm_groups=32, prediction_type="epsilon"))  # the peer's ε-MSE


def sample_step(unet: UNet, sched: DDIMScheduler, cache: ContextCache, x: torch.Tensor,
                t: torch.Tensor, scale: float) -> torch.Tensor:
    """One DDIM step with classifier-free guidance: both halves in one UNet call."""
    e_u, e_c = unet(torch.cat([x, x]), t, cache).chunk(2)
    return sched.step(e_u + scale * (e_c - e_u), t, x)


def train_step(unet: UNet, opt: torch.optim.Optimizer, sched: DDIMScheduler,
               z: torch.Tensor, c: torch.Tensor) -> None:
    """One AdamW step on ε-MSE at random timesteps."""
    t = torch.randint(0, 1000, (len(z),))
    noise = torch.randn_like(z)
    zt = sched.add_noise(z, noise, t)
    loss = F.mse_loss(unet(zt, t, c), noise)
    opt.zero_grad()
    loss.backward()
    opt.step()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=50, help="DDIM steps")
    p.add_argument("--fused-attention", action="store_true",
                   help="every attention through scaled_dot_product_attention")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's own malloc thresholds (no gaf.tune_malloc)")
    p.add_argument("--no-cost", action="store_true",
                   help="skip the cost pass (FLOPs and the profiler's shares)")
    args = p.parse_args(argv)
    if not args.system_malloc:
        gaf.tune_malloc()
    keys_max = attention.KEYS_MAX
    if args.fused_attention:
        attention.KEYS_MAX = 0
    try:
        costs = measure(args.steps, cost=not args.no_cost)
    finally:
        attention.KEYS_MAX = keys_max
    print(f"options fused_attention={args.fused_attention} "
          f"tune_malloc={not args.system_malloc}")
    for line in costs:
        print(line)


def measure(steps: int, cost: bool = True, B: int = 16, bt: int = 64, n: int = 10
            ) -> list[str]:
    """Times sampling (``B`` images) and ``n`` training steps (batch ``bt``), prints the
    result line and returns the cost lines (none without ``cost``). The sizes are the
    peer's; the tests pass smaller ones."""
    torch.manual_seed(0)
    unet = build()
    params = sum(p.numel() for p in unet.parameters())
    sched = DDIMScheduler(SchedulerConfig(beta_schedule="linear", clip_sample=False))
    scale = 3.0
    ctx = torch.randn(B, 16, 64)
    null = torch.zeros(B, 16, 64)
    unet.eval()
    with torch.inference_mode():
        sched.set_timesteps(steps)
        x = torch.randn(B, 4, 8, 8)
        t0 = time.perf_counter()
        cache = unet.cache_context(torch.cat([null, ctx]))
        for t in sched.timesteps:
            x = sample_step(unet, sched, cache, x, t, scale)
        ds = time.perf_counter() - t0
    unet.train()
    opt = make_optimizer(TrainConfig(lr=1e-4, weight_decay=0.01), unet.parameters())
    z = torch.randn(bt, 4, 8, 8)
    c = torch.randn(bt, 16, 64)
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(unet, opt, sched, z, c)
    dt = time.perf_counter() - t0
    print(f"gaf_ldm sample_img_per_s={B / ds:.2f} (ddim {steps} steps, cfg, batch {B}) "
          f"train_img_per_s={bt * n / dt:.1f} params={params}")
    if not cost:
        return []
    train_cost = step_cost.measure(lambda: train_step(unet, opt, sched, z, c), units=n,
                                   seconds=dt, inference=False, calls=1)
    unet.eval()
    sample_cost = step_cost.measure(lambda: sample_step(unet, sched, cache, x, t, scale),
                                    units=steps, seconds=ds, inference=True)
    return [step_cost.line("gaf_ldm_sample", sample_cost, "step"),
            step_cost.line("gaf_ldm_train", train_cost, "step")]


if __name__ == "__main__":
    main()
