"""One evaluation for every text-to-image generator: :func:`evaluate_pipeline`.

Every text-to-image baseline (``ldm`` today; the GAN, token, unCLIP and cascaded
models of issue 15's timeline later) is measured by this one function, on the same
captions with the same per-image seeds, so its rows are comparable. It takes any
pipeline in the ``Pipeline`` sense (``pipe(conditions, generators=…, **options)`` →
``(B, C, H, W)`` in ``[-1, 1]``; ``evaluations_per_image(**options)``) and the real
datasets; it trains nothing and has no tuned defaults: guidance,
steps and the like arrive in ``options`` (chosen on the ``validation`` split, never on
``eval``; the objective's ``eval_split`` picks which one is read).

The caption sets (fixed, the same for every method)
---------------------------------------------------
With ``T`` the set of caption strings of the run's training data and ``A(c)`` the
attribute set that caption ``c`` states (:func:`stated`, via the evaluator's
``parse_caption``: what the caption says, whatever its wording):

``unseen``
    the first ``n_captions`` items of the eval split, in order, whose caption string
    is not in ``T`` (the **headline**: 21% of the eval captions of the default run
    occur word for word in training, and the generator may simply have memorised
    them);
``unseen_attrs``
    the first ``n_captions`` eval items whose stated attribute set ``A(c)`` is stated
    by no training caption (new compositions, not just new wordings);
``swapped``
    the first ``n_captions`` (rounded down to even) items of the ``swapped`` split,
    pairs ``2k, 2k+1`` with the two objects' colours exchanged, when a swapped dataset
    is given; ``swapped_pair_binding`` is the fraction of pairs whose *both* images are
    exactly right (a model that ignores which colour goes with which shape gets at most
    one of the two).

Eval item ``i`` is always sampled with the generator seeded ``seed + i`` and swapped
item ``j`` with ``seed + SWAPPED_SEED_OFFSET + j``, whatever the batching and
whichever set it belongs to (an item in two sets is sampled once).

Metrics (a flat ``dict[str, float]``)
-------------------------------------
``{set}_{attr}``, ``{set}_{attr}_se``, ``{set}_n``
    the evaluator's scores (``colour``, ``shape``, ``size``, ``position``,
    ``relation``, ``count``, ``exact``: the fraction of stated attributes read back
    right, see :mod:`gaf.plugins.images.shapes_eval`) on each set, with the binomial
    standard error ``sqrt(p (1 − p) / k)`` over the ``k`` judgements behind it (one per
    object for colour, shape, size, position; one per image otherwise). ``{set}`` is
    ``unseen``, ``unseen_attrs`` and ``swapped`` for ``options``, and each name of
    ``sweep`` (other option settings, e.g. guidance scales) on the ``unseen`` set;
``floor_{attr}`` (``_se``)
    the ``unseen`` samples judged against the captions *shuffled* (a seeded
    derangement, :func:`shuffled`): what ignoring the prompt scores;
``ceiling_{attr}`` (``_se``)
    the real images of the ``unseen`` items against their own captions: a perfect
    generator's score under the evaluator;
``fd``, ``fd_floor``, ``kid``, ``kid_se``, ``kid_floor``, ``kid_floor_se``, ``feature_accuracy``
    :func:`gaf.plugins.metrics.frechet.distribution_distances` on a layout-aware
    feature net: the samples for the first ``fd_images`` eval captions (set A) against
    the real images of eval items ``fd_images … 2·fd_images − 1`` (set B, disjoint
    scenes of the same distribution); the floors compare the real images of A with B;
``diversity_{attr}``, ``diversity_{attr}_real``, ``diversity_{attr}_n``
    for ``position`` and ``size``: over the ``unseen`` items whose caption leaves that
    attribute of the first object unstated, the entropy (bits) of the evaluator's
    reading of it (the cell / size of the heaviest detected object of the first
    object's colour; ``missing`` when there is none), for the samples and for the real
    images of the same items. A generator that always draws the middle cell scores 0
    where the data has about log2(9);
``clip_score`` (``_se``), ``clip_r_precision`` (``_se``), ``clip_exact_auc``, ``{sweep}_clip_score`` …
    from the **evaluation CLIP** (:mod:`gaf.plugins.clip.evaluation_clip`: its own
    ViT design and constant seed, trained on ``train_ds`` in ``clip_dir`` or given as
    ``clip_model``; a pipeline that holds a CLIP with its weights is refused): the mean
    CLIPScore ``2.5·max(cos, 0)`` of the ``unseen`` samples with their captions, and the
    fraction whose own caption is more similar than every caption with one attribute
    swapped (R-precision, chance ``clip_r_precision_floor``);
    ``clip_score_floor`` is the samples against shuffled captions, ``clip_*_real`` the
    real images of the same items; ``clip_exact_auc`` is the probability that a sample
    the evaluator reads exactly right has a higher CLIP score than one it does not (how
    far the two judges agree, image by image); the sweep settings get their own
    ``{name}_clip_score`` and ``{name}_clip_r_precision``;
``evaluations_per_image``, ``images_per_s``
    the pipeline's network evaluations per image (its ``evaluations_per_image``, else
    ``steps × (2 if guidance ≠ 1 else 1) + 1`` for the decode) and the throughput of
    one timed pass at ``throughput_batch`` (200) images, decoding included;
``sampling_s``, ``sampled_n``
    the wall time of sampling the ``sampled_n`` distinct images of the sets above
    (batches of ``batch_size``, decoding included; the sweep, swapped pairs and the
    throughput pass not counted);
anything in ``info``
    passed through: the objective's ``trainable_parameters``,
    ``frozen_parameters`` and ``train_wall_s`` (the method's training wall time).

A class-conditional pipeline (``condition_key="label"``) is scored on the first
object's colour and shape (all a label says) on the first ``n_captions`` eval items
(set ``eval``; no caption can be unseen); on a dataset without an attribute evaluator
(``idx``) it gets no attribute scores here, and ``ldm`` adds the class-wise
evaluation of :mod:`.class_conditional`. ``out_dir/samples/grid.png`` shows the
first ``grid_prompts`` ``unseen`` captions (columns, listed in ``grid.txt``), one row
per ``sweep`` setting.
"""

from __future__ import annotations

import json

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf.errors import BadConfig, BadData
from gaf.seeding import rng

from ..images.batches import stack_images
from .training_data import conditions_of

__all__ = ["evaluate_pipeline", "caption_sets", "stated", "sample_in_batches", "shuffled",
           "attribute_scores", "binomial_se", "entropy_bits", "evaluations_per_image",
           "auc", "ATTRIBUTES", "SWAPPED_SEED_OFFSET", "TIMINGS"]

ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count", "exact")
#: the metrics that are wall-clock measurements (the rest is deterministic given the seed)
TIMINGS = ("sampling_s", "fd_s", "clip_s", "images_per_s")
#: swapped item ``j`` is sampled with the generator seeded ``seed + SWAPPED_SEED_OFFSET + j``
SWAPPED_SEED_OFFSET = 1_000_000


# ------------------------------------------------------------------ building blocks


def sample_in_batches(pipe: Any, conditions: Sequence[Any], seeds: Sequence[int] | int, *,
                      batch_size: int, **options: Any) -> Tensor:
    """Images for ``conditions``; image ``i`` uses a generator seeded ``seeds[i]``
    (``seeds + i`` for an int) whatever the batching; ``options`` go to the pipeline."""
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(conditions))]
    if len(seeds) != len(conditions):
        raise ValueError(f"{len(seeds)} seeds for {len(conditions)} conditions")
    out = []
    for start in range(0, len(conditions), batch_size):
        chunk = list(conditions[start:start + batch_size])
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        out.append(pipe(chunk, generators=gens, **options).detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


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


def binomial_se(p: float, k: int) -> float:
    """Standard error ``sqrt(p (1 − p) / k)`` of a fraction ``p`` of ``k`` trials."""
    return math.sqrt(p * (1.0 - p) / k) if k > 0 else float("nan")


def entropy_bits(readings: Sequence[Any]) -> float:
    """Plug-in entropy ``−Σ p log2 p`` of the empirical distribution of ``readings``."""
    n = len(readings)
    if n == 0:
        return float("nan")
    counts = np.array(list(Counter(readings).values()), dtype=np.float64)
    p = counts / n
    return float(-(p * np.log2(p)).sum())


def attribute_scores(evaluator: Any, images: Tensor, targets: Sequence[Any]) -> dict[str, float]:
    """The evaluator's scores of ``images`` against ``targets`` with binomial standard
    errors: ``{attr}``, ``{attr}_se`` for the attributes judged, and ``n`` (images)."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    totals: dict[str, list[int]] = {}
    for image, target in zip(images, targets):
        for key, ok in evaluator.check(image, target).items():
            for v in (ok if isinstance(ok, list) else [ok]):
                totals.setdefault(key, []).append(int(v))
    out: dict[str, float] = {}
    for key in ATTRIBUTES:
        if totals.get(key):
            p = float(np.mean(totals[key]))
            out[key], out[f"{key}_se"] = p, binomial_se(p, len(totals[key]))
    out["n"] = float(len(targets))
    return out


def stated(caption: str) -> Any:
    """A hashable key of the attribute set that ``caption`` states (what the
    evaluator's ``parse_caption`` reads from it); the caption itself when it does not
    parse."""
    from ..images.shapes_eval import parse_caption

    try:
        parsed = parse_caption(caption)
    except ValueError:
        return ("unparsed", caption)
    return _freeze(parsed)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def caption_sets(train_captions: Sequence[str], eval_captions: Sequence[str],
                 n: int) -> dict[str, list[int]]:
    """Eval indices of the ``unseen`` set (the first ``n`` whose string is not a
    training caption) and the ``unseen_attrs`` set (the first ``n`` whose stated
    attribute set no training caption states), in eval order."""
    seen = set(train_captions)
    seen_attrs = {stated(c) for c in seen}
    unseen = [i for i, c in enumerate(eval_captions) if c not in seen][:n]
    unseen_attrs = [i for i, c in enumerate(eval_captions) if stated(c) not in seen_attrs][:n]
    return {"unseen": unseen, "unseen_attrs": unseen_attrs}


def evaluations_per_image(pipe: Any, options: Mapping[str, Any]) -> float:
    """The pipeline's own count at ``options`` (``Pipeline.evaluations_per_image``: only
    the pipeline knows which networks it runs; no guess is made for it)."""
    return float(pipe.evaluations_per_image(**options))


# ------------------------------------------------------------------ the evaluation


def evaluation_splits(ctx: Any, split: str, train_ds: Any,
                      log: Callable[[str], Any] = print) -> tuple[Any, Any, dict[str, float]]:
    """``(eval_ds, swapped_ds, extra)`` for an objective's evaluation on ``split``: the
    training data with ``eval_on_train = 1`` when the dataset has no such split, and the
    ``swapped`` split only when reading ``eval`` and the dataset has one (``idx``
    refuses it)."""
    from ..images.batches import split_dataset

    eval_ds, extra = split_dataset(ctx, split), {}
    if eval_ds is None:
        log(f"the dataset has no {split!r} split: evaluating on training data "
            f"(eval_on_train = 1)")
        eval_ds, extra = train_ds, {"eval_on_train": 1.0}
    swapped = None
    if split == "eval":
        try:
            swapped = split_dataset(ctx, "swapped")
        except BadConfig:  # the dataset knows no such split
            swapped = None
    return eval_ds, swapped, extra


def parameters_used(module: Any) -> int:
    """The number of parameters ``module`` uses to make images: its
    ``used_parameters()`` when it has one (``clip-text`` holds a whole CLIP but runs
    only the text tower), else all its parameters."""
    used = getattr(module, "used_parameters", None)
    params = used() if callable(used) else module.parameters()
    return sum(p.numel() for p in params)


def train_wall_seconds(run_dir: Path, reused: Path | None = None) -> float:
    """A method's training wall time (``train_wall_s``): ``run_dir``'s last logged
    ``elapsed_s`` (seconds from the start of the run, so its setup and any stage trained
    inside it count once) plus, when ``reused`` names a trained component an earlier
    run saved (``--autoencoder RUN_DIR``, ``conditioner.clip``), that run's ``setup_s +
    train_s`` from the summary.json in ``reused`` or one level up (0 without one). A
    resumed run counts the wall time of its last process only."""
    return logged_wall_seconds(run_dir) + reused_run_seconds(reused)


def reused_run_seconds(reused: Path | None) -> float:
    """``setup_s + train_s`` of the run that saved the component in ``reused``, from the
    summary.json there or one level up (0 for None or without one)."""
    if reused is None:
        return 0.0
    for d in (reused, reused.parent):
        summary = d / "summary.json"
        if summary.is_file():
            try:
                data = json.loads(summary.read_text(encoding="utf-8"))
                return float(data.get("setup_s") or 0.0) + float(data.get("train_s") or 0.0)
            except (ValueError, AttributeError, TypeError):
                return 0.0
    return 0.0


def logged_wall_seconds(run_dir: Path) -> float:
    """The last ``elapsed_s`` of ``run_dir/metrics.jsonl`` (0 without one)."""
    seconds = 0.0
    metrics = Path(run_dir) / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                seconds = max(seconds, float(json.loads(line).get("elapsed_s", 0.0)))
            except (ValueError, AttributeError):
                continue
    return seconds


def evaluate_pipeline(pipe: Any, options: Mapping[str, Any], *, train_ds: Any, eval_ds: Any,
                      swapped_ds: Any = None, sweep: Mapping[str, Mapping[str, Any]] | None = None,
                      condition_key: str = "caption", n_captions: int = 200,
                      fd_images: int | None = None, feature_net: Any = None,
                      features_dir: str | Path | None = None,
                      clip_model: Any = None, clip_dir: str | Path | None = None,
                      clip_steps: int = 0, batch_size: int = 100,
                      throughput_batch: int = 200, grid_prompts: int = 0,
                      out_dir: str | Path | None = None, seed: int = 0,
                      info: Mapping[str, float] | None = None,
                      log: Callable[[str], Any] = print) -> dict[str, float]:
    """Evaluate ``pipe`` sampled with ``options`` (see the module docstring).

    ``train_ds``: the run's training data (its captions define "unseen"; a feature net
    is trained on it when needed); ``eval_ds``: the held-out split read (``eval``, or
    ``validation`` when tuning); ``swapped_ds``: the ``swapped`` split or ``None``;
    ``sweep``: name → other option settings scored on the ``unseen`` set;
    ``fd_images`` (default ``n_captions``; 0 = no FD): the size of sets A and B;
    ``feature_net`` or ``features_dir`` (a cached one, trained there when absent) for
    FD/KID; ``clip_model`` or ``clip_dir`` (the evaluation CLIP cached there, trained
    for ``clip_steps`` steps when absent; ``clip_steps=0`` and no model = no CLIP
    metrics) for the CLIP score and R-precision; ``info``: figures passed through
    (parameters, training time).
    """
    if n_captions < 1:
        raise BadConfig(f"evaluate_pipeline: n_captions must be >= 1, got {n_captions}")
    options = dict(options)
    sweep = {k: dict(v) for k, v in (sweep or {}).items()}
    fd_images = n_captions if fd_images is None else fd_images
    out: dict[str, float] = {}
    evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
    eval_conditions = conditions_of(eval_ds, condition_key)
    if condition_key == "caption":
        sets = caption_sets(conditions_of(train_ds, "caption"), eval_conditions, n_captions)
    else:
        sets = {"eval": list(range(min(n_captions, len(eval_conditions))))}
    head = sets.get("unseen", sets.get("eval"))
    if not head:
        raise BadData("evaluate_pipeline: no eval item has a caption unseen in training")
    fd_ok = fd_images > 0 and len(eval_ds) >= 2 * fd_images
    if fd_images > 0 and not fd_ok:
        log(f"FD skipped: it needs {2 * fd_images} eval images, the split has {len(eval_ds)}")
    wanted = sorted(set().union(*sets.values(), range(fd_images) if fd_ok else ()))
    t0 = time.perf_counter()
    samples = dict(zip(wanted, sample_in_batches(
        pipe, [eval_conditions[i] for i in wanted], [seed + i for i in wanted],
        batch_size=batch_size, **options)))
    out["sampling_s"] = round(time.perf_counter() - t0, 2)
    out["sampled_n"] = float(len(wanted))
    log(f"evaluation: {len(wanted)} samples in {out['sampling_s']:.1f} s")

    def images(indices: Sequence[int]) -> Tensor:
        return torch.stack([samples[i] for i in indices])

    drawn: dict[str, Tensor] = {}

    def swept(name: str) -> Tensor:
        """The headline set's samples at sweep setting ``name``, drawn once."""
        if name not in drawn:
            opts = sweep[name]
            drawn[name] = images(head) if opts == options else sample_in_batches(
                pipe, [eval_conditions[i] for i in head], [seed + i for i in head],
                batch_size=batch_size, **opts)
        return drawn[name]

    targets = {name: _targets(eval_ds, condition_key, [eval_conditions[i] for i in idx])
               for name, idx in sets.items()} if evaluator is not None else {}
    if evaluator is not None and targets[next(iter(sets))] is not None:
        for name, idx in sets.items():
            out.update(_prefixed(name, attribute_scores(evaluator, images(idx), targets[name])))
        head_name = "unseen" if "unseen" in sets else "eval"
        head_targets = targets[head_name]
        out.update(_prefixed("floor", attribute_scores(
            evaluator, images(head), shuffled(head_targets, seed))))
        real_head = stack_images(eval_ds, head)
        out.update(_prefixed("ceiling", attribute_scores(evaluator, real_head, head_targets)))
        for name in sweep:
            out.update(_prefixed(name, attribute_scores(evaluator, swept(name), head_targets)))
        if condition_key == "caption":
            out.update(diversity(evaluator, images(head), real_head,
                                 [eval_conditions[i] for i in head]))
        if swapped_ds is not None and condition_key == "caption":
            out.update(_swapped(pipe, options, evaluator, swapped_ds, n_captions, seed,
                                batch_size))
    if condition_key == "caption" and (clip_model is not None or (clip_dir and clip_steps)):
        out.update(_clip_scores(pipe, list(sweep), swept, clip_model, clip_dir,
                                clip_steps, train_ds, eval_ds, head, images(head),
                                [eval_conditions[i] for i in head], evaluator, seed, log))
    if fd_ok:
        out.update(_distances(feature_net, features_dir, train_ds, eval_ds,
                              images(range(fd_images)), fd_images, seed, log))
    out["evaluations_per_image"] = evaluations_per_image(pipe, options)
    if throughput_batch > 0:
        conds = [eval_conditions[i % len(eval_conditions)] for i in range(throughput_batch)]
        t0 = time.perf_counter()
        sample_in_batches(pipe, conds, seed, batch_size=throughput_batch, **options)
        out["images_per_s"] = round(throughput_batch / (time.perf_counter() - t0), 2)
    if grid_prompts and out_dir is not None:
        _grid(pipe, options, sweep, eval_conditions, head, seed, batch_size, grid_prompts,
              Path(out_dir))
    out.update({k: float(v) for k, v in (info or {}).items()})
    return out


def diversity(evaluator: Any, fake: Tensor, real: Tensor,
              captions: Sequence[str]) -> dict[str, float]:
    """``diversity_{attr}`` / ``_real`` / ``_n`` for ``position`` and ``size`` (see the
    module docstring)."""
    from ..images.shapes_eval import parse_caption

    out: dict[str, float] = {}
    parsed = []
    for c in captions:
        try:
            parsed.append(parse_caption(c))
        except ValueError:
            parsed.append(None)
    for attr in ("position", "size"):
        picks = [i for i, p in enumerate(parsed) if p is not None and p.get(attr) is None]
        if not picks:
            continue
        for suffix, imgs in (("", fake), ("_real", real)):
            readings = [_reading(evaluator, imgs[i], parsed[i]["colour"], attr) for i in picks]
            out[f"diversity_{attr}{suffix}"] = entropy_bits(readings)
        out[f"diversity_{attr}_n"] = float(len(picks))
    return out


def _reading(evaluator: Any, image: Tensor, colour: str, attr: str) -> Any:
    """The ``attr`` of the heaviest detected object of ``colour`` (``"missing"``)."""
    for obj in evaluator.read(image)["objects"]:
        if obj["colour"] == colour:
            return obj[attr]
    return "missing"


def _swapped(pipe: Any, options: dict[str, Any], evaluator: Any, swapped_ds: Any, n: int,
             seed: int, batch_size: int) -> dict[str, float]:
    count = min(n, len(swapped_ds)) // 2 * 2
    if count == 0:
        return {}
    captions = conditions_of(swapped_ds, "caption", count)
    imgs = sample_in_batches(pipe, captions, seed + SWAPPED_SEED_OFFSET,
                             batch_size=batch_size, **options)
    out = _prefixed("swapped", attribute_scores(evaluator, imgs, captions))
    exact = [bool(evaluator.check(img, c)["exact"]) for img, c in zip(imgs, captions)]
    pairs = [exact[k] and exact[k + 1] for k in range(0, count, 2)]
    p = float(np.mean(pairs))
    out["swapped_pair_binding"], out["swapped_pair_binding_se"] = p, binomial_se(p, len(pairs))
    return out


def _clip_scores(pipe: Any, sweep: list[str], swept: Callable[[str], Tensor], model: Any,
                 clip_dir: Any, steps: int, train_ds: Any, eval_ds: Any, head: list[int],
                 fake: Tensor, captions: list[str], evaluator: Any, seed: int,
                 log: Callable[[str], Any]) -> dict[str, float]:
    """The evaluation CLIP's figures on the headline set (see the module docstring);
    ``swept(name)`` gives the samples of sweep setting ``name``, the same ones the
    evaluator scores (drawn once)."""
    from gaf.plugins.clip.evaluation_clip import (cached_evaluation_clip, check_independent,
                                                  clip_metrics)
    from gaf.plugins.clip.score import clip_score

    t0 = time.perf_counter()
    if model is None:
        model = cached_evaluation_clip(clip_dir, train_ds, steps=steps, eval_ds=eval_ds,
                                       log=log)
    check_independent(pipe, model)
    out = clip_metrics(model, fake, captions)
    floor = clip_metrics(model, fake, shuffled(captions, seed))
    out["clip_score_floor"], out["clip_r_precision_floor_shuffled"] = (
        floor["clip_score"], floor.get("clip_r_precision", float("nan")))
    real = clip_metrics(model, stack_images(eval_ds, head), captions)
    out.update({f"{k}_real": v for k, v in real.items() if not k.endswith("_floor")})
    if evaluator is not None:
        exact = [bool(evaluator.check(img, c)["exact"]) for img, c in zip(fake, captions)]
        value = auc(clip_score(model, fake, captions).tolist(), exact)
        if not math.isnan(value):  # (undefined when every image, or none, is exact)
            out["clip_exact_auc"] = value
    for name in sweep:
        scores = clip_metrics(model, swept(name), captions)
        out[f"{name}_clip_score"] = scores["clip_score"]
        out[f"{name}_clip_score_se"] = scores["clip_score_se"]
        if "clip_r_precision" in scores:
            out[f"{name}_clip_r_precision"] = scores["clip_r_precision"]
            out[f"{name}_clip_r_precision_se"] = scores["clip_r_precision_se"]
    out["clip_s"] = round(time.perf_counter() - t0, 2)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """The probability that a random positive item scores above a random negative one
    (ties count one half): the ROC AUC of ``scores`` for ``positive``; NaN when either
    class is empty."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return float(wins / (len(pos) * len(neg)))


def _distances(net: Any, features_dir: Any, train_ds: Any, eval_ds: Any, fake: Tensor,
               m: int, seed: int, log: Callable[[str], Any]) -> dict[str, float]:
    from gaf.plugins.metrics.frechet import distribution_distances

    t0 = time.perf_counter()
    if net is None:
        if features_dir is None:
            log("FD skipped: no feature net and no features directory")
            return {}
        from gaf.plugins.metrics.features import cached_feature_net

        try:
            net = cached_feature_net(features_dir, train_ds, eval_ds, seed=seed,
                                     max_train=5000, max_eval=2 * m, compute_floor=False)
        except BadData as exc:
            log(f"FD skipped: {exc}")
            return {}
    real_a = stack_images(eval_ds, range(m))
    real_b = stack_images(eval_ds, range(m, 2 * m))
    scores = distribution_distances(net, fake, real_a, real_b, seed=seed)
    keep = ("fd", "fd_floor", "kid", "kid_se", "kid_floor", "kid_floor_se", "feature_accuracy")
    out = {k: float(scores[k]) for k in keep if k in scores}
    out["fd_s"] = round(time.perf_counter() - t0, 2)
    return out


def _grid(pipe: Any, options: dict[str, Any], sweep: dict[str, dict[str, Any]],
          conditions: list[Any], head: list[int], seed: int, batch_size: int, k: int,
          out_dir: Path) -> None:
    from ..images.grid import save_grid

    picks = head[:k]
    settings = sweep or {"options": options}
    rows = torch.stack([sample_in_batches(pipe, [conditions[i] for i in picks],
                                          [seed + i for i in picks], batch_size=batch_size,
                                          **opts) for opts in settings.values()])
    save_grid(rows, out_dir / "samples" / "grid.png")
    (out_dir / "samples" / "grid.txt").write_text(
        "rows: " + ", ".join(settings) + "\n"
        + "".join(f"column {j + 1}: {conditions[i]}\n" for j, i in enumerate(picks)),
        encoding="utf-8")


def _targets(dataset: Any, key: str, conditions: list[Any]) -> list[Any] | None:
    """What the evaluator checks each sample against: the caption, or for a label the
    class name ("red circle": colour and shape)."""
    if key == "caption":
        return conditions
    names = getattr(dataset, "class_names", None)
    if key == "label" and names is not None:
        out = []
        for c in conditions:
            colour, shape = names[int(c)].split(" ", 1)
            out.append({"colour": colour, "shape": shape, "second": None, "relation": None})
        return out
    return None


def _prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in scores.items()}
