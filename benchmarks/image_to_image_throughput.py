"""``image-to-image`` (SR3 / Palette) throughput on the CPU: the training step and sampling.

    python benchmarks/image_to_image_throughput.py [--task inpainting] [--train-steps 30]
        [--batch 32] [--sample-batch B] [--sample-steps 50] [--warmup 3] [--threads 2]
        [--system-malloc] [--write-data DATA.pt] [--no-cost]

The peer, ``benchmarks/image_to_image_diffusers_peer.py`` (run it with
/tmp/gaf-peers/bin/python), does the same work with diffusers' ``UNet2DConditionModel``
and ``DDPMScheduler`` on the data this script writes with ``--write-data`` (the same
images, timesteps, noise, dropped captions, masks and text states, batch for batch).

What is built (the objective's defaults, random weights, seed 0; nothing is downloaded):

* the noise model: ``gaf.create("noise-model", "unet", **I2I_UNET)``, the objective's
  ``component_defaults``: channels (32, 48, 64), one ResBlock per level (two per up
  level), a spatial transformer (self- and cross-attention, GEGLU MLP; 4 heads) at the
  8x8 level and in the middle block, 16 GroupNorm groups, cross-attention to 64-wide
  text states, time embedding 128 wide, ``concat_channels = 4`` (the task's condition
  ``[c ; m]``, so ``conv_in`` takes 3 + 4 = 7 channels), v-prediction: 1,248,835
  parameters;
* the scheduler: ``ddpm`` with the objective's ``PIXEL_SCHEDULE`` (``scaled_linear``
  betas 0.00085 to 0.012, 1000 steps, ``clip_sample`` on, ``fixed_small`` variance,
  ``leading`` spacing) and v-prediction, for training and (rebuilt ``from_config`` by
  ``ImageToImage.pipeline``, the evaluation's ``eval_scheduler``) for sampling;
* the data: the ``shapes`` dataset at its default 32x32, the first 256 images (the
  dataset's size does not change a step's work);
* the caption encoder is a stand-in on both sides: :class:`FixedConditioner`, frozen
  random states (24 tokens x 64 per distinct caption, zeros as the null caption). A
  real run trains the ``text-transformer`` jointly; here its states are an input, looked
  up by the objective's frozen-conditioner path (``FrozenConditions``: the states of
  every distinct caption computed once, looked up per batch inside the step), so that
  both sides time the UNet, the schedule and the Palette conditioning only.

The objective is set up by hand as ``LDM.setup`` would for a pixel-space run in one
process (the repo's own unit tests of the loss do the same), then every step is gaf's
trainer step itself (``gaf.train._step``: ``zero_grad``, the objective's ``loss``, the
finite check, ``backward``, ``clip_grad_norm_`` at 1.0, the fused AdamW step,
``after_step``'s EMA update at decay 0.999, the metrics as floats), followed by the
``LambdaLR`` warm-up/cosine schedule step, with the objective's ``train_defaults``
(lr 1e-3, weight decay 0, 100 warm-up steps, cosine over 2000 steps).

What is timed:

* **training**: ``--train-steps`` steps after ``--warmup`` untimed ones, batch
  ``--batch`` (32, the objective's ``train.batch_size``). The objective's
  ``train_batch(i)`` (the draws of ``t``, ``ε``, the dropped captions at
  ``p_uncond = 0.1`` and the task's masks, and the gather of the images) is called for
  every step *before* the timing and served from a list inside it: the peer reads the
  same draws from the data file, so neither side times drawing them. Inside the timing
  per step: ``x̃_t = paste(add_noise(x, ε, t), x, m)``, the states' lookup and the null
  swap, the task's condition (``degrade`` then ``condition``), the UNet forward and
  backward, the v target, ``masked_mse``, and the optimiser, clipping and EMA work
  above;
* **sampling**: one call of the objective's own pipeline (``ImageToImage.pipeline()``:
  the EMA noise model, DDPM) on ``--sample-batch`` sources (default ``--batch``), the
  task's source of the dataset's first images with the evaluation's masks
  (``evaluation_masks``: for inpainting the ``box`` setting, the cell of each scene's
  first object), captioned, guidance 1 (the evaluation's ``fd_guidance``: no
  classifier-free guidance, one UNet call of ``sample_batch`` rows per step),
  ``--sample-steps`` steps (50, the evaluation's ``eval_steps``), seed 0 (image ``i``
  from generator ``i``), after one untimed call of ``--warmup`` steps. Inside the call:
  the inputs' checks, the condition, the initial noise, the known pixels pasted before
  and after every step, ``UNet.cache_context`` (the caption's cross-attention keys and
  values projected once per call) and the clamp.

Prints one line ``gaf_i2i train_img_per_s=… sample_img_per_s=… params=… …`` with the
settings, the timed seconds, the last training loss, the process's peak memory, minor
page faults and system seconds (``getrusage``, warm-up and set-up included) and five
checks that the peer prints too and that must agree between the two to float
rounding (they are computed from the data, not from either model): on the first
batch, ``check_loss`` (``masked_mse`` of a zero prediction against the v target),
``check_input`` (mean ``|x̃_t|``), ``check_concat`` (mean ``|[c ; m]|``),
``check_context`` (mean ``|context|`` after the null swap); and ``check_sample_concat``
(mean ``|[c ; m]|`` of the sampling call's sources). ``sample_abs`` (mean ``|x|`` of the
samples) is a sanity figure only: the two sides' weights differ.

Then two cost lines (``benchmarks/step_cost.py``: the FLOPs of one unit, the timed run's
achieved GFLOP/s, and the operator groups' shares of the unit's profiled time), computed
after every figure above by running each unit three more times (once counted, twice
profiled):

* ``gaf_i2i_train_cost unit=step …``: one more trainer step (:func:`train_step`, on the
  last drawn batch, with the timed run's optimiser and schedule), units =
  ``--train-steps``, seconds = ``train_s``: exactly the timed FLOPs (every batch has the
  same shapes; the dropped captions and the masks change values, not work);
* ``gaf_i2i_sample_cost unit=call_1_step …``: the same sampling call with one step,
  units = ``--sample-steps``, seconds = ``sample_s``. Every DDPM step has the same work,
  but the call also does its per-call work once (the condition, ``cache_context``, the
  initial noise, the clamp), which the units count ``--sample-steps`` times: an
  over-count of ``sample_steps - 1`` times that per-call work, small beside the steps'
  (the test bounds it).

``--no-cost`` skips the cost pass.

``--write-data`` writes, instead of timing, the training draws (every batch, warm-up
included, in order), the text states, the sampling inputs and the settings to a
``torch.save`` file for the peer's ``--data``; the peer takes its shapes and step
counts from it.

Like the ``gaf`` command, the script calls ``gaf.tune_malloc()`` first
(``--system-malloc``: glibc's own thresholds); the peer's ``--tune-malloc`` applies the
same two settings to it.

Protocol: on an otherwise idle machine, write the data once, then alternate the two
scripts at least 3 times each with the load average beside every run, and report the
ratio of the medians of ``train_img_per_s`` and of ``sample_img_per_s``::

    python benchmarks/image_to_image_throughput.py --write-data /tmp/i2i.pt
    for i in 1 2 3; do uptime; python benchmarks/image_to_image_throughput.py; uptime; \\
        /tmp/gaf-peers/bin/python benchmarks/image_to_image_diffusers_peer.py \\
            --data /tmp/i2i.pt --tune-malloc; done

The peer takes every setting from the file, so run the gaf side with the flags that
wrote it (the defaults above) and compare only lines whose ``task``, ``batch``,
``train_steps``, ``warmup``, ``sample_batch`` and ``sample_steps`` agree, and whose
``check_*`` fields agree. Measured figures go to docs/benchmarks.md with the commit and
the commands; no timing is asserted by any test
(tests/benchmarks/test_image_to_image_throughput.py checks the data, the checks and the
output line at a tiny size).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import torch

import gaf
from gaf.device import autocast
from gaf.distributed import World
from gaf.plugins.images.batches import stack_images
from gaf.plugins.nn.ema import make_shadow
from gaf.plugins.t2i.image_to_image.evaluation import evaluation_masks
from gaf.plugins.t2i.image_to_image.objective import (ImageToImage, ImageToImageConfig,
                                                      masked_mse)
from gaf.plugins.t2i.image_to_image.tasks import TASKS, condition, degrade, paste
from gaf.plugins.t2i.training_data import conditions_of
from gaf.seeding import EpochOrder
from gaf.train import TrainConfig, _step, lr_factor, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402  (this folder)

SEED = 0
IMAGES = 256                 # shapes images the batches are drawn from
TOKENS, WIDTH = 24, 64       # the stand-in text states per caption (text-transformer's)
FORMAT = 1                   # of the --write-data file


class FixedConditioner:
    """A frozen caption encoder stand-in: each distinct caption of ``captions`` maps to
    its own fixed random states ``(24, 64)`` (seeded, in sorted caption order); ``null(n)``
    is zero states."""

    condition_key = "caption"
    trainable = False
    width = WIDTH

    def __init__(self, captions: Sequence[str]):
        unique = sorted(set(captions))
        g = torch.Generator().manual_seed(SEED)
        self.table = torch.randn(len(unique), TOKENS, WIDTH, generator=g)
        self.row = {c: i for i, c in enumerate(unique)}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return self.table[torch.tensor([self.row[c] for c in captions])]

    def null(self, n: int) -> torch.Tensor:
        return torch.zeros(n, TOKENS, WIDTH)


def train_config(batch: int) -> TrainConfig:
    """The objective's ``train_defaults`` at ``batch``."""
    return TrainConfig(**{**ImageToImage.train_defaults, "batch_size": batch})


def build(task: str, batch: int) -> ImageToImage:
    """The ``image-to-image`` objective with its default components, set up by hand as
    ``LDM.setup`` does for a pixel-space run in one process (the stand-in conditioner:
    module doc)."""
    torch.manual_seed(SEED)
    obj = ImageToImage(ImageToImageConfig(task=task))
    obj.device, obj.world, obj.seed, obj.batch_size = torch.device("cpu"), World(), SEED, batch
    obj.dataset = gaf.create("dataset", ImageToImage.uses["dataset"], size=IMAGES)
    obj.noise_model = gaf.create("noise-model", ImageToImage.uses["noise-model"],
                                 **ImageToImage.component_defaults["noise-model"])
    obj.scheduler = gaf.create("scheduler", ImageToImage.uses["scheduler"],
                               **ImageToImage.component_defaults["scheduler"],
                               prediction_type=obj.noise_model.prediction_type)
    obj.latents = stack_images(obj.dataset, range(len(obj.dataset)))
    obj.sample_shape = tuple(obj.latents.shape[1:])
    obj.conditions = conditions_of(obj.dataset, "caption")
    obj.conditioner = FixedConditioner(obj.conditions)
    obj.order = EpochOrder(len(obj.dataset), SEED, "ldm-order")
    nm = obj.noise_model.config
    assert nm.concat_channels == obj.noise_model.in_channels + 1 == 4
    assert nm.context_dim == obj.conditioner.width
    obj._setup_more(SimpleNamespace(log=lambda message: None))  # checks, freezes the states
    obj.ema = {}
    obj.ema = {f"{name}_ema": make_shadow(module) for name, module in obj.modules().items()}
    return obj


def draw(obj: ImageToImage, n: int) -> list[dict[str, Any]]:
    """The objective's first ``n`` training batches (``train_batch(0 … n-1)``)."""
    return [obj.train_batch(i) for i in range(n)]


def sampling_inputs(obj: ImageToImage, n: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                                        list[str]]:
    """``(source, masks, captions)`` of the first ``n`` images: the task's source, the
    evaluation's masks of its first setting (``None`` for the tasks without masks)."""
    cfg = obj.config
    images = obj.latents[:n]
    source = degrade(cfg.task, images, low_resolution=cfg.low_resolution,
                     grey_levels=cfg.grey_levels)
    masks = next(iter(evaluation_masks(cfg.task, tuple(cfg.mask_kinds), obj.dataset, n,
                                       obj.sample_shape[1:], SEED).values()))
    uses_masks = cfg.task in ("inpainting", "uncropping")
    return source, masks if uses_masks else None, obj.conditions[:n]


def checks(obj: ImageToImage, batch: dict[str, Any], source: torch.Tensor,
           masks: torch.Tensor | None) -> dict[str, float]:
    """The data checks the peer prints too (module doc)."""
    cfg, sched = obj.config, obj.scheduler
    x0, t, noise, drop, m = (batch[k] for k in ("z0", "t", "noise", "drop", "masks"))
    target = sched.training_target(x0, noise, t)
    context = obj.encode_conditions(batch["conditions"])
    context = torch.where(drop[:, None, None], obj.conditioner.null(len(drop)), context)
    full = masks if masks is not None else torch.ones(len(source), 1, *obj.sample_shape[1:])
    sample_concat = condition(cfg.task, source, full, obj.sample_shape,
                              upsample_mode=cfg.upsample, grey_levels=cfg.grey_levels)
    return {"check_loss": float(masked_mse(torch.zeros_like(target), target, m).mean()),
            "check_input": float(paste(sched.add_noise(x0, noise, t), x0, m).abs().mean()),
            "check_concat": float(obj.concat(x0, m).abs().mean()),
            "check_context": float(context.abs().mean()),
            "check_sample_concat": float(sample_concat.abs().mean())}


def write_data(path: str | Path, obj: ImageToImage, batches: list[dict[str, Any]],
               source: torch.Tensor, masks: torch.Tensor | None, captions: list[str],
               args: argparse.Namespace) -> None:
    """The peer's input (module doc): every batch the loop trains on, in order."""
    cfg, rows = obj.config, obj.frozen.row
    stack = {k: torch.stack([b[k] for b in batches]) for k in ("z0", "t", "noise", "drop",
                                                               "masks")}
    stack["rows"] = torch.tensor([[rows[c] for c in b["conditions"]] for b in batches])
    tcfg = train_config(args.batch)
    data = {"format": FORMAT, "task": cfg.task, "batch": args.batch,
            "sample_batch": len(source), "train_steps": args.train_steps,
            "warmup": args.warmup, "sample_steps": args.sample_steps,
            "shape": list(obj.sample_shape), "low_resolution": cfg.low_resolution,
            "grey_levels": cfg.grey_levels, "upsample": cfg.upsample,
            "mask_kinds": list(cfg.mask_kinds), "params": params(obj.noise_model),
            "unet": _plain(attrs.asdict(obj.noise_model.config)),
            "scheduler": _plain(attrs.asdict(obj.scheduler.config)),
            "train": {"lr": tcfg.lr, "betas": list(tcfg.betas),
                      "weight_decay": tcfg.weight_decay, "max_grad_norm": tcfg.max_grad_norm,
                      "warmup_steps": tcfg.warmup_steps, "steps": tcfg.steps,
                      "schedule": tcfg.schedule, "ema_decay": cfg.ema_decay},
            "batches": stack, "states": obj.frozen.states.clone(),
            "sample": {"source": source.clone(),  # clones: a view would save its base
                       "masks": None if masks is None else masks.clone(),
                       "rows": torch.tensor([rows[c] for c in captions])}}
    torch.save(data, path)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def usage() -> dict[str, Any]:
    """Peak memory, minor page faults and system seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"maxrss_mb": round(r.ru_maxrss / 1024), "minflt": r.ru_minflt,
            "sys_s": round(r.ru_stime, 2)}


def trainer(obj: ImageToImage) -> tuple[Any, list[torch.Tensor], Any, Any]:
    """What gaf's trainer sets up for ``obj``: ``(optimizer, params, lr schedule, the
    context _step reads)``, its modules in training mode (the EMA shadow included)."""
    tcfg = train_config(obj.batch_size)
    modules = obj.modules()
    for module in modules.values():
        module.train()  # as gaf.train's set-up
    params_ = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(tcfg, params_)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(tcfg, s))
    ctx = SimpleNamespace(spec=SimpleNamespace(train=tcfg), world=obj.world,
                          autocast=lambda: autocast(obj.device, "fp32"))
    return optimizer, params_, schedule, ctx


def train_step(obj: ImageToImage, parts: tuple[Any, ...], step: int) -> dict[str, Any]:
    """gaf's trainer step ``step`` (``_step``) and the schedule's step, with ``parts``
    from :func:`trainer`; the step's record."""
    optimizer, params_, schedule, ctx = parts
    record = _step(obj, ctx, optimizer, params_, step, None)
    schedule.step()
    return record


def train(obj: ImageToImage, batches: list[dict[str, Any]], warmup: int,
          parts: tuple[Any, ...]) -> tuple[float, float]:
    """gaf's trainer steps over ``batches`` (served in order), with ``parts`` from
    :func:`trainer`; ``(seconds of the steps after the first warmup, last loss)``."""
    obj.train_batch = batches.__getitem__  # the drawn batches, in order (module doc)
    try:
        start, record = time.perf_counter(), {"loss": float("nan")}
        for step in range(1, len(batches) + 1):
            if step == warmup + 1:
                start = time.perf_counter()
            record = train_step(obj, parts, step)
        return time.perf_counter() - start, float(record["loss"])
    finally:
        del obj.train_batch


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="inpainting", choices=TASKS)
    p.add_argument("--train-steps", type=int, default=30, help="timed training steps")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--sample-batch", type=int, default=0,
                   help="images per sampling call (0 = --batch)")
    p.add_argument("--sample-steps", type=int, default=50, help="DDPM steps of the call")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed training steps, and the steps of one untimed sampling call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's own malloc thresholds (no gaf.tune_malloc)")
    p.add_argument("--write-data", default="", metavar="DATA.pt",
                   help="write the peer's data instead of timing")
    p.add_argument("--no-cost", action="store_true",
                   help="skip the cost pass (FLOPs and the profiler's shares)")
    args = p.parse_args(argv)
    if min(args.train_steps, args.batch, args.sample_steps) < 1 or args.warmup < 0:
        p.error("--train-steps, --batch and --sample-steps must be >= 1, --warmup >= 0")
    args.sample_batch = args.sample_batch or args.batch
    torch.set_num_threads(args.threads)
    if not args.system_malloc:
        gaf.tune_malloc()
    obj = build(args.task, args.batch)
    batches = draw(obj, args.warmup + args.train_steps)
    source, masks, captions = sampling_inputs(obj, args.sample_batch)
    if args.write_data:
        write_data(args.write_data, obj, batches, source, masks, captions, args)
        return {}
    found = checks(obj, batches[0], source, masks)
    parts = trainer(obj)
    train_s, last_loss = train(obj, batches, args.warmup, parts)
    for module in obj.modules().values():
        module.eval()  # as gaf.train does before the evaluation samples
    pipe = obj.pipeline()
    call = {"images": source, "masks": masks, "guidance": 1.0, "seed": SEED}
    if args.warmup:
        pipe(captions, steps=args.warmup, **call)
    start = time.perf_counter()
    images = pipe(captions, steps=args.sample_steps, **call)
    sample_s = time.perf_counter() - start
    assert images.shape == (args.sample_batch, *obj.sample_shape)
    result = {"train_img_per_s": args.batch * args.train_steps / train_s,
              "sample_img_per_s": args.sample_batch / sample_s,
              "params": params(obj.noise_model), "task": args.task, "batch": args.batch,
              "train_steps": args.train_steps, "warmup": args.warmup,
              "sample_batch": args.sample_batch, "sample_steps": args.sample_steps,
              "train_s": train_s, "sample_s": sample_s, "last_loss": last_loss, **found,
              "sample_abs": float(images.abs().mean()), "threads": torch.get_num_threads(),
              "tune_malloc": not args.system_malloc, **usage()}
    print("gaf_i2i " + " ".join(f"{k}={_fmt(v)}" for k, v in result.items()))
    if not args.no_cost:
        for module in obj.modules().values():
            module.train()  # as the trainer left them
        obj.train_batch = lambda i: batches[-1]
        cost = step_cost.measure(lambda: train_step(obj, parts, len(batches)),
                                 units=args.train_steps, seconds=train_s, inference=False)
        print(step_cost.line("gaf_i2i_train", cost, "step"))
        del obj.train_batch
        for module in obj.modules().values():
            module.eval()
        cost = step_cost.measure(lambda: pipe(captions, steps=1, **call),
                                 units=args.sample_steps, seconds=sample_s, inference=True)
        print(step_cost.line("gaf_i2i_sample", cost, "call_1_step"))
    return result


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
