"""Seconds per training step of the ``unet`` on latents of a given shape: what a first
stage (or none) costs the diffusion model that learns its latents.

    python benchmarks/unet_step_cost.py [STEPS] [--threads N]      (STEPS: 3, N: 1)

One AdamW step (forward, an MSE against zeros, backward, step) on a batch of 64
random inputs with a 1-token context of width 64 (the ``class`` conditioner's), after
one untimed warm-up step, for the ``ldm`` choices on 28x28 grey images padded to 32:

* ``f4``: the f = 4 ``kl-vae``'s 3x8x8 latents, the default UNet (channels 64, 128;
  attention at level 0, i.e. at 8x8);
* ``f2``: the f = 2 ``kl-vae``'s 3x16x16 latents, the same UNet with attention moved
  to level 1 (8x8);
* ``pixels``: 1x32x32 pixels (``--autoencoder none``), channels 32, 64, 128 with
  attention only at level 2 (8x8): the default's attention at 32x32 would be far
  costlier still.

Prints the median seconds per step and the ratio to ``f4``. Only the ratios carry
over between machines; on a machine shared with other jobs use one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gaf

SETTINGS = {
    "f4": ((3, 8), (64, 128), (0,)),
    "f2": ((3, 16), (64, 128), (1,)),
    "pixels": ((1, 32), (32, 64, 128), (2,)),
}


def step_seconds(shape: tuple[int, int], channels: tuple[int, ...],
                 attention: tuple[int, ...], steps: int) -> float:
    c, side = shape
    nm = gaf.create("noise-model", "unet", in_channels=c, channels=channels,
                    attention_levels=attention)
    opt = torch.optim.AdamW(nm.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, c, side, side, generator=g)
    ctx = torch.randn(64, 1, 64, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = nm(x, t, ctx).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = None
    for name, (shape, channels, attention) in SETTINGS.items():
        s = step_seconds(shape, channels, attention, args.steps)
        base = base or s
        print(f"{name:7s} {s:.3f} s/step  {s / base:.2f}x f4", flush=True)


if __name__ == "__main__":
    main()
