"""The evaluation of an ``image-to-image`` run: each task against a simple baseline.

:func:`image_to_image_figures` takes the first ``eval_images`` items of the evaluated
split (``eval`` for reported figures, ``validation`` when tuning), makes each item's
source from its real image (:func:`.tasks.degrade`), and scores, per **setting**:

``sr`` (super-resolution) and ``colour`` (colourisation)
    one setting, every pixel generated;
one per mask kind (inpainting, uncropping)
    ``box`` is the ``shapes`` grid cell of the item's first object
    (:func:`.masks.object_box`: the model must redraw the object the caption names);
    ``grid``, ``stroke``, ``half``, ``quarter`` are drawn from the run seed's
    ``"image-to-image-eval-masks"`` stream, the same masks for every run.

For each setting, the outputs **with the caption** (at ``fd_guidance``) and **without**
(the learned null caption), each image sampled with the generator seeded ``seed + i``,
and the **baseline**:

* super-resolution: bicubic upsampling of the low-resolution input;
* inpainting, uncropping: the hole filled with the background (-1: a fill that adds
  nothing), the known pixels kept;
* colourisation: each grey level painted with the mean colour of the training pixels
  at that level (the least-squares colouriser that sees the grey image alone: what a
  regression without the caption converges to).

Metrics (flat ``{setting}_{caption|null|baseline}_{metric}``, and ``real_{metric}`` for
the real images, the ceiling):

``psnr``, ``ssim``
    against the real image (:mod:`gaf.plugins.metrics.pixel`; they mean most for
    super-resolution, where the answer is nearly determined);
``colour``, ``shape``, ``position``, ``exact`` (each with ``_se``)
    the ``shapes`` evaluator's reading of the output against the caption (binomial
    standard errors): for the ``box`` masks this is whether the filled-in region holds
    the stated object; for colourisation ``colour`` is the colour accuracy;
``fd``, ``fd_floor``
    (captioned outputs only) the in-domain Fréchet distance of the outputs against
    ``eval_images`` other real eval images, and the real-vs-real floor
    (:func:`gaf.plugins.t2i.evaluation._distances`; needs ``2 · eval_images`` items).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gaf.runs import RunContext
from gaf.seeding import torch_generator

from ...images.batches import stack_images
from ...metrics.pixel import psnr, ssim
from ..evaluation import _distances, attribute_scores, evaluation_splits
from ..training_data import conditions_of
from .masks import draw_mask, full_masks, object_box
from .tasks import MASK_TASKS, degrade, grey, paste, upsample

__all__ = ["image_to_image_figures", "evaluation_masks", "baseline", "level_colours",
           "SETTING_NAMES"]

#: the setting name of the tasks without masks
SETTING_NAMES = {"super-resolution": "sr", "colourisation": "colour"}
_ATTRS = ("colour", "shape", "position", "exact")


def evaluation_masks(task: str, kinds: tuple[str, ...], dataset: Any, n: int,
                     size: tuple[int, int], seed: int) -> dict[str, Tensor]:
    """Setting name → ``(n, 1, H, W)`` masks of the first ``n`` items (module doc)."""
    if task not in MASK_TASKS:
        return {SETTING_NAMES[task]: full_masks(n, size)}
    out = {}
    for kind in kinds:
        if kind == "box" and hasattr(dataset, "attributes"):
            out[kind] = torch.stack([object_box(dataset.attributes(i), size)
                                     for i in range(n)])
        else:
            gen = torch_generator(seed, "image-to-image-eval-masks", kinds.index(kind))
            out[kind] = torch.stack([draw_mask(kind, size, gen) for _ in range(n)])
    return out


def level_colours(train_images: Tensor, levels: int) -> Tensor:
    """``(L, C)``: the mean colour of the training pixels at each grey level (a level
    no pixel has gets its own grey)."""
    if levels < 2:
        raise ValueError("level_colours needs quantised greys (grey_levels >= 2)")
    g = grey(train_images, levels)[:, 0]
    values = torch.linspace(-1, 1, levels)
    pixels = train_images.permute(0, 2, 3, 1).reshape(-1, train_images.shape[1]).double()
    flat = g.reshape(-1)
    out = torch.empty(levels, train_images.shape[1], dtype=torch.float64)
    for k, v in enumerate(values.tolist()):
        at = (flat - v).abs() < 1e-4
        out[k] = pixels[at].mean(0) if at.any() else v
    return out.float()


def baseline(task: str, real: Tensor, source: Tensor, masks: Tensor, *, shape: Any,
             upsample_mode: str = "bicubic", colours: Tensor | None = None,
             grey_levels: int = 4) -> Tensor:
    """The task's simple baseline (module doc) for the sources of ``real``."""
    if task == "super-resolution":
        return upsample(source, shape, upsample_mode)
    if task == "colourisation":
        if colours is None:
            raise ValueError("the colourisation baseline needs the level colours")
        g = grey(source, grey_levels)[:, 0]
        k = torch.round((g + 1) / 2 * (grey_levels - 1)).long().clamp(0, grey_levels - 1)
        return colours[k].permute(0, 3, 1, 2).contiguous()
    return paste(torch.full_like(real, -1.0), real, masks)


@torch.no_grad()
def image_to_image_figures(ctx: RunContext, obj: Any, pipe: Any) -> dict[str, float]:
    """The ``image-to-image`` objective's evaluation (module doc) of ``pipe``."""
    cfg = obj.config
    eval_ds, _, out = evaluation_splits(ctx, cfg.eval_split, obj.dataset, ctx.log)
    n = min(cfg.eval_images, len(eval_ds))
    real = stack_images(eval_ds, range(n))
    captions = conditions_of(eval_ds, "caption")[:n]
    evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
    shape = tuple(real.shape[1:])
    source = degrade(cfg.task, real, low_resolution=cfg.low_resolution,
                     grey_levels=cfg.grey_levels)
    colours = (level_colours(obj.latents.cpu(), cfg.grey_levels)
               if cfg.task == "colourisation" and cfg.grey_levels >= 2 else None)
    fd_ok = cfg.fd and len(eval_ds) >= 2 * n

    def score(name: str, images: Tensor) -> None:
        out[f"{name}_psnr"] = float(psnr(real, images).mean())
        out[f"{name}_ssim"] = (float(ssim(real, images).mean()) if min(shape[1:]) >= 11
                               else float("nan"))
        if evaluator is not None:
            scores = attribute_scores(evaluator, images, captions)
            for key in _ATTRS:
                if key in scores:
                    out[f"{name}_{key}"] = scores[key]
                    out[f"{name}_{key}_se"] = scores[f"{key}_se"]

    score("real", real)
    masks_of = evaluation_masks(cfg.task, tuple(cfg.mask_kinds), eval_ds, n, shape[1:],
                                ctx.spec.seed)
    for setting, masks in masks_of.items():
        if cfg.task != "colourisation" or colours is not None:  # none for continuous grey
            score(f"{setting}_baseline", baseline(
                cfg.task, real, source, masks, shape=shape, upsample_mode=cfg.upsample,
                colours=colours, grey_levels=cfg.grey_levels))
        for mode in ("caption", "null"):
            images = _sample(pipe, source, masks if cfg.task in MASK_TASKS else None,
                             captions if mode == "caption" else None, cfg, ctx.spec.seed)
            score(f"{setting}_{mode}", images)
            if mode == "caption" and fd_ok:
                distances = _distances(None, ctx.run_dir / "features", obj.dataset, eval_ds,
                                       images, n, ctx.spec.seed, ctx.log)
                out.update({f"{setting}_{k}": v for k, v in distances.items()
                            if k in ("fd", "fd_floor")})
        ctx.log(f"image-to-image {setting}: " + ", ".join(
            f"{k.removeprefix(setting + '_')} {v:.3f}" for k, v in out.items()
            if k.startswith(setting) and k.endswith(("_exact", "_psnr", "_colour"))))
    out["eval_images"] = float(n)
    return out


def _sample(pipe: Any, source: Tensor, masks: Tensor | None, captions: list[str] | None,
            cfg: Any, seed: int) -> Tensor:
    """The pipeline's outputs for every source, in batches, image ``i`` seeded ``seed + i``."""
    out = []
    for start in range(0, len(source), cfg.eval_batch_size):
        picks = range(start, min(len(source), start + cfg.eval_batch_size))
        gens = [torch.Generator().manual_seed(seed + i) for i in picks]
        out.append(pipe(None if captions is None else [captions[i] for i in picks],
                        images=source[list(picks)],
                        masks=None if masks is None else masks[list(picks)],
                        steps=cfg.eval_steps, guidance=cfg.fd_guidance,
                        generators=gens).float().cpu())
    return torch.cat(out)

