"""In-domain Fréchet distance (``fd``) and kernel distance (``kid``) between image sets.

What these numbers are — and are not
------------------------------------
FID and KID as published are computed on the pool features of an ImageNet-trained
Inception-v3. Those weights cannot be downloaded here, so gaf computes the same
*statistics* on the penultimate features of a small classifier trained **on the real
training split of the dataset being modelled** (:mod:`gaf.plugins.metrics.features`).
The numbers are therefore **in-domain FD / KID**, on a different, much smaller
feature space (e.g. 64 ReLU features instead of 2048): they rank models of *this*
dataset against each other under *this* feature network, and they are **not
comparable with any published FID or KID**, nor across feature networks, datasets or
sample sizes. Name them "in-domain FD" (or rFD for reconstructions), never "FID".

To keep them honest every score comes with:

* ``feature_accuracy`` — the feature network's held-out classification accuracy
  (stored with it at training time): features of a network that cannot tell the
  classes apart carry little about the domain;
* a **real-vs-real floor** — the same distance between two disjoint sets of *real*
  images, i.e. what a perfect generator would score with this many samples. A
  generated set is only "as good as real" when its score reaches the floor.

Generated images against a disjoint real set (text to image)
------------------------------------------------------------
:func:`distribution_distances` is the protocol of the text-to-image evaluation
(issue 15 §3). The review of the earlier one found two faults, and this fixes both:

* **the features must see what captions say.** The version-1 feature network pooled
  its last map globally, so it hardly saw *where* objects are: moving every object of
  the real eval images to a random cell *lowered* FD to 5.4, below the real-vs-real
  floor of 17. The default ``layout`` network
  (:mod:`gaf.plugins.metrics.features`) keeps a 3x3 map and is trained on per-cell
  *empty / small / large* targets besides the class label, so position, size and
  count are in its features;
* **the samples are compared with a disjoint real set.** FD between the samples for
  the captions of set A and the very images of A rewards reproducing A's own
  statistics (that is how the moved images beat the floor: they keep A's exact
  colours and shapes). Here the samples for the captions of A are compared with the
  real images of a disjoint set B, and the floor is ``FD(real A, real B)``: the real
  images of A score the floor *by construction*, and a generator reaches it only by
  matching the distribution of real scenes. KID is reported beside it, with its own
  floor ``KID(real A, real B)`` and standard errors (:func:`kid_with_se`).

The random-position check (``tests/metrics/test_random_position.py``, marked slow;
``pytest -s`` prints the scores): on 16x16 ``shapes``, a layout net trained on 2000
training images for 15 epochs (~10–15 s on one CPU thread), A and B = 500 eval
images each, "moved A" = A's scenes re-rendered with every object moved
independently to a uniformly random cell (stream ``"random-position"``). The test's
case (network seed 0, the stream's first draw) scores FD 0.81 against a floor of
0.33, **2.47x the floor** (KID 0.021 ± 0.011 against 0.003 ± 0.012); over network
seeds 0–2 and five draws of the moves the ratio was 2.28–4.78. The version-1
``pooled`` network trained the same way gives 1.32x (seed 0; 1.01–1.59 over seeds 0–1
and the five draws): it cannot tell. The signal is modest because only part of the
moved set is out of distribution: single objects are uniform over the cells in real
data, so moving them alone leaves the distribution as it was (no unconditional
distance can or should see that; it is the analytic evaluator's job, per caption),
while moved pairs lose their adjacency (1/9 of them share a cell) and real pair
cells are weighted by their neighbour count (the middle more than the corners). A
generator that ignores every position word but keeps the relations (the first object
in the middle cell, the second beside it) collapses the positions: **36.9x the floor**
under the layout net (FD 12.19, KID 1.03 ± 0.07), 3.5x under the pooled one, whose KID
(0.26 ± 0.34) does not see it at all. At the evaluation's own sizes (32x32, the feature net's
defaults, A and B = 200 images; the benchmark-marked test in the same file, seeds
0–2) the random-cell ratio is only 1.78–2.03 (pooled 1.23–1.35) and KID does not
separate it at 200 images, while the middle generator scores 15–19x (pooled
1.1–1.7x).

Fréchet distance
----------------
With feature means ``μ₁, μ₂`` and covariances ``Σ₁, Σ₂`` (float64, unbiased
``1/(N−1)`` estimates) of the two sets, the Fréchet (2-Wasserstein) distance between
the Gaussians ``N(μ₁, Σ₁)`` and ``N(μ₂, Σ₂)`` is::

    FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2})

``Tr((Σ₁Σ₂)^{1/2})`` is computed without scipy: ``Σ₁Σ₂`` is similar to the symmetric
positive semi-definite ``M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (same eigenvalues), so the trace
is ``Σᵢ √λᵢ(M)`` with ``Σ₁^{1/2}`` and ``λ(M)`` from symmetric eigendecompositions
(``torch.linalg.eigh``), negative round-off eigenvalues clamped to 0. This is exact
for singular covariances too (fewer samples than feature dimensions, dead ReLU
units), where the usual ``scipy.linalg.sqrtm(Σ₁Σ₂)`` needs an ad-hoc ε offset;
there a round-off eigenvalue ``~1e−16·s²`` becomes ``~1e−8·s`` under the square root,
so FDs of singular covariances (scale ``s``) are accurate to about ``1e−8·s``. The
result is clamped at 0 (round-off can make it slightly negative). The unit is squared feature
units. FD estimated from N samples is biased upwards, by roughly ``Tr(Σ)``-scaled
``1/N`` terms, so **only compare FDs computed with the same N** (and report N).

Kernel distance (KID)
---------------------
Unbiased estimate of the squared maximum mean discrepancy with the cubic polynomial
kernel ``k(a, b) = (aᵀb / d + 1)³`` (``d`` = feature dimension), as in Bińkowski et
al. (2018)::

    MMD²ᵤ = 1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ, yⱼ)
            − 2/(mn) Σ_{i,j} k(xᵢ, yⱼ)

computed on ``subsets`` random subsets of ``subset_size`` features drawn without
replacement from each set (clipped to the smaller set), drawn from ``seed``'s
``"kid-subsets"`` stream (:mod:`gaf.seeding`). ``kid``
is the mean over subsets and ``kid_std`` their standard deviation (population,
``ddof = 0``; it is 0 when ``subset_size`` covers both sets, as every subset is then
the whole set). Being unbiased, KID has expectation 0 for two samples of the same
distribution at any size (it can be negative), so its floor should be ≈ 0 ± the
spread; a floor far from 0 means the two real sets differ (a split problem).

Reported values
---------------
``distribution_distances(net, fake, real, reference)`` returns ``{"fd", "fd_floor",
"kid", "kid_se", "kid_floor", "kid_floor_se", "n_fake", "n_reference",
"kid_subset_size", "feature_dim"}`` and ``"feature_accuracy"`` when the network
recorded one (see above and the function).

``fd(real, fake)`` returns ``{"fd", "fd_floor", "floor_n", "n_real", "n_fake",
"feature_accuracy"}`` and ``kid(real, fake)`` returns ``{"kid", "kid_std",
"kid_floor", "kid_floor_std", "floor_n", "n_real", "n_fake", "feature_accuracy"}``:

* ``fd`` / ``kid``: all ``real`` vs all ``fake`` images;
* the floor: with a third argument ``real2`` (real images disjoint from ``real``;
  use the same count as ``fake``), the distance ``real`` vs ``real2``; otherwise the
  distance between two disjoint random halves of ``real`` (``floor_n`` per side).
  A half-split FD floor is measured at half the sample size and so is *higher* than
  the floor at ``N``: prefer passing ``real2``, or compare against the floor at the
  same size. ``floor(real)`` returns the half-split floor alone;
* counts as floats; ``feature_accuracy`` is NaN when the network recorded none.

Images are ``(N, C, H, W)`` tensors in ``[-1, 1]``, map-style datasets of
``{"image": ...}`` items, or iterables of batches. The recommended protocol: train
the feature network on the training split, then compare N generated images with N
held-out real images and pass another N held-out real images as ``real2``; state N.
Images must have the channels and resolution the network was trained on.
``metric.features(images)`` gives the ``(N, d)`` float64 features and
``metric.score_features(real, fake, real2=None)`` scores precomputed features (so one
extraction can serve both metrics); ``metric.net.floor`` is the floor recorded on the
held-out split when the network was trained.
"""

from __future__ import annotations

import abc
import math
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig
from gaf.seeding import torch_generator

from .features import FeatureNet, load_images

__all__ = ["InDomainFD", "InDomainKID", "feature_statistics", "sqrtm_psd",
           "trace_sqrt_product", "frechet_distance", "fd_from_features", "mmd2_unbiased",
           "kid_from_features", "kid_with_se", "distribution_distances",
           "distances_from_features"]

HOW_TO_MAKE = ("make one with: from gaf.plugins.metrics.features import train_feature_net; "
               "train_feature_net(train_ds, eval_ds).save(DIR) -- trained on the real "
               "training split only -- then pass features=DIR")


# ------------------------------------------------------------------------ maths


def _as64(x: Any) -> Tensor:
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (float64) of ``(N, d)`` features."""
    f = _as64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, d) features, got shape {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def sqrtm_psd(a: Tensor) -> Tensor:
    """The symmetric PSD square root of a symmetric PSD matrix (float64, by ``eigh``).

    The matrix is symmetrised first; negative (round-off) eigenvalues are clamped to 0.
    """
    a = _as64(a)
    a = (a + a.T) / 2
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_product(s1: Tensor, s2: Tensor) -> float:
    """``Tr((Σ₁Σ₂)^{1/2})`` as ``Σ √λ(Σ₁^{1/2} Σ₂ Σ₁^{1/2})`` for PSD ``Σ₁, Σ₂``."""
    r = sqrtm_psd(s1)
    m = r @ _as64(s2) @ r
    m = (m + m.T) / 2
    return float(torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum())


def frechet_distance(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> float:
    """``‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2})`` in float64, clamped at 0."""
    mu1, mu2, s1, s2 = _as64(mu1), _as64(mu2), _as64(s1), _as64(s2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(),) * 2:
        raise ValueError("means (d,) and covariances (d, d) of the same d expected")
    value = float((mu1 - mu2).pow(2).sum()) + float(torch.trace(s1) + torch.trace(s2)) \
        - 2.0 * trace_sqrt_product(s1, s2)
    return max(0.0, value)


def fd_from_features(f1: Tensor, f2: Tensor) -> float:
    """Fréchet distance between the Gaussian fits of two ``(N, d)`` feature sets."""
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def _cubic(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD² between ``(m, d)`` and ``(n, d)`` features, cubic polynomial kernel."""
    x, y = _as64(x), _as64(y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (>= 2, d) feature sets, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    kxx, kyy = _cubic(x, x), _cubic(y, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    xy = _cubic(x, y).mean()
    return float(xx + yy - 2 * xy)


def kid_from_features(f1: Tensor, f2: Tensor, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """``{"kid": mean, "kid_std": std}`` of :func:`mmd2_unbiased` over random subsets."""
    f1, f2 = _as64(f1), _as64(f2)
    size = min(subset_size, f1.shape[0], f2.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 features in each set")
    if size == f1.shape[0] == f2.shape[0]:  # every subset is the whole of both sets
        return {"kid": mmd2_unbiased(f1, f2), "kid_std": 0.0}
    g = torch_generator(seed, "kid-subsets")
    values = torch.tensor([
        mmd2_unbiased(f1[torch.randperm(f1.shape[0], generator=g)[:size]],
                      f2[torch.randperm(f2.shape[0], generator=g)[:size]])
        for _ in range(subsets)], dtype=torch.float64)
    return {"kid": float(values.mean()), "kid_std": float(values.std(correction=0))}


def kid_with_se(f1: Tensor, f2: Tensor, subsets: int = 100, subset_size: int | None = None,
                seed: int = 0, *keys: int) -> dict[str, float]:
    """KID as the mean of :func:`mmd2_unbiased` over random subsets, with a standard error.

    Each of ``subsets`` draws takes ``m = subset_size`` features without replacement
    from each set (default: half the smaller set, ``⌊N/2⌋``), from the named stream
    ``("kid-subsets", *keys)`` of ``seed``. Returns ``{"kid", "kid_se", "kid_std",
    "subset_size"}``: the mean, the subsampling standard error
    ``kid_std · √(m / (N − m))`` (``N`` = the smaller set; the first-order variance of
    a statistic on ``m`` of ``N`` items drawn without replacement is ``σ²(1/m − 1/N)``,
    so at ``m = N/2`` the spread of the half-sample values estimates the standard
    error of the estimate from all ``N``), and the spread ``kid_std`` itself. ``kid_se``
    is NaN when ``m = N`` (every subset is the whole set: no spread to measure).
    """
    f1, f2 = _as64(f1), _as64(f2)
    n = min(f1.shape[0], f2.shape[0])
    m = n // 2 if subset_size is None else min(int(subset_size), n)
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets >= 1 of at least 2 features in each set "
                         f"(sets of {f1.shape[0]} and {f2.shape[0]}, subset_size {m})")
    if m == f1.shape[0] == f2.shape[0]:  # every subset is the whole of both sets
        return {"kid": mmd2_unbiased(f1, f2), "kid_se": math.nan, "kid_std": 0.0,
                "subset_size": float(m)}
    g = torch_generator(seed, "kid-subsets", *keys)
    values = torch.tensor([
        mmd2_unbiased(f1[torch.randperm(f1.shape[0], generator=g)[:m]],
                      f2[torch.randperm(f2.shape[0], generator=g)[:m]])
        for _ in range(subsets)], dtype=torch.float64)
    std = float(values.std(correction=0))
    se = std * math.sqrt(m / (n - m)) if m < n else math.nan
    return {"kid": float(values.mean()), "kid_se": se, "kid_std": std, "subset_size": float(m)}


def distribution_distances(net: FeatureNet, fake: Any, real: Any, reference: Any, *,
                           kid_subsets: int = 100, kid_subset_size: int | None = None,
                           seed: int = 0) -> dict[str, float]:
    """FD and KID of generated images against a *disjoint* real set, with their floors.

    fake: samples for the captions of set A; real: the real images of set A (used
    only for the floors); reference: real images of a disjoint set B.
    Returns fd = FD(fake, reference), fd_floor = FD(real, reference),
    kid (mean over subsets) and kid_se, kid_floor = KID(real, reference) and
    kid_floor_se, and feature_accuracy (the net's held-out accuracy, when known).

    Why this protocol: comparing the samples with the very images whose captions
    produced them rewards copying those images' statistics (a generator that ignores
    every position word but keeps colours and shapes scored *below* the
    real-vs-real floor); against a disjoint set B, the real images of A score exactly
    the floor, and a generator can only reach it by matching the distribution.
    ``fake`` and ``real`` must have the same count (the FD estimate is biased by a
    ``1/N`` term, so the floor is only comparable at the same N); ``reference`` should
    too. KID is :func:`kid_with_se` with ``kid_subsets`` subsets of
    ``kid_subset_size`` (default: half the smaller set); ``kid`` and ``kid_floor`` use the
    same subset indices (the stream ``"kid-subsets"`` of ``seed``), so ``fake = real``
    scores exactly the floor, in KID as in FD. Also returned: ``n_fake``, ``n_reference``, ``kid_subset_size`` (as
    floats) and ``feature_dim``. ``net`` should be a ``layout`` network
    (:mod:`gaf.plugins.metrics.features`); a version-1 ``pooled`` one is accepted
    with a warning, as it cannot see where objects are. Images as in
    :func:`~gaf.plugins.metrics.features.load_images` (tensors, datasets, batches).
    """
    if getattr(net, "variant", "layout") != "layout":
        warnings.warn("distribution_distances with a pooled (position-blind) feature net: "
                      "it does not see where objects are; train a layout one "
                      "(train_feature_net(..., variant='layout'))", stacklevel=2)
    out = distances_from_features(net.features(fake), net.features(real),
                                  net.features(reference), kid_subsets=kid_subsets,
                                  kid_subset_size=kid_subset_size, seed=seed)
    if net.accuracy is not None:
        out["feature_accuracy"] = float(net.accuracy)
    return out


def distances_from_features(ff: Tensor, fr: Tensor, fb: Tensor, *, kid_subsets: int = 100,
                            kid_subset_size: int | None = None,
                            seed: int = 0) -> dict[str, float]:
    """:func:`distribution_distances` on features already extracted: ``ff`` of the
    samples for set A, ``fr`` of A's real images, ``fb`` of the disjoint real set B
    (so one extraction can serve several comparisons, e.g. each class and all of them).
    Returns the same keys but ``feature_accuracy``."""
    if ff.shape[0] != fr.shape[0]:
        raise ValueError(f"distribution_distances: fake ({ff.shape[0]} images) and real "
                         f"({fr.shape[0]}) must have the same count: the floor is only "
                         "comparable at the same sample size")
    d = ff.shape[1]
    if min(ff.shape[0], fb.shape[0]) < d + 1:
        warnings.warn(f"FD from {min(ff.shape[0], fb.shape[0])} samples of {d}-dim features: "
                      "the covariances are singular and the estimate strongly biased",
                      stacklevel=2)
    # the same subset indices for both (one stream): the real images of A then score
    # exactly the floor, and the difference kid - kid_floor is a paired comparison
    kid = kid_with_se(ff, fb, kid_subsets, kid_subset_size, seed)
    kid_floor = kid_with_se(fr, fb, kid_subsets, kid_subset_size, seed)
    out = {"fd": fd_from_features(ff, fb), "fd_floor": fd_from_features(fr, fb),
           "kid": kid["kid"], "kid_se": kid["kid_se"],
           "kid_floor": kid_floor["kid"], "kid_floor_se": kid_floor["kid_se"],
           "n_fake": float(ff.shape[0]), "n_reference": float(fb.shape[0]),
           "kid_subset_size": kid["subset_size"], "feature_dim": float(d)}
    return out


# ------------------------------------------------------------------- components


class _FeatureMetric(abc.ABC):
    """Shared loading of the feature network and feature extraction."""

    name = "fd"
    config: Any

    def __init__(self, config: Any, net: FeatureNet | None) -> None:
        if config.features and net is None and not Path(config.features).is_dir():
            raise BadConfig(f"metric {self.name}: features={config.features!r} is not a "
                            f"directory; {HOW_TO_MAKE}")
        self._net = net

    @property
    def net(self) -> FeatureNet:
        """The frozen feature network (loaded from ``features`` on first use)."""
        if self._net is None:
            if not self.config.features:
                raise BadConfig(f"metric {self.name} needs features=DIR, a feature network "
                                f"trained on the real training split (there is no Inception "
                                f"here); {HOW_TO_MAKE}")
            self._net = FeatureNet.load(self.config.features)
        return self._net

    def features(self, images: Any) -> Tensor:
        """Penultimate features ``(N, d)`` float64 of images (tensor, dataset, batches)."""
        if not isinstance(images, Tensor):
            images, _ = load_images(images)
        return self.net.features(images, self.config.batch_size)

    def _accuracy(self) -> float:
        acc = self.net.accuracy
        return float(acc) if acc is not None else math.nan

    def _halves(self, f: Tensor) -> tuple[Tensor, Tensor]:
        if f.shape[0] < 4:
            raise ValueError(f"the real-vs-real floor needs at least 4 real images, "
                             f"got {f.shape[0]} (or pass a second real set)")
        perm = torch.randperm(f.shape[0], generator=torch_generator(self.config.seed, "floor-halves"))
        half = f.shape[0] // 2
        return f[perm[:half]], f[perm[half:2 * half]]

    def __call__(self, real: Any, fake: Any, real2: Any = None) -> dict[str, float]:
        fr, ff = self.features(real), self.features(fake)
        f2 = None if real2 is None else self.features(real2)
        out = self.score_features(fr, ff, f2)
        out["feature_accuracy"] = self._accuracy()
        return out

    @abc.abstractmethod
    def score_features(self, real: Tensor, fake: Tensor,
                       real2: Tensor | None = None) -> dict[str, float]:
        """The metric and its floor from precomputed features."""


@attrs.define
class InDomainFDConfig:
    features: str = option("", "directory of a feature net trained on the real training "
                               "split (train_feature_net(...).save(DIR)); required")
    batch_size: int = option(256, "images per feature-network forward pass", ge=1)
    seed: int = option(0, "seed of the random half split used for the real-vs-real floor")


class InDomainFD(_FeatureMetric):
    """In-domain Fréchet distance: ``fd(real, fake[, real2]) -> {"fd", "fd_floor", ...}``.

    Not FID: see :mod:`gaf.plugins.metrics.frechet` for what the values mean.
    ``InDomainFD(config, net=feature_net)`` uses an in-memory network instead of
    loading ``config.features``.
    """

    Config = InDomainFDConfig
    name = "fd"

    def __init__(self, config: InDomainFDConfig | None = None, *, net: FeatureNet | None = None):
        self.config = config or InDomainFDConfig()
        super().__init__(self.config, net)

    def score_features(self, real: Tensor, fake: Tensor,
                       real2: Tensor | None = None) -> dict[str, float]:
        """FD and its floor from precomputed features (no network involved)."""
        n = min(real.shape[0], fake.shape[0])
        if n < real.shape[1] + 1:
            warnings.warn(f"FD from {n} samples of {real.shape[1]}-dim features: the "
                          "covariances are singular and the estimate strongly biased",
                          stacklevel=3)
        if real2 is None:
            a, b = self._halves(real)
        else:
            a, b = real, real2
        return {"fd": fd_from_features(real, fake), "fd_floor": fd_from_features(a, b),
                "floor_n": float(min(a.shape[0], b.shape[0])),
                "n_real": float(real.shape[0]), "n_fake": float(fake.shape[0])}

    def floor(self, real: Any) -> dict[str, float]:
        """``{"fd_floor", "floor_n"}``: FD between two disjoint random halves of ``real``."""
        a, b = self._halves(self.features(real))
        return {"fd_floor": fd_from_features(a, b), "floor_n": float(a.shape[0])}


@attrs.define
class InDomainKIDConfig:
    features: str = option("", "directory of a feature net trained on the real training "
                               "split (train_feature_net(...).save(DIR)); required")
    batch_size: int = option(256, "images per feature-network forward pass", ge=1)
    subsets: int = option(100, "number of random subsets the MMD² is averaged over", ge=1)
    subset_size: int = option(1000, "features per set in each subset (clipped to the "
                                    "smaller set)", ge=2)
    seed: int = option(0, "seed of the subsets and of the half split of the floor")


class InDomainKID(_FeatureMetric):
    """In-domain KID: ``kid(real, fake[, real2]) -> {"kid", "kid_std", "kid_floor", ...}``.

    Unbiased MMD² with the cubic kernel on the in-domain features; not Inception KID.
    """

    Config = InDomainKIDConfig
    name = "kid"

    def __init__(self, config: InDomainKIDConfig | None = None, *,
                 net: FeatureNet | None = None):
        self.config = config or InDomainKIDConfig()
        super().__init__(self.config, net)

    def _kid(self, a: Tensor, b: Tensor) -> dict[str, float]:
        c = self.config
        return kid_from_features(a, b, c.subsets, c.subset_size, c.seed)

    def score_features(self, real: Tensor, fake: Tensor,
                       real2: Tensor | None = None) -> dict[str, float]:
        """KID and its floor from precomputed features (no network involved)."""
        a, b = self._halves(real) if real2 is None else (real, real2)
        main, floor = self._kid(real, fake), self._kid(a, b)
        return {**main, "kid_floor": floor["kid"], "kid_floor_std": floor["kid_std"],
                "floor_n": float(min(a.shape[0], b.shape[0])),
                "n_real": float(real.shape[0]), "n_fake": float(fake.shape[0])}

    def floor(self, real: Any) -> dict[str, float]:
        """``{"kid_floor", "kid_floor_std", "floor_n"}`` between two halves of ``real``."""
        a, b = self._halves(self.features(real))
        f = self._kid(a, b)
        return {"kid_floor": f["kid"], "kid_floor_std": f["kid_std"], "floor_n": float(a.shape[0])}
