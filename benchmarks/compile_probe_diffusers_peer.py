"""The peer side of ``compile_probe.py steady``: does ``torch.compile`` speed diffusers up?

    /tmp/gaf-peers/bin/python benchmarks/compile_probe_diffusers_peer.py [--rounds 4] [--steps 10]

The UNet of the peer script ``/work/shared/peers/diffusers_ldm_bench.py`` (diffusers'
``UNet2DConditionModel``, channels (64, 128), one ResBlock per level, cross-attention to
16 tokens × 64, ``norm_num_groups=32``), and that script's two steps:

* ``ldm-train``: batch 64 latents 4×8×8, ε-MSE, backward, ``torch.optim.AdamW`` (lr 1e-4);
* ``ldm-sample``: one UNet call on 32 rows (the CFG halves of batch 16) under
  ``torch.inference_mode`` and the guidance and DDIM step.

For each, eager against ``torch.compile(unet)`` in one process, alternating blocks of
``--steps`` steps for ``--rounds`` rounds, the order swapped every round, by
``compile_probe.steady`` itself (which imports only torch); glibc's thresholds are set as gaf's processes set them
(``tuned_malloc.tune``). Prints ``compile_probe_peer case=… compile_s=… eager_ms=…
compiled_ms=… ratio=…`` (ratio: eager over compiled, above 1 means compiled is faster).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tuned_malloc  # noqa: E402
from compile_probe import ENABLED, steady  # noqa: E402 (torch only: runs in the peer venv)


def build() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
        attention_head_dim=8, norm_num_groups=32)


def train_step(unet: UNet2DConditionModel,
               model: Callable[[], torch.nn.Module] | None = None) -> Callable[[], None]:
    """``ldm-train``: one AdamW step of ε-MSE on batch 64, through ``model()`` (default:
    ``unet`` itself)."""
    model = model or (lambda: unet)
    unet.train()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    z, c = torch.randn(64, 4, 8, 8), torch.randn(64, 16, 64)

    def train() -> None:
        t = torch.randint(0, 1000, (64,))
        noise = torch.randn_like(z)
        loss = torch.nn.functional.mse_loss(
            model()(sched.add_noise(z, noise, t), t, encoder_hidden_states=c).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return train


def sample_step(unet: UNet2DConditionModel,
                model: Callable[[], torch.nn.Module] | None = None) -> Callable[[], None]:
    """``ldm-sample``: one guided DDIM step on batch 16 (one call of 32 rows), through
    ``model()`` (default: ``unet`` itself); run it under ``torch.inference_mode``."""
    model = model or (lambda: unet)
    unet.eval()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(50)
    ctx = torch.cat([torch.zeros(16, 16, 64), torch.randn(16, 16, 64)])
    state = {"x": torch.randn(16, 4, 8, 8)}
    t = sched.timesteps[10]

    def sample() -> None:
        x = state["x"]
        e_u, e_c = model()(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.chunk(2)
        state["x"] = sched.step(e_u + 3.0 * (e_c - e_u), t, x).prev_sample

    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    tuned_malloc.tune()
    torch.manual_seed(0)
    unet = build()
    compiled = torch.compile(unet)

    def model():  # the side compile_probe.steady has switched on
        return compiled if ENABLED["on"] else unet

    rows = {"ldm-train": steady(train_step(unet, model), args.rounds, args.steps,
                                inference=False)}
    rows["ldm-sample"] = steady(sample_step(unet, model), args.rounds, args.steps,
                                inference=True)
    for name, row in rows.items():
        print(f"compile_probe_peer case={name} compile_s={row['compile_s']:.1f} "
              f"eager_ms={row['eager_ms']:.1f} compiled_ms={row['compiled_ms']:.1f} "
              f"ratio={row['ratio']:.3f} compiled_faster_rounds="
              f"{row['compiled_faster_rounds']}/{row['rounds']}",
              flush=True)


if __name__ == "__main__":
    main()
