"""KL-VAE first-stage throughput on the CPU: the ``autoencoder`` objective's default
training step, and encode+decode in eval mode, against diffusers' ``AutoencoderKL``.

    python benchmarks/autoencoder_throughput.py [STEPS] [BATCH] [--warmup N] [--threads 2]
        [--eval-steps 30] [--eval-batch 100] [--system-malloc] [--write-images FILE]
        [--no-cost]                                 (STEPS: 100, BATCH: 16, N: 3)

The peer, ``benchmarks/autoencoder_diffusers_peer.py`` (run it with
``/tmp/gaf-peers/bin/python``), does the same work with diffusers' ``AutoencoderKL``
configured to the same shape, on the same images, which this script writes for it:

    python benchmarks/autoencoder_throughput.py --write-images /tmp/gaf-ae-images.pt
    for i in 1 2 3; do uptime; python benchmarks/autoencoder_throughput.py; \\
        /tmp/gaf-peers/bin/python benchmarks/autoencoder_diffusers_peer.py \\
            --images /tmp/gaf-ae-images.pt --tune-malloc; done

(STEPS, BATCH, ``--warmup`` and ``--eval-batch`` must be the same in the writing
command and in both timed commands: the file holds exactly the images of those runs.)

What is built: what ``gaf run --objective autoencoder`` builds by default, through the
same code (``gaf.spec.resolve`` with the objective's defaults, the registry's
components, ``AutoencoderTraining.setup``): the ``kl-vae`` autoencoder (base width 16,
channel multipliers (1, 2, 4) so widths 16/32/64, f = 4, 3 latent channels, one ResNet
block per encoder level and two per decoder level, one-head self-attention in both mid
blocks, GroupNorm with 8 groups, eps 1e-6) on 32x32 RGB ``shapes`` images, 680,143
parameters (the peer's count exactly); the PatchGAN discriminator (167,841 parameters)
is built too and handed to the optimiser, as in a run, but see below.

What is timed, after ``--warmup`` untimed calls of each (float32, eager, ``--threads``
threads via ``torch.set_num_threads``):

* **training** (``train_img_per_s``: STEPS x BATCH over the time of STEPS steps): the
  trainer's own step function, ``gaf.train._step`` (``zero_grad``, the objective's
  ``loss``, the finiteness check, backward, the global gradient norm that the trainer
  logs, fused AdamW), and the LambdaLR step of the run's schedule (linear warm-up over
  20 steps, then cosine over 2000). The default optimiser settings: AdamW lr 1e-3, betas
  (0.5, 0.9), no weight decay, no clipping (``max_grad_norm = 0``: the norm is computed
  for the log, never applied). The loss at these steps is the objective's before the
  GAN starts: ``mean |x - x_hat| + 1e-6 * KL / (3 * 32 * 32)``, ``x_hat`` decoded from a
  posterior *sample* (reparameterised), KL the closed form per image summed over the
  latent's 3x8x8 elements, batch mean. No perceptual term (gaf has none: LPIPS weights
  cannot be downloaded). The PatchGAN switches on at optimiser step ``disc_start =
  1200``; the script refuses ``warmup + STEPS`` above that, so every timed step is a
  pre-GAN step (the discriminator gets no gradient and fused AdamW skips it). The
  GAN-on step (two discriminator passes, the generator's frozen pass, the adaptive
  weight's two extra gradients) is not measured.
* **encode+decode** (``eval_img_per_s``: ``--eval-steps`` x ``--eval-batch`` over their
  time): ``decode(encode(x))`` in eval mode under ``torch.no_grad``, ``encode`` giving
  the posterior mean, on one batch of the first ``--eval-batch`` images of the ``eval``
  split (the objective's ``eval_batch_size``, 100, and its first evaluation chunk), as
  the objective's ``reconstruct`` does (without its clamp and copy).

The data: the first ``warmup + STEPS`` batches of the run's own order (``train_batch(i)``:
``BATCH`` images of the 10,000-image train split in the seeded epoch permutation),
rendered before timing (the renderer is not timed; the peer reads the same tensors from
the file). ``--write-images FILE`` writes them, and the eval batch, with ``torch.save``
(``{"train": (warmup + STEPS, BATCH, 3, 32, 32), "eval": (EVAL_BATCH, 3, 32, 32)}``) and
exits without timing.

Like the ``gaf`` command, the script first calls ``gaf.tune_malloc()`` (``gaf.malloc``);
``--system-malloc`` keeps glibc's thresholds. The peer's ``--tune-malloc`` applies the
same two settings to the peer.

Prints one line ``gaf_autoencoder train_img_per_s=<f> eval_img_per_s=<f> params=<n>
disc_params=<n> ...`` with the settings, the last training loss, the last
reconstruction's mean |x - x_hat| (``eval_l1``) and ``images_sum`` (the float64 sum of
every image used, training and eval: the peer prints the same sum of the file it read,
so equal values mean the same data). The weights differ (each side initialises its
own), so the losses are sanity values, not a cross-check.

Then two cost lines (``benchmarks/step_cost.py``: the FLOPs of one unit, the timed run's
achieved GFLOP/s, and the operator groups' shares of the unit's profiled time), computed
after every figure above, by running the unit three more times (once counted, twice
profiled):

* ``gaf_autoencoder_train_cost unit=step ...``: one more trainer step (``_step`` and the
  schedule step, on the last timed batch, so still before the GAN), units = STEPS,
  seconds = the training timing;
* ``gaf_autoencoder_eval_cost unit=call ...``: one more ``decode(encode(x))`` on the eval
  batch (under ``torch.inference_mode``, the timing's ``no_grad`` doing the same
  operators), units = ``--eval-steps``, seconds = the encode+decode timing.

Every timed step (and call) has the same shapes and the same path, so the timed FLOPs are
exactly ``gflop_per_unit`` x units. ``--no-cost`` skips the cost pass.

Protocol: on an otherwise idle machine (two OpenMP threads on two cores: another busy
process slows every op several-fold), alternate this script and the peer at least 3 runs
each (gaf, peer, gaf, peer, gaf, peer), report the ratio of the medians of each figure,
with the load average (``uptime``) beside the runs. No test asserts a timing
(tests/benchmarks/test_autoencoder_throughput.py runs it at a tiny size for its form).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import gaf
from gaf.plugins.images.batches import split_dataset, stack_images
from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.train import _step, _trainable, lr_factor, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402  (this folder)


def build(batch: int, run_dir: Path) -> tuple[Any, RunContext]:
    """The default ``autoencoder`` objective, set up as ``gaf run`` sets it up (the
    trainer's seed first), with ``BATCH`` images a step."""
    spec = resolve(objective="autoencoder", sets=['device="cpu"', "progress=false",
                                                  f"train.batch_size={batch}"])
    ctx = RunContext(spec, run_dir)
    torch.manual_seed(spec.seed)
    objective = gaf.REGISTRY.get("objective", "autoencoder")(spec.objective_config)
    objective.setup(ctx)
    return objective, ctx


def trainer(objective: Any, ctx: RunContext) -> tuple[Any, list[torch.Tensor], Any]:
    """What gaf's trainer sets up: ``(optimizer, params, lr schedule)`` over the
    objective's trainable parameters, its modules in training mode."""
    modules = objective.modules()
    for mod in modules.values():
        mod.train()
    params = _trainable(modules)
    opt = make_optimizer(ctx.spec.train, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(ctx.spec.train, s))
    return opt, params, sched


def images(objective: Any, ctx: RunContext, batches: int, eval_batch: int
           ) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """The first ``batches`` training batches (``train_batch(i)``, as the trainer asks for
    them) and the first ``eval_batch`` images of the eval split."""
    train = [objective.train_batch(i) for i in range(batches)]
    eval_ds = split_dataset(ctx, "eval")
    return train, stack_images(eval_ds, range(eval_batch))


def images_sum(train: torch.Tensor, evaluation: torch.Tensor) -> float:
    """The float64 sum of every image (the peer computes it the same way)."""
    return float(train.double().sum() + evaluation.double().sum())


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=100, help="timed training steps")
    p.add_argument("batch", nargs="?", type=int, default=16, help="images a training step")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each phase")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-steps", type=int, default=30, help="timed encode+decode calls")
    p.add_argument("--eval-batch", type=int, default=100, help="images an encode+decode call")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's own malloc thresholds (no gaf.tune_malloc)")
    p.add_argument("--write-images", default="", metavar="FILE",
                   help="write the images for the peer (torch.save) and exit")
    p.add_argument("--no-cost", action="store_true",
                   help="skip the cost pass (FLOPs and the profiler's shares)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.eval_steps, args.eval_batch) < 1 or args.warmup < 0:
        p.error("STEPS, BATCH, --eval-steps and --eval-batch must be >= 1, --warmup >= 0")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return run(args, Path(tmp))
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any] | None:
    if not args.system_malloc and not args.write_images:
        gaf.tune_malloc()
    objective, ctx = build(args.batch, run_dir)
    n = args.warmup + args.steps
    disc_start = objective.config.disc_start
    if n > disc_start or objective.gan_active(n - 1):
        raise SystemExit(f"warmup + STEPS = {n} reaches the GAN's start (optimiser step "
                         f"{disc_start}): this benchmark times the steps before it")
    train, evaluation = images(objective, ctx, n, args.eval_batch)
    stacked = torch.stack([b["image"] for b in train])
    if args.write_images:
        torch.save({"train": stacked, "eval": evaluation}, args.write_images)
        return None

    ae = objective.modules()["autoencoder"]
    opt, params, sched = trainer(objective, ctx)
    objective.train_batch = train.__getitem__  # the rendered batches, in the run's order

    start = time.perf_counter()
    for step in range(1, n + 1):
        if step == args.warmup + 1:
            start = time.perf_counter()
        record = _step(objective, ctx, opt, params, step, None)
        sched.step()
    train_s = time.perf_counter() - start
    assert "g_loss" not in record and "d_loss" not in record  # the pre-GAN step

    ae.eval()
    with torch.no_grad():
        start = time.perf_counter()
        for i in range(args.warmup + args.eval_steps):
            if i == args.warmup:
                start = time.perf_counter()
            rec = ae.decode(ae.encode(evaluation))
        eval_s = time.perf_counter() - start
        eval_l1 = float((evaluation - rec).abs().mean())

    result = {"train_img_per_s": args.steps * args.batch / train_s,
              "eval_img_per_s": args.eval_steps * args.eval_batch / eval_s,
              "params": sum(q.numel() for q in ae.parameters()),
              "disc_params": sum(q.numel() for q in objective.discriminator.parameters()),
              "steps": args.steps, "batch": args.batch, "warmup": args.warmup,
              "eval_steps": args.eval_steps, "eval_batch": args.eval_batch,
              "resolution": int(evaluation.shape[-1]), "last_loss": record["loss"],
              "eval_l1": eval_l1, "images_sum": images_sum(stacked, evaluation),
              "threads": torch.get_num_threads(), "tune_malloc": not args.system_malloc,
              "torch": torch.__version__}
    print("gaf_autoencoder " + " ".join(f"{k}={_fmt(k, v)}" for k, v in result.items()))
    if not args.no_cost:
        ae.train()  # back as the trainer set it

        def train_step() -> None:
            _step(objective, ctx, opt, params, n, None)
            sched.step()

        cost = step_cost.measure(train_step, units=args.steps, seconds=train_s, inference=False)
        print(step_cost.line("gaf_autoencoder_train", cost, "step"))
        ae.eval()
        cost = step_cost.measure(lambda: ae.decode(ae.encode(evaluation)),
                                 units=args.eval_steps, seconds=eval_s, inference=True)
        print(step_cost.line("gaf_autoencoder_eval", cost, "call"))
    return result


def _fmt(key: str, value: Any) -> str:
    if key == "images_sum":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    main()
