"""unCLIP's own figures, beside the shared evaluation: :func:`unclip_figures` and
:func:`variation_figures`.

On the shared evaluation's headline set (the first ``n_captions`` eval items whose
caption is unseen in training, each sampled with the generator seeded ``seed + i``):

``prior_cosine`` (``_se``)
    the mean cosine of the prior's sampled image embedding (best of ``candidates``) with
    the generation CLIP's embedding of the item's real image;
``prior_cosine_floor`` (``_se``)
    the same embeddings against the real images of the captions *shuffled* (the
    evaluation's seeded derangement): what an embedding that ignores its caption
    scores, the baseline users compare the prior with;
``text_cosine``
    the cosine of the caption's CLIP text embedding with the real image's (what the
    decoder gets in the ablation without a prior: CLIP's image and text embeddings are
    not the same vectors);
``true_embedding_{attr}`` (``_se``)
    with ``ablation``: the evaluator's scores of images the decoder makes from the
    *true* image embedding (of the item's real image) and the caption, the ceiling of
    the ablation (its other two routes, ``text_embedding`` and the prior, are sweep
    settings of the shared evaluation).

:func:`variation_figures` measures variations (``gaf sample --image``): for real eval
images, ``per_image`` variations each, the fraction of the original's attributes
that the evaluator reads back from the variations (``variation_{attr}``, judged
against the original's caption) and how much the variations differ from one another
(``variation_diversity_{position,size}``: entropy in bits of the first object's reading
over one image's variations, averaged; ``variation_pixel_distance``: mean per-pixel
L2 distance between two variations of the same image, next to the same distance
between the originals of different images, ``variation_pixel_distance_between``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...images.batches import stack_images
from ..evaluation import attribute_scores, caption_sets, entropy_bits, shuffled
from ..training_data import conditions_of

__all__ = ["unclip_figures", "variation_figures"]


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    n = len(v)
    return float(v.mean()), (float(v.std() / math.sqrt(n)) if n > 1 else float("nan"))


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def unclip_figures(pipe: Any, options: dict[str, Any], *, train_ds: Any, eval_ds: Any,
                   n_captions: int, seed: int, batch_size: int = 100,
                   ablation: bool = True) -> dict[str, float]:
    """The prior's cosine (and floor), the text embedding's cosine and, with
    ``ablation``, the true-embedding route's attribute scores (see the module doc)."""
    captions = conditions_of(eval_ds, "caption")
    head = caption_sets(conditions_of(train_ds, "caption"), captions, n_captions)["unseen"]
    if not head:
        return {}
    caps = [captions[i] for i in head]
    seeds = [seed + i for i in head]
    opts = pipe.options(**options)
    true, predicted = [], []
    for s in range(0, len(head), batch_size):
        part = head[s:s + batch_size]
        true.append(pipe.image_embeddings(stack_images(eval_ds, part)).cpu())
        predicted.append(pipe.prior_embeddings(
            caps[s:s + batch_size], generators=_generators(seeds[s:s + batch_size]),
            steps=opts.prior_steps, guidance=opts.prior_guidance,
            candidates=opts.candidates).cpu())
    true_e, pred_e = torch.cat(true), torch.cat(predicted)
    out: dict[str, float] = {}
    out["prior_cosine"], out["prior_cosine_se"] = _mean_se(
        F.cosine_similarity(pred_e, true_e, dim=-1))
    order = shuffled(list(range(len(head))), seed)
    out["prior_cosine_floor"], out["prior_cosine_floor_se"] = _mean_se(
        F.cosine_similarity(pred_e, true_e[order], dim=-1))
    text = torch.cat([pipe.conditioner.text_condition(caps[s:s + batch_size])[2].cpu()
                      for s in range(0, len(caps), batch_size)])
    out["text_cosine"], out["text_cosine_se"] = _mean_se(
        F.cosine_similarity(text.float(), true_e, dim=-1))
    evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
    if ablation and evaluator is not None:
        images = []
        for s in range(0, len(head), batch_size):
            images.append(pipe.decode_embeddings(
                true_e[s:s + batch_size], caps[s:s + batch_size],
                generators=_generators(seeds[s:s + batch_size]), steps=opts.steps,
                guidance=opts.guidance).float().cpu())
        scores = attribute_scores(evaluator, torch.cat(images), caps)
        out.update({f"true_embedding_{k}": v for k, v in scores.items()})
    return out


@torch.no_grad()
def variation_figures(pipe: Any, *, eval_ds: Any, n_images: int = 50, per_image: int = 8,
                      seed: int = 0, batch_size: int = 100, **options: Any) -> dict[str, float]:
    """What variations keep and how diverse they are (see the module doc), for the first
    ``n_images`` eval images with ``per_image`` variations each (variation ``j`` of image
    ``i`` seeded ``seed + i * per_image + j``); ``options``: the decoder's ``steps`` and
    ``guidance``."""
    from ...images.shapes_eval import parse_caption

    n = min(n_images, len(eval_ds))
    originals = stack_images(eval_ds, range(n))
    captions = conditions_of(eval_ds, "caption", n)
    rows = originals.repeat_interleave(per_image, dim=0)
    seeds = [seed + k for k in range(len(rows))]
    images = []
    for s in range(0, len(rows), batch_size):
        images.append(pipe.variations(rows[s:s + batch_size],
                                      generators=_generators(seeds[s:s + batch_size]),
                                      **options).float().cpu())
    fakes = torch.cat(images)
    out: dict[str, float] = {"variation_n": float(n), "variation_per_image": float(per_image)}
    evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
    if evaluator is not None:
        targets = [c for c in captions for _ in range(per_image)]
        out.update({f"variation_{k}": v for k, v in
                    attribute_scores(evaluator, fakes, targets).items() if k != "n"})
        for attr in ("position", "size"):
            entropies = []
            for i, caption in enumerate(captions):
                colour = parse_caption(caption)["colour"]
                readings = []
                for img in fakes[i * per_image:(i + 1) * per_image]:
                    objs = [o for o in evaluator.read(img)["objects"] if o["colour"] == colour]
                    readings.append(objs[0][attr] if objs else "missing")
                entropies.append(entropy_bits(readings))
            out[f"variation_diversity_{attr}"] = float(sum(entropies) / len(entropies))
    grouped = fakes.view(n, per_image, -1)
    within = (grouped[:, 0] - grouped[:, 1]).pow(2).mean(-1).sqrt() if per_image > 1 else None
    if within is not None:
        out["variation_pixel_distance"] = float(within.mean())
    flat = originals.flatten(1).float()
    if n > 1:
        out["variation_pixel_distance_between"] = float(
            (flat - flat.roll(1, dims=0)).pow(2).mean(-1).sqrt().mean())
    return out
