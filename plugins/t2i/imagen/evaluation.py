"""The figures of an Imagen run: the base alone, the cascade, the super-resolution stage.

:func:`imagen_figures` (the ``imagen`` objective's evaluation) runs the shared
text-to-image evaluation (:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`) twice,
on the same unseen captions and per-image seeds:

* **the base stage alone**, at its resolution against the eval split rendered at that
  size (the ``shapes`` evaluator reads 16 px exactly): keys ``base_*``, with the sweep
  ``base_g{s}_{mode}`` over the guidance scales ``eval_guidance`` × the thresholding
  modes ``eval_thresholding`` (Imagen's finding to reproduce: dynamic thresholding
  keeps high guidance usable), FD against real images at that size, no CLIP score;
* **the whole cascade**, at full resolution: the headline keys (``unseen_exact``,
  ``fd``, ``clip_score`` … as every text-to-image method's, for the timeline table) and
  the sweep ``aug{a}`` over the noise-augmentation levels ``eval_aug_sweep``.

A run without a super-resolution stage has the ``base_*`` figures alone.

:func:`super_resolution_figures` (the ``imagen-sr`` objective's evaluation): eval items
super-resolved from their *real* low-resolution images at each level ``a`` of
``eval_aug_levels``: ``sr_a{a}_psnr``, ``sr_a{a}_ssim`` (against the real image),
``sr_a{a}_exact`` (the evaluator at full size), beside ``bicubic_psnr``,
``bicubic_ssim``, ``bicubic_exact`` (bicubic upsampling, the baseline) and
``real_exact`` (the real images: the ceiling).
"""

from __future__ import annotations

from typing import Any

import torch

from gaf.runs import RunContext

from ...images.batches import dataset_at, stack_images
from ...metrics.pixel import psnr, ssim
from ..evaluation import (attribute_scores, evaluate_pipeline, evaluation_splits,
                          parameters_used, train_wall_seconds)
from ..training_data import conditions_of

__all__ = ["imagen_figures", "super_resolution_figures"]


def imagen_figures(ctx: RunContext, obj: Any, cascade: Any) -> dict[str, float]:
    """The ``imagen`` objective's evaluation (module doc) of ``cascade``."""
    cfg = obj.config
    res = cfg.base_resolution
    eval_full, swapped_full, extra = evaluation_splits(ctx, cfg.eval_split, obj.dataset,
                                                       ctx.log)
    eval_base = dataset_at(ctx, res, cfg.eval_split) if "eval_on_train" not in extra \
        else obj.base_dataset
    swapped_base = dataset_at(ctx, res, "swapped") if swapped_full is not None else None
    info = _info(ctx, obj, cascade)
    options, sweep = obj.evaluation_settings()
    common = {"condition_key": obj.conditioner.condition_key, "n_captions": cfg.eval_images,
              "batch_size": cfg.eval_batch_size, "seed": ctx.spec.seed, "log": ctx.log}
    ctx.log(f"evaluation: the base stage alone at {res} px")
    base = evaluate_pipeline(
        cascade.base(), options, train_ds=obj.base_dataset, eval_ds=eval_base,
        swapped_ds=swapped_base, sweep=sweep, fd_images=cfg.eval_images if cfg.fd else 0,
        features_dir=ctx.run_dir / f"features_{res}px", clip_steps=0,
        throughput_batch=cfg.throughput_batch, grid_prompts=cfg.grid_prompts,
        out_dir=ctx.run_dir / "base", info=info, **common)
    out = {**extra, **{f"base_{k}": v for k, v in base.items()}}
    if len(cascade.stages) == 1:
        return out
    options, sweep = obj.cascade_settings()
    ctx.log(f"evaluation: the cascade at {cascade.sample_shape[-1]} px")
    out.update(evaluate_pipeline(
        cascade, options, train_ds=obj.dataset, eval_ds=eval_full, swapped_ds=swapped_full,
        sweep=sweep, fd_images=cfg.eval_images if cfg.fd else 0,
        features_dir=ctx.run_dir / "features",
        clip_dir=cfg.eval_clip_dir or ctx.run_dir / "evaluation_clip",
        clip_steps=cfg.eval_clip_steps, throughput_batch=cfg.throughput_batch,
        grid_prompts=cfg.grid_prompts, out_dir=ctx.run_dir, info=info, **common))
    return out


def _info(ctx: RunContext, obj: Any, cascade: Any) -> dict[str, float]:
    """Trainable parameters (every stage's noise model and a trained conditioner),
    frozen ones (a frozen text encoder, counted once) and the training wall time (this
    run's, which includes the stages trained inside it; a named encoder's own run
    added)."""
    trainable = sum(p.numel() for s in cascade.stages for p in s.noise_model.parameters())
    if "conditioner" in obj.modules():
        trainable += sum(p.numel() for p in obj.conditioner.parameters())
        frozen = 0
    else:
        frozen = parameters_used(obj.conditioner)
    from pathlib import Path

    source = getattr(obj, "text_source", "")
    from ...clip.stage import TRAINED_HERE as CLIP_HERE
    from .stages import TRAINED_HERE as TEXT_HERE

    reused = Path(source) if source and source not in (TEXT_HERE, CLIP_HERE) else None
    return {"trainable_parameters": float(trainable), "frozen_parameters": float(frozen),
            "train_wall_s": round(train_wall_seconds(ctx.run_dir, reused), 2)}


@torch.no_grad()
def super_resolution_figures(ctx: RunContext, obj: Any, stage: Any) -> dict[str, float]:
    """The ``imagen-sr`` objective's evaluation (module doc) of ``stage``."""
    from .pipeline import CascadeOptions, run_stage, upsample

    cfg = obj.config
    full = obj.sample_shape[-1]
    eval_full, _, extra = evaluation_splits(ctx, cfg.eval_split, obj.dataset, ctx.log)
    eval_low = (dataset_at(ctx, cfg.low_resolution, cfg.eval_split)
                if "eval_on_train" not in extra else dataset_at(ctx, cfg.low_resolution))
    n = min(cfg.eval_images, len(eval_full))
    real = stack_images(eval_full, range(n))
    low = stack_images(eval_low, range(n))
    captions = conditions_of(eval_full, "caption")[:n]
    evaluator = eval_full.evaluator() if hasattr(eval_full, "evaluator") else None
    out: dict[str, float] = dict(extra)

    def score(name: str, images: torch.Tensor) -> None:
        out[f"{name}_psnr"] = float(psnr(real, images).mean())
        out[f"{name}_ssim"] = float(ssim(real, images).mean()) if full >= 11 else float("nan")
        if evaluator is not None:
            out[f"{name}_exact"] = attribute_scores(evaluator, images, captions)["exact"]

    score("bicubic", upsample(low, real.shape[1:], "bicubic").clamp(-1, 1))
    if evaluator is not None:
        out["real_exact"] = attribute_scores(evaluator, real, captions)["exact"]
    for a in cfg.eval_aug_levels:
        opts = CascadeOptions(aug_level=a, thresholding=cfg.thresholding)
        images = []
        for s in range(0, n, cfg.eval_batch_size):
            picks = range(s, min(n, s + cfg.eval_batch_size))
            gens = [torch.Generator().manual_seed(ctx.spec.seed + i) for i in picks]
            images.append(run_stage(stage, [captions[i] for i in picks], gens, opts,
                                    steps=cfg.eval_steps, guidance=cfg.fd_guidance,
                                    device=obj.device, previous=low[list(picks)]).cpu())
        score(f"sr_a{a:g}", torch.cat(images))
    ctx.log("super-resolution: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out
