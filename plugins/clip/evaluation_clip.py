"""The evaluation CLIP: the CLIP that scores generators, and never generates.

A generator guided, conditioned or reranked by a CLIP learns to please that CLIP, so a
score from the same CLIP would measure the optimisation, not the images. The shared
text-to-image evaluation (:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`)
therefore takes its CLIP score and R-precision from a CLIP of its own:

* **its own design**: the ``vit`` image tower (:data:`EVALUATION_CLIP`: width 64, 4
  blocks, 8×8 patches), where the generation CLIP defaults to the residual CNN. The
  patch size and the step count (the ``ldm`` evaluation's ``eval_clip_steps``, 3,000)
  were chosen on the validation split for reading per unit of training time
  (docs/results.md § CLIP has the table);
* **its own seed**: initialisation and data order come from the named streams
  ``"evaluation-clip-init"`` and ``"evaluation-clip-order"`` of
  :data:`EVALUATION_SEED`, a constant, not the run's seed, so every run that trains it
  on the same data with the same steps gets the same evaluation CLIP (up to float
  round-off across machines) and the scores of different methods are comparable;
* **trained on the run's training split only**, with the ``clip`` objective's loss
  (symmetric InfoNCE, identical captions as positives, temperature clamped at 100),
  AdamW (lr 1e-3, weight decay 0.1, 50 warm-up steps, cosine decay), batch 128.

:func:`cached_evaluation_clip` trains it into a directory once (``gaf.json`` +
``model.safetensors`` + the tokenizer, and ``evaluation_clip.json`` recording the
data, steps and held-out figures) and loads it afterwards; a directory trained with
other settings is refused, not overwritten. :func:`check_independent` raises when a
pipeline holds a CLIP with the evaluation CLIP's weights, and
:func:`generation_clips` finds the CLIPs a pipeline holds.

:func:`clip_metrics` is what the evaluation reports for generated images and their
captions: ``clip_score`` (mean CLIPScore, 2.5·max(cos, 0)) with its standard error,
and ``clip_r_precision``: the fraction of images for which their own caption is more
similar than every caption with one attribute swapped (:mod:`.zeroshot`), with its
chance floor.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gaf.atomic import atomic_write_text, read_json
from gaf.errors import BadConfig, BadData
from gaf.seeding import EpochOrder, torch_seed
from gaf.train import lr_factor
from gaf.trainconfig import TrainConfig

from ..images.batches import stack_images
from ..t2i.training_data import conditions_of
from .loss import clamp_log_scale_, clip_loss, duplicate_mask
from .score import clip_score
from .towers import CLIPConfig, CLIPModel
from .zeroshot import zero_shot_reading

__all__ = ["EVALUATION_CLIP", "EVALUATION_SEED", "train_clip", "cached_evaluation_clip",
           "clip_metrics", "generation_clips", "check_independent", "fingerprint"]

#: the evaluation CLIP's architecture (options of :class:`~.towers.CLIPConfig`)
EVALUATION_CLIP = {"image_tower": "vit", "image_width": 64, "image_layers": 4,
                   "patch_size": 8, "image_heads": 4}
#: the seed of its initialisation and data order (not any run's seed)
EVALUATION_SEED = 16_016
_INFO = "evaluation_clip.json"


def train_clip(images: Tensor, captions: Sequence[str], config: CLIPConfig, *, seed: int,
               steps: int, batch_size: int = 128, lr: float = 1e-3,
               weight_decay: float = 0.1, warmup: int = 50,
               log: Callable[[str], Any] = print) -> CLIPModel:
    """A :class:`CLIPModel` trained from scratch on ``images`` ``(N, C, H, W)`` and their
    ``captions`` (see the module docstring for the recipe); deterministic for ``seed``."""
    if len(images) != len(captions) or len(images) < 2:
        raise BadData(f"train_clip needs at least 2 (image, caption) pairs, got "
                      f"{len(images)} images and {len(captions)} captions")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, "evaluation-clip-init"))
        model = CLIPModel(config)
    with torch.enable_grad():  # an evaluation may call this under no_grad
        return _train(model, images, captions, seed=seed, steps=steps, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, warmup=warmup, log=log)


def _train(model: CLIPModel, images: Tensor, captions: Sequence[str], *, seed: int,
           steps: int, batch_size: int, lr: float, weight_decay: float, warmup: int,
           log: Callable[[str], Any]) -> CLIPModel:
    ids, mask = model.tokenize(captions)
    decay, other = model.decay_split()
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=lr)

    schedule = TrainConfig(steps=steps, warmup_steps=warmup, schedule="cosine")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step))
    order = EpochOrder(len(images), seed, "evaluation-clip-order")
    batch = min(batch_size, len(images))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        picks = torch.as_tensor(order.slice(step * batch, batch))
        img, txt, log_scale = model(images[picks], ids[picks], mask[picks])
        loss = clip_loss(img, txt, log_scale, duplicate_mask(ids[picks]))
        if not torch.isfinite(loss):
            raise BadData(f"evaluation CLIP: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            clamp_log_scale_(model.log_scale)
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"evaluation CLIP: step {step + 1}/{steps} loss {float(loss.detach()):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    model.requires_grad_(False)
    return model.eval()


def _describe(dataset: Any, captions: Sequence[str]) -> dict[str, Any]:
    """What the evaluation CLIP was trained on: the dataset's type and split, the number
    of pairs and a hash of their captions."""
    text = "\n".join(captions).encode()
    split = getattr(getattr(dataset, "config", None), "split", getattr(dataset, "split", ""))
    return {"type": type(dataset).__name__, "split": str(split),
            "resolution": getattr(dataset, "resolution", None),
            "captions_sha256": hashlib.sha256(text).hexdigest()}


def cached_evaluation_clip(directory: str | Path, train_ds: Any, *, steps: int,
                           eval_ds: Any = None, max_train: int = 10_000,
                           log: Callable[[str], Any] = print) -> CLIPModel:
    """The evaluation CLIP saved in ``directory``, trained there first when absent (on
    the first ``max_train`` items of ``train_ds`` for ``steps`` steps). ``eval_ds``,
    when given, records the zero-shot reading of its first 500 unseen-caption images
    in ``evaluation_clip.json`` (how much the judge itself can read)."""
    import gaf
    from gaf.components import load_component
    from gaf.registry import REGISTRY

    directory = Path(directory)
    n = min(len(train_ds), max_train)
    captions = conditions_of(train_ds, "caption", n)
    want = {"format": "gaf.evaluation_clip", "version": 1, "seed": EVALUATION_SEED,
            "steps": steps, "n_train": n, "dataset": _describe(train_ds, captions),
            "config": EVALUATION_CLIP}
    info_file = directory / _INFO
    if info_file.is_file():
        have = read_json(info_file)
        same = {k: have.get(k) for k in want} == json.loads(json.dumps(want))
        if not same:
            raise BadConfig(f"{directory} holds an evaluation CLIP trained with other "
                            f"settings ({info_file}); point the evaluation elsewhere or "
                            "remove it")
        model = load_component(REGISTRY, "encoder", directory)
        model.requires_grad_(False)
        return model.eval()
    if (directory / "gaf.json").exists():
        raise BadConfig(f"{directory} holds a saved component but no {_INFO}: it is not an "
                        "evaluation CLIP, and it is not overwritten")
    images = stack_images(train_ds, range(n))
    in_channels, resolution = int(images.shape[1]), int(images.shape[-1])
    config = CLIPConfig(**EVALUATION_CLIP, in_channels=in_channels, resolution=resolution)
    log(f"training the evaluation CLIP ({steps} steps on {n} training pairs) in {directory}")
    t0 = time.perf_counter()
    model = train_clip(images, captions, config, seed=EVALUATION_SEED, steps=steps, log=log)
    seconds = round(time.perf_counter() - t0, 1)
    gaf.save(model, directory, kind="encoder", name="clip")
    info = {**want, "seconds": seconds, "fingerprint": fingerprint(model),
            "temperature": float(model.log_scale.exp())}
    if eval_ds is not None:
        seen = set(captions)
        held = conditions_of(eval_ds, "caption")
        picks = [i for i, c in enumerate(held) if c not in seen][:500]
        if picks:
            reading = zero_shot_reading(model, stack_images(eval_ds, picks),
                                        [held[i] for i in picks])
            info["zero_shot_on_real_unseen"] = reading
    atomic_write_text(info_file, json.dumps(info, indent=2) + "\n")
    return model


def fingerprint(model: nn.Module) -> str:
    """A SHA-256 of the model's parameters (names, shapes and float32 bytes)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def generation_clips(pipe: Any) -> list[CLIPModel]:
    """Every :class:`CLIPModel` held by ``pipe``'s modules (its conditioner's frozen
    tower, a reranker's CLIP …), found by walking its attributes one level down and
    every ``nn.Module`` found there."""
    found: dict[int, CLIPModel] = {}
    roots = [pipe] if isinstance(pipe, nn.Module) else []
    roots += [v for v in vars(pipe).values() if isinstance(v, nn.Module)] \
        if hasattr(pipe, "__dict__") else []
    for root in roots:
        for m in root.modules():
            if isinstance(m, CLIPModel):
                found[id(m)] = m
    return list(found.values())


def check_independent(pipe: Any, evaluation_clip: CLIPModel) -> None:
    """Raise :class:`BadConfig` when ``pipe`` generates with the evaluation CLIP itself
    or with a CLIP of identical weights."""
    mark = fingerprint(evaluation_clip)
    for clip in generation_clips(pipe):
        if clip is evaluation_clip or fingerprint(clip) == mark:
            raise BadConfig("the evaluation CLIP is also used by the pipeline that is "
                            "evaluated; the CLIP that scores a generator must never generate, "
                            "guide or rerank")


@torch.no_grad()
def clip_metrics(model: CLIPModel, images: Tensor, captions: Sequence[str],
                 batch_size: int = 250) -> dict[str, float]:
    """``clip_score``, ``clip_score_se``, ``clip_r_precision``, ``clip_r_precision_se``,
    ``clip_r_precision_floor`` of ``images`` against their ``captions``."""
    scores = clip_score(model, images, captions, batch_size=batch_size).double()
    n = len(scores)
    out = {"clip_score": float(scores.mean()),
           "clip_score_se": float(scores.std() / math.sqrt(n)) if n > 1 else float("nan")}
    reading = zero_shot_reading(model, images, list(captions))
    if "r_precision" in reading:
        p, k = reading["r_precision"], int(reading["r_precision_n"])
        out["clip_r_precision"] = p
        out["clip_r_precision_se"] = math.sqrt(p * (1 - p) / k)
        out["clip_r_precision_floor"] = reading["r_precision_floor"]
    return out
