"""Peer of ``benchmarks/autoencoder_throughput.py``: the KL-VAE first stage's pre-GAN
training step and its encode+decode, with diffusers' ``AutoencoderKL``, CPU.

    /tmp/gaf-peers/bin/python benchmarks/autoencoder_diffusers_peer.py [STEPS] [BATCH]
        --images FILE [--warmup N] [--threads 2] [--eval-steps 30] [--eval-batch 100]
        [--tune-malloc]                              (STEPS: 100, BATCH: 16, N: 3)

Imports only torch and diffusers (run it in the peer venv). ``FILE`` is written by the gaf
script with the same STEPS, BATCH, ``--warmup`` and ``--eval-batch``::

    python benchmarks/autoencoder_throughput.py --write-images /tmp/gaf-ae-images.pt

and holds the images of the gaf run: its first ``warmup + STEPS`` training batches of
32x32 ``shapes`` images in the run's seeded order and the first ``--eval-batch`` images
of the eval split. The gaf script's docstring has the round's loop.

The model, randomly initialised (nothing is downloaded)::

    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1,
                  latent_channels=3, norm_num_groups=8, sample_size=32,
                  mid_block_add_attention=True)

gaf's default ``kl-vae`` layer for layer: f = 4, one ResNet block per encoder level and
two per decoder level (``layers_per_block + 1``), the stride-2 downsampling conv with
right/bottom padding, nearest x2 + conv upsampling, one-head attention in both mid
blocks, GroupNorm (8 groups, eps 1e-6), the 1x1 ``quant_conv`` (6 -> 6) and
``post_quant_conv`` (3 -> 3), logvar clamped to [-30, 20]. 680,143 parameters on both
sides. Only the storage differs: diffusers' attention has separate ``to_q`` / ``to_k`` /
``to_v`` Linear layers where gaf has one 1x1 conv holding the same three matrices (and
``to_out`` a Linear where gaf has a 1x1 conv). With these weights copied into gaf's
model, the encodings, reconstructions, KL and gradients agree to float32 rounding.

What is timed, after ``--warmup`` untimed calls of each (float32, eager,
``torch.set_num_threads(--threads)``):

* **training** (``train_img_per_s``): STEPS steps of the loss gaf's ``autoencoder``
  objective trains with before its PatchGAN switches on (step 1200):
  ``mean |x - x_hat| + 1e-6 * KL / (3 * 32 * 32)``, ``x_hat = decode(z)`` with
  ``z = latent_dist.sample()``, KL = ``latent_dist.kl()`` (summed over the latent per
  image), batch mean; backward; torch's AdamW with ``fused=True`` (the kernel gaf's
  ``make_optimizer`` picks), lr 1e-3, betas (0.5, 0.9), weight decay 0, and the same
  LambdaLR schedule (linear warm-up over 20 steps, then cosine over 2000 steps).
  ``loss.item()`` once a step, as a loop that logs it.
* **encode+decode** (``eval_img_per_s``): ``decode(encode(x).latent_dist.mode())`` in
  eval mode under ``torch.no_grad`` on the eval batch, ``--eval-steps`` calls.

Why this setup: diffusers has no VAE training loop (its ``train_*`` examples train
UNets on a frozen VAE), so the loop is written here in plain torch with gaf's pre-GAN
loss and optimiser, and both sides time that step only. gaf's default run spends its
first 1200 of 2000 steps there; the GAN step has no diffusers counterpart to compare
with (a peer would be this same hand-written code plus a PatchGAN), and gaf has no
perceptual (LPIPS) term at any step.

Differences that remain, all in the training step:

* gaf runs its trainer's step function: it also computes the global gradient norm
  (logged; ``max_grad_norm = 0`` never clips), checks the loss is finite, and reads
  the loss's metrics (``rec_loss``, ``kl``) with ``.item()``; this loop does none of
  these beyond one ``loss.item()``.
* gaf builds the PatchGAN discriminator (167,841 parameters) and hands it to the
  optimiser, as a run does; before step 1200 it has no gradient and fused AdamW skips
  it, so the update touches the same 680,143 parameters on both sides. Not built here.
* gaf draws the posterior's noise from the global generator with ``torch.randn``,
  diffusers' ``randn_tensor`` does the same; the weights are each side's own random
  initialisation (the losses printed are sanity values, not a cross-check).

Prints ``diffusers_autoencoder train_img_per_s=<f> eval_img_per_s=<f> params=<n> ...``
with the settings, the last loss, the reconstruction's mean |x - x_hat| and
``images_sum`` (the float64 sum of every image read: the gaf script's value when the
file matches its run).

``--tune-malloc`` applies the glibc thresholds that the gaf side applies
(``gaf.tune_malloc``, as the ``gaf`` command does), through ``benchmarks/tuned_malloc.py``'s
``tune`` (the same two ``mallopt`` calls, without importing gaf).

Protocol: alternate with the gaf script, at least 3 runs each, on an otherwise idle
machine, and report the ratio of the medians of each figure with the load average.
No timing is asserted by any test.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tuned_malloc  # noqa: E402  benchmarks/tuned_malloc.py, beside this script (no gaf)

#: AutoencoderKL's arguments: gaf's default ``kl-vae`` (the test reads this literal)
CONFIG = {"in_channels": 3, "out_channels": 3, "block_out_channels": (16, 32, 64),
          "down_block_types": ("DownEncoderBlock2D",) * 3,
          "up_block_types": ("UpDecoderBlock2D",) * 3,
          "layers_per_block": 1, "latent_channels": 3, "norm_num_groups": 8,
          "sample_size": 32, "mid_block_add_attention": True}
#: gaf's ``autoencoder`` objective and trainer defaults (the test reads these literals)
KL_WEIGHT = 1e-6
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.5, 0.9), 0.0
WARMUP_STEPS, TOTAL_STEPS = 20, 2000
DISC_START = 1200
PARAMS = 680143


def lr_factor(step):
    """gaf's schedule: linear warm-up over ``WARMUP_STEPS``, then cosine to 0."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, TOTAL_STEPS - WARMUP_STEPS))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=100, help="timed training steps")
    p.add_argument("batch", nargs="?", type=int, default=16, help="images a training step")
    p.add_argument("--images", required=True, metavar="FILE",
                   help="the gaf script's --write-images file")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each phase")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-steps", type=int, default=30, help="timed encode+decode calls")
    p.add_argument("--eval-batch", type=int, default=100, help="images an encode+decode call")
    p.add_argument("--tune-malloc", action="store_true",
                   help="apply gaf.tune_malloc's glibc thresholds to this process")
    args = p.parse_args(argv)
    n = args.warmup + args.steps
    if n > DISC_START:
        p.error(f"warmup + STEPS = {n} passes gaf's GAN start (step {DISC_START})")
    torch.set_num_threads(args.threads)
    if args.tune_malloc:
        tuned_malloc.tune()
    data = torch.load(args.images, weights_only=True)
    train, evaluation = data["train"], data["eval"]
    if (tuple(train.shape[:2]) != (n, args.batch)
            or evaluation.shape[0] != args.eval_batch):
        p.error(f"{args.images} holds {tuple(train.shape[:2])} training batches x images and "
                f"{evaluation.shape[0]} eval images, not ({n}, {args.batch}) and "
                f"{args.eval_batch}: write it with the same STEPS BATCH --warmup --eval-batch")

    torch.manual_seed(0)
    vae = AutoencoderKL(**CONFIG).train()
    params = sum(q.numel() for q in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY,
                            fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    pixels = train[0, 0].numel()

    start = time.perf_counter()
    for i in range(n):
        if i == args.warmup:
            start = time.perf_counter()
        x = train[i]
        opt.zero_grad(set_to_none=True)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        loss = (x - rec).abs().mean() + KL_WEIGHT * posterior.kl().mean() / pixels
        loss.backward()
        opt.step()
        sched.step()
        last_loss = loss.item()
    train_s = time.perf_counter() - start

    vae.eval()
    with torch.no_grad():
        start = time.perf_counter()
        for i in range(args.warmup + args.eval_steps):
            if i == args.warmup:
                start = time.perf_counter()
            rec = vae.decode(vae.encode(evaluation).latent_dist.mode()).sample
        eval_s = time.perf_counter() - start
        eval_l1 = float((evaluation - rec).abs().mean())

    import diffusers

    result = {"train_img_per_s": args.steps * args.batch / train_s,
              "eval_img_per_s": args.eval_steps * args.eval_batch / eval_s,
              "params": params, "steps": args.steps, "batch": args.batch,
              "warmup": args.warmup, "eval_steps": args.eval_steps,
              "eval_batch": args.eval_batch, "resolution": int(evaluation.shape[-1]),
              "last_loss": last_loss, "eval_l1": eval_l1,
              "images_sum": float(train.double().sum() + evaluation.double().sum()),
              "threads": torch.get_num_threads(), "tune_malloc": args.tune_malloc,
              "torch": torch.__version__, "diffusers": diffusers.__version__}
    print("diffusers_autoencoder " + " ".join(f"{k}={fmt(k, v)}" for k, v in result.items()))


def fmt(key, value):
    if key == "images_sum":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    main()
