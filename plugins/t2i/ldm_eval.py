"""The ``ldm`` objective's evaluation: does the model draw what the prompt says?

For the first ``eval_images`` items of the dataset's ``eval`` split (scenes never
trained on), :func:`evaluate_ldm` samples one image per condition with the EMA weights,
``eval_scheduler`` (default DDIM) and ``eval_steps`` (50), at every guidance scale in
``eval_guidance`` (default 1, 3, 7; image ``i`` always from seed ``run seed + i``), and
reports, when the dataset has an analytic ``evaluator()`` (``shapes``):

``g{s}_{attr}``
    the fraction of samples at guidance ``s`` whose read-back ``attr`` matches what the
    caption states: ``colour``, ``shape``, ``size`` (captions that state it),
    ``position`` (the first object's cell, when stated), ``relation`` (pairs),
    ``count`` (the number of objects) and ``exact`` (all of them at once);
``floor_{attr}``
    the same score for the guidance-``fd_guidance`` samples against the captions
    *shuffled* (each sample judged against another item's caption): what an image
    that ignores its prompt scores, i.e. chance under the data's distribution;
``ceiling_{attr}``
    the real eval images against their own captions: what a perfect generator scores
    under the evaluator (1.0 up to anti-aliasing ambiguities);
``fd``, ``fd_floor``, ``feature_accuracy``
    the in-domain Fréchet distance between the guidance-``fd_guidance`` samples and as
    many real eval images, on the features of a small classifier trained on the real
    training split (:mod:`gaf.plugins.metrics.features`, reused from the first stage's
    run or trained once into ``RUN_DIR/features/``); ``fd_floor`` is the FD between
    those real images and the next ``eval_images`` real ones (two real samples of this
    size). Not an FID: no Inception network exists here, and the numbers are only
    comparable between runs on the same data with the same feature net.

A class-conditional model (``--conditioner class``) is scored on colour and shape of
the first object only (all a label says). ``samples/grid.png`` shows the first
``grid_prompts`` conditions (columns, listed in ``samples/grid.txt``) at every guidance
scale (rows, in ``eval_guidance`` order); ``sample_images_per_s`` is the sampling
throughput of the evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gaf.runs import RunContext
from gaf.seeding import rng

from ..images.batches import split_dataset, stack_images
from ..images.grid import save_grid
from .diffusion_pipeline import per_sample_generators
from .training_data import conditions_of

if TYPE_CHECKING:  # pragma: no cover
    from .ldm import LDM

__all__ = ["evaluate_ldm", "sample_in_batches", "shuffled"]

ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count", "exact")


def sample_in_batches(pipe: Any, conditions: Sequence[Any], *, guidance: float, steps: int,
                      seed: int, batch_size: int) -> Tensor:
    """Images for ``conditions``; image ``i`` uses the generator seeded ``seed + i``
    whatever the batching."""
    out = []
    for start in range(0, len(conditions), batch_size):
        chunk = list(conditions[start:start + batch_size])
        gens = per_sample_generators(seed + start, len(chunk))
        out.append(pipe(chunk, steps=steps, guidance=guidance, generators=gens).cpu())
    return torch.cat(out)


def shuffled(items: Sequence[Any], seed: int) -> list[Any]:
    """``items`` permuted so that no item keeps its place (a random derangement drawn
    from ``seed``'s ``"floor-derangement"`` stream)."""
    n = len(items)
    if n < 2:
        return list(items)
    perm = rng(seed, "floor-derangement").permutation(n)
    order = np.roll(perm, 1)  # item perm[k] gets perm[k-1]'s: a cyclic derangement
    out: list[Any] = [None] * n
    for src, dst in zip(order, perm):
        out[dst] = items[src]
    return out


def evaluate_ldm(obj: LDM, ctx: RunContext) -> dict[str, float]:
    """The metrics of the module docstring for a trained :class:`~.ldm.LDM`."""
    cfg = obj.config
    out: dict[str, float] = {}
    eval_ds = split_dataset(ctx, "eval")
    if eval_ds is None:
        eval_ds = obj.dataset
        out["eval_on_train"] = 1.0
    n = min(cfg.eval_images, len(eval_ds))
    key = obj.conditioner.condition_key
    conditions = conditions_of(eval_ds, key, n)
    targets = _targets(eval_ds, key, conditions, n)
    pipe = obj.pipeline()
    seed = ctx.spec.seed
    samples: dict[float, Tensor] = {}
    t0 = time.perf_counter()
    scales = list(dict.fromkeys([*cfg.eval_guidance, *([cfg.fd_guidance] if cfg.fd else [])]))
    for g in scales:
        samples[g] = sample_in_batches(pipe, conditions, guidance=g, steps=cfg.eval_steps,
                                       seed=seed, batch_size=cfg.eval_batch_size)
    elapsed = time.perf_counter() - t0
    out["eval_images"] = float(n)
    out["sample_images_per_s"] = round(n * len(scales) / elapsed, 2)
    evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
    if evaluator is not None and targets is not None:
        for g in cfg.eval_guidance:
            out.update(_prefixed(f"g{g:g}", evaluator.score(samples[g], targets)))
        floor_images = samples.get(cfg.fd_guidance, samples[cfg.eval_guidance[-1]])
        out.update(_prefixed("floor", evaluator.score(floor_images, shuffled(targets, seed))))
        real = stack_images(eval_ds, range(n))
        out.update(_prefixed("ceiling", evaluator.score(real, targets)))
    if cfg.fd:
        out.update(_fd(obj, ctx, eval_ds, samples[cfg.fd_guidance], n))
    if cfg.grid_prompts:
        k = min(cfg.grid_prompts, n)
        rows = torch.stack([samples[g][:k] for g in cfg.eval_guidance])
        save_grid(rows, ctx.path("samples", "grid.png"))
        ctx.path("samples", "grid.txt").write_text(
            "rows: guidance " + ", ".join(f"{g:g}" for g in cfg.eval_guidance) + "\n"
            + "".join(f"column {i + 1}: {c}\n" for i, c in enumerate(conditions[:k])),
            encoding="utf-8")
    return out


def _targets(dataset: Any, key: str, conditions: list[Any], n: int) -> list[Any] | None:
    """What the evaluator checks each sample against: the caption, or for a label the
    class name ("red circle": colour and shape)."""
    if key == "caption":
        return conditions
    names = getattr(dataset, "class_names", None)
    if key == "label" and names is not None:
        return [_class_target(names[int(c)]) for c in conditions]
    return None


def _class_target(name: str) -> dict[str, Any]:
    colour, shape = name.split(" ", 1)
    return {"colour": colour, "shape": shape, "second": None, "relation": None}


def _prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in scores.items() if k in ATTRIBUTES}


def _fd(obj: LDM, ctx: RunContext, eval_ds: Any, fake: Tensor, n: int) -> dict[str, float]:
    """In-domain FD of ``fake`` against ``n`` real eval images, with the real-vs-real
    floor (skipped, with a log line, when the eval split is too small or unlabelled)."""
    from gaf.errors import BadData
    from gaf.plugins.metrics.features import FeatureNet, cached_feature_net
    from gaf.plugins.metrics.frechet import InDomainFD

    if len(eval_ds) < 2 * n or eval_ds is obj.dataset:
        ctx.log("FD skipped: it needs an eval split with 2 x eval_images images")
        return {}
    t0 = time.perf_counter()
    stage_features = ctx.run_dir / "first_stage" / "features"
    try:
        if (stage_features / "feature_net.json").is_file():
            net = FeatureNet.load(stage_features)
        else:
            net = cached_feature_net(ctx.run_dir / "features", obj.dataset, eval_ds,
                                     seed=ctx.spec.seed, max_train=5000, max_eval=2 * n,
                                     compute_floor=False)
    except BadData as exc:
        ctx.log(f"FD skipped: {exc}")
        return {}
    real = stack_images(eval_ds, range(n))
    real2 = stack_images(eval_ds, range(n, 2 * n))
    scores = InDomainFD(net=net)(real, fake, real2)
    return {"fd": scores["fd"], "fd_floor": scores["fd_floor"],
            "feature_accuracy": scores["feature_accuracy"],
            "fd_s": round(time.perf_counter() - t0, 2)}
