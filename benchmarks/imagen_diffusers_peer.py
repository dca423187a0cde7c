"""Peer of ``benchmarks/imagen_throughput.py``: the two-stage Imagen cascade (base 16x16,
then super-resolution 16 -> 32) with diffusers' ``UNet2DConditionModel`` and
``DDIMScheduler``, CPU.

    /tmp/gaf-peers/bin/python benchmarks/imagen_diffusers_peer.py [--batch 50] [--steps 25]
        [--sr-steps 25] [--repeats 3] [--warmup 1] [--threads 2] [--tune-malloc]

Imports only torch and diffusers (run it in the peer venv; it must not import gaf). The
same work as the gaf script: randomly initialised models of the same shapes (seeded;
nothing is downloaded), the same text states (one seeded generator, the same draw), the
same noise (one generator per image seeded ``i``, drawn row by row in the gaf
pipeline's order: base initial noise, super-resolution initial noise, augmentation
noise), float32, eager, under ``torch.inference_mode``, ``--threads`` threads,
``--warmup`` untimed calls, then the median of ``--repeats`` timed calls.

What is timed, per call, ``--batch`` captions (the loop of diffusers' DeepFloyd IF
pipelines, stage I then stage II, with ``DDIMScheduler`` as the gaf side uses):

* **base**: ``--steps`` DDIM steps on 3x16x16 pixels, classifier-free guidance 3, the
  ``[null; cond]`` halves in one call of ``2 * batch`` rows per step, the result
  clamped to [-1, 1];
* **super-resolution**: the base images upsampled to 32x32 (bilinear,
  ``align_corners=False``), noise-augmented to level ``a = 0.25`` with the formula of
  gaf's ``noise_augment``, written out here (``alpha_bar(a) = f(a) / f(0)``,
  ``f(a) = cos^2(pi/2 (a + s) / (1 + s))``, ``s = 0.008``; ``sqrt(alpha_bar) x +
  sqrt(1 - alpha_bar) noise``), concatenated to ``x_t`` on channels at every step;
  ``--sr-steps`` DDIM steps, guidance 3, batched and clamped as the base.

Both schedulers: ``DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
prediction_type="v_prediction", clip_sample=False, thresholding=True,
dynamic_thresholding_ratio=0.995, sample_max_value=1e6)`` (the gaf scheduler's
defaults, ``leading`` spacing, with Imagen's dynamic thresholding), built once outside
the timing as a pipeline's component (gaf's pipeline rebuilds its thresholded scheduler
from the config inside every call). The per-stage split is taken where the gaf script
takes it: after the super-resolution stage's ``set_timesteps`` and initial noise, before
its conditioning.

The UNets: gaf's ``unet`` has diffusers' module layout (its module docstring), so each
gaf option maps onto a ``UNet2DConditionModel`` argument:

* ``channels`` -> ``block_out_channels``; ``level_layers`` (ResBlocks per down level) ->
  ``layers_per_block`` as a tuple (one per down block; diffusers gives up block ``i``
  ``reversed(layers_per_block)[i] + 1``, as gaf's up levels get one more);
* ``attention_levels`` -> ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` at those
  levels, ``DownBlock2D`` / ``UpBlock2D`` elsewhere; ``mid_attention`` ->
  ``UNetMidBlock2DCrossAttn`` (the default mid block); ``heads = 4`` ->
  ``attention_head_dim=4`` (in this class the argument is the number of heads, each
  ``channels // 4`` wide, as gaf's ``head_dim = 0``); ``context_dim = 64`` ->
  ``cross_attention_dim=64``; ``norm_groups`` -> ``norm_num_groups``; the time embedding
  width ``4 * channels[0]`` is diffusers' default;
* ``pooled_context`` (an MLP ``Linear -> SiLU -> Linear`` of the text states' mean over
  the tokens, added to the time embedding): for the base,
  ``class_embed_type="projection", projection_class_embeddings_input_dim=64`` (the same
  two Linear layers) fed the mean-pooled states as ``class_labels``; for the
  super-resolution stage, whose class embedding carries the noise level (below),
  ``addition_embed_type="text_time"`` (SDXL's pooled-text MLP into the time embedding)
  fed the pooled states as ``text_embeds``. That MLP's input is ``[text_embeds |
  sinusoidal(time_ids)]``; with ``addition_time_embed_dim=1`` and one zero time id the
  sinusoidal part is diffusers' pad column of an odd width, a constant zero, so the MLP
  computes exactly gaf's ``pool_embed`` with one more input column (128 more weights,
  each multiplying that zero: the only parameter difference between the two sides).
  DeepFloyd IF's stage II uses ``addition_embed_type="text"`` instead (attention pooling
  with LayerNorms, a different function and parameter count), so it is not used here;
* ``noise_level`` (the augmentation level ``a`` embedded as the timestep ``1000 a`` and
  added to the time embedding) -> ``class_embed_type="timestep"`` with
  ``class_labels = 1000 a``, as DeepFloyd IF's stage II (the same sinusoidal embedding,
  cosines first, and the same two Linear layers);
* ``concat_channels = 3`` -> ``in_channels=6, out_channels=3``, the upsampled image
  concatenated after ``x_t``;
* ``skip_scale = 1/sqrt(2)`` has no diffusers equivalent: gaf multiplies every skip
  connection by it before concatenating; this side does not (less element-wise work
  here, the same parameters).

The script prints both UNets' parameter counts (``base_params``, ``sr_params``); the base
matches gaf's exactly and the super-resolution stage has the 128 weights above more.
Block by block (each down, mid and up block, the embeddings, conv_in/conv_out) the
counts are the same, and with a gaf UNet's weights mapped in (built with
``skip_scale=1``, the one option diffusers lacks) both stages compute gaf's function to
float32 rounding (a one-off check, not kept as a test: gaf and diffusers do not share a
venv).

Not timed, on either side: the frozen text encoder; its states are inputs (the gaf
script's fixed random states; the null caption is zero states).

What gaf's sampling does and this does not (as diffusers' pipelines): gaf projects the
text states to every cross-attention layer's keys and values once per stage
(``UNet.cache_context``), where diffusers projects them in every call; gaf embeds the
shared timestep and noise level once per step for the whole batch, diffusers once per
row. Both sides pool the text states once per stage.

Prints one JSON line in the gaf script's format (``name`` ``diffusers_imagen``,
``samples_per_s``, ``base_s``, ``sr_s``, ``total_s``, ``runs``, the options,
``base_params``, ``sr_params``, torch and diffusers versions, threads).

``--tune-malloc`` applies to this process the glibc thresholds that the gaf side applies
(``gaf.tune_malloc``, which the ``gaf`` command runs at start), through
``benchmarks/tuned_malloc.py``'s ``tune`` (the same two ``mallopt`` calls and values,
without importing gaf): the peer measured with the allocator settings gaf uses. Both scripts also print the process's
minor page faults (``minflt``), system CPU seconds (``sys_s``) and peak resident memory
(``maxrss_mb``), from ``getrusage`` at the end (warm-up included).

Protocol: alternate with the gaf script, at least 3 runs each, on an otherwise idle
machine, and report the ratio of the medians (the gaf script's docstring has the loop).
No timing is asserted by any test.
"""

import argparse
import json
import math
import resource
import statistics
import time

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

import tuned_malloc  # benchmarks/tuned_malloc.py, beside this script (no gaf import)

TOKENS, WIDTH = 24, 64
BASE_SHAPE, SR_SHAPE = (3, 16, 16), (3, 32, 32)
GUIDANCE = SR_GUIDANCE = 3.0
AUG_LEVEL = 0.25
COSINE_OFFSET = 0.008   # the augmentation schedule's s
LEVEL_SCALE = 1000.0    # the level a is embedded as the timestep 1000 a


def text_states(batch):
    """The gaf script's stand-in text states (the same generator and draw)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, TOKENS, WIDTH, generator=g)


def build():
    """The two UNets (random weights, seed 0) mapped from gaf's ``BASE_UNET`` and
    ``SR_UNET`` with ``context_dim=64`` (see the module docstring)."""
    torch.manual_seed(0)
    common = {"cross_attention_dim": WIDTH, "attention_head_dim": 4, "norm_num_groups": 16}
    # BASE_UNET: channels (32, 64, 128), level_layers (1, 2, 2), attention at levels 1
    # and 2 and in the middle, 4 heads, 16 groups, pooled_context
    base = UNet2DConditionModel(
        sample_size=BASE_SHAPE[-1], in_channels=3, out_channels=3,
        block_out_channels=(32, 64, 128), layers_per_block=(1, 2, 2),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        class_embed_type="projection", projection_class_embeddings_input_dim=WIDTH, **common)
    # SR_UNET: channels (32, 48, 64), level_layers (1, 1, 2), attention at level 2 and in
    # the middle, concat_channels 3, noise_level, pooled_context
    sr = UNet2DConditionModel(
        sample_size=SR_SHAPE[-1], in_channels=6, out_channels=3,
        block_out_channels=(32, 48, 64), layers_per_block=(1, 1, 2),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        class_embed_type="timestep", addition_embed_type="text_time",
        addition_time_embed_dim=1, projection_class_embeddings_input_dim=WIDTH + 1, **common)
    return base.eval(), sr.eval()


def scheduler():
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                         prediction_type="v_prediction", clip_sample=False,
                         thresholding=True, dynamic_thresholding_ratio=0.995,
                         sample_max_value=1e6)


def augmentation_alpha_bar(a):
    s = COSINE_OFFSET
    f0 = math.cos(math.pi / 2 * s / (1 + s)) ** 2
    return min(max(math.cos(math.pi / 2 * (a + s) / (1 + s)) ** 2 / f0, 0.0), 1.0)


def guided_loop(unet, sched, x, context, guidance, concat=None, class_labels=None,
                added=None):
    """DDIM with classifier-free guidance: one call on ``[x; x]`` per step."""
    for t in sched.timesteps:
        x_in = sched.scale_model_input(torch.cat([x, x]), t)
        if concat is not None:
            x_in = torch.cat([x_in, concat], dim=1)
        out = unet(x_in, t, encoder_hidden_states=context, class_labels=class_labels,
                   added_cond_kwargs=added).sample
        out_u, out_c = out.chunk(2)
        x = sched.step(out_u + guidance * (out_c - out_u), t, x).prev_sample
    return x.clamp(-1, 1)


def cascade(base, sr, base_sched, sr_sched, states, steps, sr_steps):
    """One cascade call: ``(images, perf_counter at the stage split)``."""
    batch = states.shape[0]
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    # ---- base stage
    base_sched.set_timesteps(steps)
    x = randn_tensor((batch, *BASE_SHAPE), generator=generators) * base_sched.init_noise_sigma
    context = torch.cat([torch.zeros_like(states), states])
    pooled = context.mean(dim=1)
    low = guided_loop(base, base_sched, x, context, GUIDANCE, class_labels=pooled)
    # ---- super-resolution stage
    sr_sched.set_timesteps(sr_steps)
    x = randn_tensor((batch, *SR_SHAPE), generator=generators) * sr_sched.init_noise_sigma
    split = time.perf_counter()
    context = torch.cat([torch.zeros_like(states), states])
    pooled = context.mean(dim=1)
    up = F.interpolate(low, size=SR_SHAPE[-2:], mode="bilinear", align_corners=False)
    noise = randn_tensor(up.shape, generator=generators)
    ab = augmentation_alpha_bar(AUG_LEVEL)
    concat = math.sqrt(ab) * up + math.sqrt(1 - ab) * noise
    level = torch.full((2 * batch,), LEVEL_SCALE * AUG_LEVEL)
    added = {"text_embeds": pooled, "time_ids": torch.zeros(2 * batch, 1)}
    images = guided_loop(sr, sr_sched, x, context, SR_GUIDANCE,
                         concat=torch.cat([concat, concat]), class_labels=level, added=added)
    return images, split


def usage():
    """Page faults, system seconds and peak memory of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"minflt": r.ru_minflt, "sys_s": round(r.ru_stime, 2),
            "maxrss_mb": round(r.ru_maxrss / 1024)}


def params(module):
    return sum(p.numel() for p in module.parameters())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the base stage")
    p.add_argument("--sr-steps", type=int, default=25, help="DDIM steps of the SR stage")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tune-malloc", action="store_true",
                   help="apply gaf.tune_malloc's glibc thresholds to this process")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune_malloc:
        tuned_malloc.tune()
    base, sr = build()
    base_sched, sr_sched = scheduler(), scheduler()
    states = text_states(args.batch)
    run = (base, sr, base_sched, sr_sched, states, args.steps, args.sr_steps)
    with torch.inference_mode():
        for _ in range(args.warmup):
            cascade(*run)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            images, split = cascade(*run)
            t1 = time.perf_counter()
            assert images.shape == (args.batch, *SR_SHAPE)
            runs.append({"base_s": split - t0, "sr_s": t1 - split, "total_s": t1 - t0})
    med = {k: statistics.median(r[k] for r in runs) for k in ("base_s", "sr_s", "total_s")}
    result = {"name": "diffusers_imagen", "samples_per_s": args.batch / med["total_s"], **med,
              "runs": runs, "batch": args.batch, "steps": args.steps,
              "sr_steps": args.sr_steps, "guidance": GUIDANCE, "sr_guidance": SR_GUIDANCE,
              "aug_level": AUG_LEVEL, "thresholding": "dynamic",
              "base_shape": list(BASE_SHAPE), "sr_shape": list(SR_SHAPE),
              "text_states": [TOKENS, WIDTH], "repeats": args.repeats,
              "warmup": args.warmup, "base_params": params(base), "sr_params": params(sr),
              "torch": torch.__version__, "diffusers": diffusers.__version__,
              "threads": torch.get_num_threads(), "tune_malloc": args.tune_malloc,
              **usage()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
