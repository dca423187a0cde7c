"""``clip``: train both CLIP towers from scratch with the contrastive loss of :mod:`.loss`.

Each step takes a global batch of ``train.batch_size`` (image, caption) pairs in the
order of the seeded ``"clip-order"`` epoch permutation (each rank its contiguous
share), encodes both sides, all-gathers the features of every rank with their
gradient, and minimises the symmetric InfoNCE loss with identical captions as
positives. ``train.weight_decay`` applies to the weight matrices and embeddings,
not to gains, biases or the temperature. After every optimiser step the
log-temperature is clamped into ``[0, ln 100]``. Logged: ``loss``, ``temperature`` (``e^τ``) and ``batch_accuracy``
(the fraction of images whose most similar text in the global batch has their caption,
duplicates included).

The evaluation reads held-out pairs (the ``eval`` split, ``validation`` when tuning):
retrieval recall@1 and @5 in both directions among ``eval_pairs`` pairs, a retrieved
item counting as right when its caption is identical to the query's; and the zero-shot
reading of :mod:`.zeroshot` (``zero_shot_{attribute}`` beside its chance floor,
``zero_shot_r_precision``) on the first ``eval_pairs`` held-out items whose caption
never occurs in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.interfaces import ObjectiveBase
from gaf.runs import RunContext
from gaf.seeding import EpochOrder

from ..images.batches import split_dataset, stack_images
from ..t2i.training_data import conditions_of
from .loss import MAX_LOG_SCALE, clamp_log_scale_, clip_loss, duplicate_mask, gather_with_grad
from .zeroshot import zero_shot_reading

__all__ = ["CLIPObjective", "CLIPObjectiveConfig", "retrieval_recall", "zero_shot_classes",
           "MAX_CLASSES"]

#: at most this many distinct training captions count as class captions (zero-shot
#: classification is then reported)
MAX_CLASSES = 64


@attrs.define
class CLIPObjectiveConfig:
    """Options of the ``clip`` objective."""

    eval_pairs: int = option(1000, "held-out pairs for retrieval (0 = no evaluation)", ge=0)
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads ('validation' for tuning)")
    eval_batch_size: int = option(250, "images per encoding batch in the evaluation", ge=1)


def retrieval_recall(sim: Tensor, same: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k of ``sim`` ``(N_images, N_texts)`` in both directions: the fraction of
    queries with a right item among their ``k`` most similar, ``same[i, j]`` saying
    whether image ``i`` and text ``j`` have the same caption (pair ``i`` itself
    included)."""
    out = {}
    for name, s, m in (("image_to_text", sim, same), ("text_to_image", sim.T, same.T)):
        order = s.argsort(dim=1, descending=True)
        hits = torch.gather(m, 1, order)
        for k in ks:
            out[f"{name}_r{k}"] = float(hits[:, :k].any(dim=1).float().mean())
    return out


@torch.no_grad()
def zero_shot_classes(model: Any, image_features: Tensor, captions: Sequence[str],
                      classes: Sequence[str]) -> dict[str, float]:
    """Zero-shot classification: each image's most similar caption among ``classes`` (the
    distinct training captions), right when it is the image's own caption.
    ``zero_shot_class`` is the accuracy, ``zero_shot_class_floor`` the frequency of the
    most common caption (always guessing it), ``zero_shot_class_chance`` ``1/len(classes)``;
    images whose caption is not among ``classes`` are left out."""
    index = {c: k for k, c in enumerate(classes)}
    keep = [i for i, c in enumerate(captions) if c in index]
    if not keep:
        return {}
    txt = torch.nn.functional.normalize(model.encode_text(list(classes)), dim=-1)
    img = torch.nn.functional.normalize(image_features[keep], dim=-1)
    guess = (img @ txt.T).argmax(dim=1).cpu()
    truth = torch.tensor([index[captions[i]] for i in keep])
    counts = torch.bincount(truth, minlength=len(classes))
    return {"zero_shot_class": float((guess == truth).float().mean()),
            "zero_shot_class_floor": float(counts.max()) / len(keep),
            "zero_shot_class_chance": 1.0 / len(classes),
            "zero_shot_class_n": float(len(keep))}


class CLIPObjective(ObjectiveBase):
    """Contrastive training of a CLIP model (the ``encoder`` component)."""

    Config = CLIPObjectiveConfig
    uses = {"encoder": "clip", "dataset": "shapes"}
    unit = "pairs"
    train_defaults = {"steps": 2000, "batch_size": 128, "lr": 1e-3, "warmup_steps": 100,
                      "schedule": "cosine", "weight_decay": 0.1, "max_grad_norm": 1.0,
                      "log_every": 50}
    plot_keys = ("loss", "temperature", "batch_accuracy", "lr")

    def __init__(self, config: CLIPObjectiveConfig | None = None):
        self.config = config or CLIPObjectiveConfig()

    def setup(self, ctx: RunContext) -> None:
        self.device, self.world, self.seed = ctx.device, ctx.world, ctx.spec.seed
        self.batch_size = ctx.spec.train.batch_size
        self.dataset = ctx.component("dataset")
        if len(self.dataset) < 2:
            raise BadData("clip needs at least 2 training pairs")
        self.model = ctx.component("encoder")
        self.captions = conditions_of(self.dataset, "caption")
        ids, mask = self.model.tokenize(self.captions)
        self.ids, self.mask = ids.cpu(), mask.cpu()
        self.images = stack_images(self.dataset, range(len(self.dataset)))
        cfg = self.model.config
        want = (cfg.in_channels, cfg.resolution, cfg.resolution)
        if tuple(self.images.shape[1:]) != want:
            c, r = self.images.shape[1], self.images.shape[-1]
            raise BadConfig(f"the dataset's images are {tuple(self.images.shape[1:])} but the "
                            f"encoder takes {want}; set encoder.in_channels={c} and "
                            f"encoder.resolution={r}")
        self.order = EpochOrder(len(self.dataset), self.seed, "clip-order")
        ctx.log(f"clip: {len(self.images)} training pairs, images "
                f"{tuple(self.images.shape[1:])}")

    def modules(self) -> dict[str, Any]:
        return {"encoder": self.model}

    def param_groups(self) -> list[dict[str, Any]]:
        """``train.weight_decay`` on the weight matrices and embeddings only; gains,
        biases and the temperature are not decayed
        (:meth:`~gaf.plugins.clip.towers.CLIPModel.decay_split`)."""
        decay, other = self.model.decay_split()
        return [{"params": decay}, {"params": other, "weight_decay": 0.0}]

    def train_batch(self, index: int) -> dict[str, Tensor]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = torch.as_tensor(self.order.slice(start, count))
        return {"images": self.images[picks].to(self.device),
                "ids": self.ids[picks].to(self.device), "mask": self.mask[picks].to(self.device)}

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        img, txt, log_scale = self.model(batch["images"], batch["ids"], batch["mask"])
        img, txt = gather_with_grad(img, self.world), gather_with_grad(txt, self.world)
        keys = gather_with_grad(batch["ids"], self.world)
        same = duplicate_mask(keys)
        loss = clip_loss(img, txt, log_scale, same)
        with torch.no_grad():
            best = (img @ txt.T).argmax(dim=1)
            accuracy = same[torch.arange(len(best), device=best.device), best].float().mean()
        return loss, {"temperature": float(log_scale.detach().clamp(max=MAX_LOG_SCALE)
                                           .exp()),
                      "batch_accuracy": float(accuracy)}

    def after_step(self, step: int) -> None:
        clamp_log_scale_(self.model.log_scale)

    @torch.no_grad()
    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        cfg = self.config
        if cfg.eval_pairs == 0:
            return {}
        ds = split_dataset(ctx, cfg.eval_split)
        if ds is None:
            raise BadData(f"the dataset has no {cfg.eval_split!r} split to evaluate on")
        n = min(cfg.eval_pairs, len(ds))
        captions = conditions_of(ds, "caption", n)
        self.model.eval()
        img = torch.cat([self.model.encode_image(stack_images(
            ds, range(s, min(n, s + cfg.eval_batch_size))).to(self.device))
            for s in range(0, n, cfg.eval_batch_size)])
        txt = self.model.encode_text(captions)
        sim = (torch.nn.functional.normalize(img, dim=-1)
               @ torch.nn.functional.normalize(txt, dim=-1).T)
        ids, _ = self.model.tokenize(captions)
        out = retrieval_recall(sim.cpu(), duplicate_mask(ids.cpu()))
        seen = set(self.captions)
        held = conditions_of(ds, "caption")
        unseen = [i for i, c in enumerate(held) if c not in seen][:n]
        if unseen:  # captions never seen in training: read attributes zero-shot
            reading = zero_shot_reading(self.model, stack_images(ds, unseen).to(self.device),
                                        [held[i] for i in unseen])
            out.update({f"zero_shot_{k}": v for k, v in reading.items()})
        classes = sorted(set(self.captions))
        if len(classes) <= MAX_CLASSES:  # class captions (Fashion-MNIST): classify zero-shot
            out.update(zero_shot_classes(self.model, img, captions, classes))
        out["temperature"] = float(self.model.log_scale.clamp(max=MAX_LOG_SCALE).exp())
        out["eval_pairs"] = float(n)
        return out
