"""The class-wise evaluation of a class-conditional generator (labels, not captions).

A dataset such as Fashion-MNIST (``idx``) has class labels and no attribute
evaluator: the shared evaluation
(:func:`.evaluation.evaluate_pipeline`) can only report its class-mixed FD there.
:func:`evaluate_classes` asks instead, class by class, whether the samples conditioned
on class ``k`` look like class ``k``, and how far their distribution is from the real
images of ``k``. ``ldm`` runs it after the shared evaluation when its conditioner reads
``label`` and the eval split has no ``evaluator`` (option ``eval_per_class``).

The sets (fixed by the eval split, the same for every generator)
-----------------------------------------------------------------
For each class ``k`` present in the eval split (its labels in eval order),
``A_k`` is the first ``n`` eval items of label ``k`` and ``B_k`` the next ``n``
(disjoint), with ``n = min(per_class, min_k ⌊count_k / 2⌋)`` so every class has the
same count (:func:`class_sets`). The sample for eval item ``i`` of ``A_k`` is drawn
conditioned on ``k`` with the generator seeded ``seed + i``, as the shared evaluation
seeds eval item ``i``, whatever the batching. ``A`` and ``B`` are the unions over
the classes (``K·n`` items each).

The judge: the in-domain classifier
-----------------------------------
The feature net of :mod:`gaf.plugins.metrics.features` (trained on the real training
split's labels, cached in ``features_dir``: with the same arguments as the shared
evaluation's FD, so one network in ``RUN_DIR/features/`` serves both) is a classifier:
its logits' argmax is its reading of an image's class, and its penultimate
(RMS-scaled) features are the FD/KID features. It is not Inception: the FD is the
in-domain FD of :mod:`gaf.plugins.metrics.frechet`, comparable only within this
network, dataset and sample size.

Metrics (a flat ``dict[str, float]``)
-------------------------------------
``class_accuracy``, ``class_accuracy_se``
    the fraction of the ``K·n`` samples the classifier reads as the class they were
    conditioned on, with the binomial standard error ``sqrt(p (1 − p) / (K·n))``;
``class_accuracy_real``, ``class_accuracy_real_se``
    the same classifier on the real images of ``A`` against their labels: the
    reference ("ceiling") that a generator whose samples are distributed as the real
    images of each class scores. It is not a bound: samples more typical of their
    class than real images are (classifier-free guidance makes them so) score above
    it, so read it with the FD, which such samples raise; chance is ``1/K``;
``class_fd``, ``class_fd_floor``, ``class_kid``, ``class_kid_se``, ``class_kid_floor``, ``class_kid_floor_se``
    :func:`~gaf.plugins.metrics.frechet.distances_from_features` of all samples against
    the real images of ``B``; the floor compares the real images of ``A`` with ``B``
    (disjoint real sets of the same size: what a perfect generator scores);
``class{k}_accuracy`` (``_se``), ``class{k}_accuracy_real`` (``_se``), ``class{k}_fd``, ``class{k}_fd_floor``, ``class{k}_kid`` …
    the same for the ``n`` samples of class ``k`` against ``B_k`` (floor: ``A_k``
    real against ``B_k``). With ``n`` at most the feature width the covariances are
    singular and FD is strongly biased (a warning says so); compare it with its floor
    at the same ``n`` only;
``{name}_class_accuracy`` (``_se``), ``{name}_class_fd``, ``{name}_class_kid`` (``_se``)
    for each ``sweep`` setting ``name`` (``g{s}``: the guidance scales of the
    objective's ``eval_guidance``), the overall figures of the samples of ``A`` drawn
    with that setting (the same seeds; a setting equal to ``options`` reuses its
    samples); the floors do not depend on the setting;
``class_n``, ``class_per_class``, ``class_classes``
    ``K·n``, ``n`` and ``K``.

With ``out_dir``, ``out_dir/samples/classes.png`` shows the first ``grid_columns``
samples of each class at ``options`` (one row per class, in label order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from ..images.batches import stack_images
from .evaluation import binomial_se, sample_in_batches
from .training_data import conditions_of

__all__ = ["ClassSets", "class_sets", "classify", "accuracy_scores", "distance_scores",
           "evaluate_classes", "class_figures_of_run", "PREFIX"]

#: the prefix of every metric key of the class-wise evaluation
PREFIX = "class"
#: training images of the feature net, as the shared evaluation's FD trains it (one net
#: in ``RUN_DIR/features/`` for both)
CLASSIFIER_TRAIN_IMAGES = 5000


@attrs.frozen
class ClassSets:
    """The class-wise sets of an eval split: ``a[k]`` and ``b[k]`` (eval indices of
    label ``k``, disjoint, ``n`` each) for each class ``k`` of ``classes``."""

    classes: tuple[int, ...]
    a: Mapping[int, tuple[int, ...]]
    b: Mapping[int, tuple[int, ...]]
    n: int

    def flat_a(self) -> list[int]:
        """``A``: the indices of every ``a[k]``, class by class."""
        return [i for k in self.classes for i in self.a[k]]

    def flat_b(self) -> list[int]:
        """``B``: the indices of every ``b[k]``, class by class."""
        return [i for k in self.classes for i in self.b[k]]

    def labels(self) -> list[int]:
        """The class of each item of :meth:`flat_a` (and of :meth:`flat_b`)."""
        return [k for k in self.classes for _ in range(self.n)]


def class_sets(labels: Sequence[int], per_class: int) -> ClassSets:
    """``A_k`` = the first ``n`` indices of label ``k`` in ``labels``, ``B_k`` the next
    ``n``, ``n = min(per_class, min_k ⌊count_k / 2⌋)`` over the classes present."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    classes = tuple(sorted(by_class))
    n = min([per_class, *(len(v) // 2 for v in by_class.values())]) if classes else 0
    return ClassSets(classes=classes,
                     a={k: tuple(by_class[k][:n]) for k in classes},
                     b={k: tuple(by_class[k][n:2 * n]) for k in classes}, n=n)


@torch.no_grad()
def classify(net: Any, images: Tensor, batch_size: int = 256) -> Tensor:
    """The feature net's class reading of ``images`` ``(N, C, H, W)`` in [-1, 1]: the
    argmax of its logits, ``(N,)`` int64 (the network is used in eval mode)."""
    net.check_images(images)
    was_training = net.training
    net.eval()
    try:
        out = [net(images[i:i + batch_size].float()).argmax(1)
               for i in range(0, images.shape[0], batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out).long() if out else torch.zeros(0, dtype=torch.long)


def accuracy_scores(predicted: Sequence[int] | Tensor, labels: Sequence[int],
                    classes: Sequence[int], suffix: str = "") -> dict[str, float]:
    """``class_accuracy{suffix}`` (``_se``) over all items and ``class{k}_accuracy{suffix}``
    (``_se``) over the items of each class ``k`` of ``classes``: the fraction with
    ``predicted == label``, with its binomial standard error."""
    pred = torch.as_tensor(predicted).long().tolist()
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    right = [int(p == int(y)) for p, y in zip(pred, labels)]
    out: dict[str, float] = {}

    def put(name: str, hits: list[int]) -> None:
        p = sum(hits) / len(hits) if hits else float("nan")
        out[f"{name}_accuracy{suffix}"] = p
        out[f"{name}_accuracy{suffix}_se"] = binomial_se(p, len(hits))

    put(PREFIX, right)
    for k in classes:
        put(f"{PREFIX}{k}", [r for r, y in zip(right, labels) if int(y) == k])
    return out


def distance_scores(name: str, fake: Tensor, real: Tensor, reference: Tensor, *,
                    seed: int, floors: bool = True) -> dict[str, float]:
    """``{name}_fd``, ``{name}_kid``, ``{name}_kid_se`` of features ``fake`` against
    ``reference`` and, with ``floors``, ``{name}_fd_floor``, ``{name}_kid_floor``,
    ``{name}_kid_floor_se`` of ``real`` against ``reference``
    (:func:`~gaf.plugins.metrics.frechet.distances_from_features`); FD alone below 4
    items a side (KID's half-size subsets need 2)."""
    from gaf.plugins.metrics.frechet import distances_from_features, fd_from_features

    if min(len(fake), len(reference)) < 4:
        scores = {"fd": fd_from_features(fake, reference),
                  "fd_floor": fd_from_features(real, reference)}
    else:
        scores = distances_from_features(fake, real, reference, seed=seed)
    keys = ("fd", "kid", "kid_se") + (("fd_floor", "kid_floor", "kid_floor_se")
                                      if floors else ())
    return {f"{name}_{k}": float(scores[k]) for k in keys if k in scores}


def evaluate_classes(pipe: Any, options: Mapping[str, Any], *, eval_ds: Any,
                     train_ds: Any = None, per_class: int = 100,
                     sweep: Mapping[str, Mapping[str, Any]] | None = None,
                     feature_net: Any = None, features_dir: str | Path | None = None,
                     seed: int = 0, batch_size: int = 100, grid_columns: int = 8,
                     out_dir: str | Path | None = None,
                     log: Callable[[str], Any] = print) -> dict[str, float]:
    """The class-wise evaluation of ``pipe`` sampled with ``options`` (see the module
    docstring). ``feature_net``, or ``features_dir`` (the network cached there,
    trained on ``train_ds`` when absent); ``sweep``: name → other option settings.
    Returns ``{}`` (and logs why) when the eval split has fewer than 4 items of some
    class or the feature net cannot be had (no held-out split: a ``folder`` dataset)."""
    options = dict(options)
    labels = [int(v) for v in conditions_of(eval_ds, "label")]
    sets = class_sets(labels, per_class)
    if sets.n < 2:
        log("class-wise evaluation skipped: some class has fewer than 4 eval items")
        return {}
    if sets.n < per_class:
        log(f"class-wise evaluation: {sets.n} items per class (the eval split's rarest "
            f"class has {2 * sets.n} to {2 * sets.n + 1}), not {per_class}")
    net = feature_net if feature_net is not None else _classifier(
        features_dir, train_ds, eval_ds, seed, 2 * len(sets.classes) * sets.n, log)
    if net is None:
        return {}
    a, b, y = sets.flat_a(), sets.flat_b(), sets.labels()
    real_a, real_b = stack_images(eval_ds, a), stack_images(eval_ds, b)

    def draw(opts: Mapping[str, Any]) -> Tensor:
        return sample_in_batches(pipe, y, [seed + i for i in a], batch_size=batch_size,
                                 **opts)

    t0 = time.perf_counter()
    fake = draw(options)
    log(f"class-wise evaluation: {len(a)} samples ({sets.n} per class) in "
        f"{time.perf_counter() - t0:.1f} s")
    f_real, f_ref = net.features(real_a), net.features(real_b)
    out = accuracy_scores(classify(net, fake), y, sets.classes)
    out.update(accuracy_scores(classify(net, real_a), y, sets.classes, suffix="_real"))
    out.update(_distances(net.features(fake), f_real, f_ref, sets, seed))
    for name, opts in (sweep or {}).items():
        samples = fake if dict(opts) == options else draw(opts)
        acc = accuracy_scores(classify(net, samples), y, ())
        out.update({f"{name}_{k}": v for k, v in acc.items()})
        out.update(distance_scores(f"{name}_{PREFIX}", net.features(samples), f_real, f_ref,
                                   seed=seed, floors=False))
    out.update({f"{PREFIX}_n": float(len(a)), f"{PREFIX}_per_class": float(sets.n),
                f"{PREFIX}_classes": float(len(sets.classes))})
    if out_dir is not None and grid_columns > 0:
        from ..images.grid import save_grid

        cols = min(grid_columns, sets.n)
        rows = fake.view(len(sets.classes), sets.n, *fake.shape[1:])[:, :cols]
        save_grid(rows, Path(out_dir) / "samples" / "classes.png")
    return out


def _distances(f_fake: Tensor, f_real: Tensor, f_ref: Tensor, sets: ClassSets,
               seed: int) -> dict[str, float]:
    """Overall and per-class distances: features are in :meth:`ClassSets.flat_a` order,
    so class ``j`` of ``sets.classes`` holds rows ``j·n … (j+1)·n − 1``."""
    out = distance_scores(PREFIX, f_fake, f_real, f_ref, seed=seed)
    n = sets.n
    for j, k in enumerate(sets.classes):
        rows = slice(j * n, (j + 1) * n)
        out.update(distance_scores(f"{PREFIX}{k}", f_fake[rows], f_real[rows], f_ref[rows],
                                   seed=seed))
    return out


def _classifier(features_dir: str | Path | None, train_ds: Any, eval_ds: Any, seed: int,
                max_eval: int, log: Callable[[str], Any]) -> Any:
    """The feature net cached in ``features_dir`` (trained there when absent), or None."""
    from gaf.errors import BadData

    if features_dir is None or train_ds is None:
        log("class-wise evaluation skipped: no feature net and no features directory")
        return None
    if eval_ds is train_ds:
        log("class-wise evaluation skipped: the dataset has no held-out split")
        return None
    from gaf.plugins.metrics.features import cached_feature_net

    try:
        return cached_feature_net(features_dir, train_ds, eval_ds, seed=seed,
                                  max_train=CLASSIFIER_TRAIN_IMAGES, max_eval=max_eval,
                                  compute_floor=False)
    except BadData as exc:
        log(f"class-wise evaluation skipped: {exc}")
        return None


def class_figures_of_run(objective: Any, ctx: Any, pipe: Any, options: Mapping[str, Any],
                         eval_ds: Any) -> dict[str, float]:
    """:func:`evaluate_classes` for an ``ldm`` run (its ``_more_figures``): only when
    its conditioner reads ``label``, the eval split has no attribute ``evaluator`` and
    ``objective.eval_per_class > 0``; the sweep is the objective's (``g{s}`` for each
    ``eval_guidance``), the feature net the one in ``RUN_DIR/features/``."""
    cfg = objective.config
    per_class = getattr(cfg, "eval_per_class", 0)
    if (per_class <= 0 or getattr(objective.conditioner, "condition_key", None) != "label"
            or hasattr(eval_ds, "evaluator")):
        return {}
    _, sweep = objective.evaluation_settings()
    return evaluate_classes(pipe, options, eval_ds=eval_ds, train_ds=objective.dataset,
                            per_class=per_class, sweep=sweep,
                            features_dir=ctx.run_dir / "features", seed=ctx.spec.seed,
                            batch_size=cfg.eval_batch_size,
                            grid_columns=cfg.grid_prompts, out_dir=ctx.run_dir, log=ctx.log)
