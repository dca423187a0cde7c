"""The in-domain feature network behind ``fd`` and ``kid``, and its training.

Inception, CLIP and VGG weights are downloads that gaf cannot reach, so the features
for Fréchet distance and KID come from a small classifier trained here, **on the
real training split only**, with the dataset's class labels:

    conv3×3(C→w) → [conv3×3 stride 2 → conv3×3] × 2 stages (w→2w→4w channels),
    each conv followed by GroupNorm and ReLU → max pool to the 3x3 grid (9·4w)
    → Linear(9·4w → feature_dim) → ReLU  = the **features** (penultimate activations)
    → Linear(feature_dim → num_classes) = the logits (cross-entropy)
    [→ Linear(feature_dim → 9·3) = per-cell layout logits (cross-entropy), shapes only]

Variants: position, size and count
----------------------------------
The version-1 network (variant ``pooled``, still loadable and trainable) max-pooled
the last map *globally*: its features say which colours and shapes are present but
hardly where, and FD on them rewarded a generator that ignores every position word
(issue 15 §3). The default variant ``layout`` max-pools to the 3x3 grid of the
``shapes`` scenes instead (``adaptive_max_pool2d``, cells of a non-multiple map
overlap by a pixel) and keeps the nine cells apart in the projection to
``feature_dim`` (default 64 rather than 128: the FD covariance is estimated from a few
hundred to a thousand samples). When the items carry ``attributes`` (the ``shapes``
format: ``row``, ``col`` and ``size`` of the first object and of ``second``), an
auxiliary head is trained from the same features on the per-cell target *empty /
small / large* (:func:`layout_targets`; loss weight ``layout_weight``, default 3), so
the features must encode where each object is, how large, and how many there are;
its held-out per-cell and whole-scene accuracies are recorded as
``layout_accuracy``. The weight 3 was measured: on 16x16 ``shapes`` (2000 training
images, 15 epochs) weight 1 left the whole-scene accuracy at 0.43–0.57 and the
random-position check at 1.8–2.2x the floor, weight 3 reached 0.78–0.89 and 2.2–4.6x
(four seeds; measured with numpy-seeded moves, not the test's named stream),
weight 10 about 0.99 and 5x but lowered the class accuracy (0.10–0.14
against 0.13–0.26 at weight 3). The ``layout`` features are divided by their RMS
value on the training images (the buffer ``feature_scale``, saved with the weights),
so they are O(1) whatever the network: KID's cubic kernel ``(aᵀb/d + 1)³`` assumes
features of about unit scale, and on raw activations (tens) it is dominated by a few
large-norm images. Datasets with class labels only (``idx``, ``folder``) train the
same layout network on the labels alone. What this buys is measured in
:mod:`gaf.plugins.metrics.frechet` (the random-position check).

Training is AdamW (weight decay 1e-4) with a cosine learning-rate decay, no
augmentation, deterministic for a seed (initialisation, shuffling and the floor's
halves come from the seed's named streams ``"feature-net-init"``,
``"feature-net-order"`` and ``"floor-halves"``, :mod:`gaf.seeding`); the defaults
are width 16, 64 features (128 for ``pooled``), 12 epochs, batch 64. On
``shapes`` the label is the (colour, shape) class of the first object, which the pixels
alone leave ambiguous in two-object scenes (which object is "first" is said only by the
caption's relation), so even a perfect network stays well below accuracy 1; what it
reaches is in docs/results.md § Autoencoders. The pools are *max* pools: objects are
small and sparse, and a spatial mean dilutes them into the background.
The held-out split (``eval_ds``) is never
trained on: it gives the network's held-out classification **accuracy** (how much
the features know about the domain; a network at chance level gives meaningless
distances) and, optionally, the **real-vs-real floor**: the Fréchet distance and
KID between two disjoint random halves of the held-out split, i.e. the score that a
perfect generator would get at that sample size.

Saved as a directory (nothing is unpickled on load)::

    model.safetensors     the weights
    feature_net.json      {"format": "gaf.feature_net", "version": 2,
                           "config": {in_channels, num_classes, width, feature_dim,
                                      resolution, variant, layout_head},
                           "dataset": description of the training data,
                           "n_train": images trained on, "n_eval": held-out images,
                           "accuracy": held-out accuracy in [0, 1],
                           "layout_accuracy": {"cells", "scenes"} or null,
                           "training": {epochs, batch_size, lr, weight_decay, seed,
                                        layout_weight, seconds},
                           "floor": {"fd", "kid", "kid_std", "n_per_side",
                                     "kid_subsets", "kid_subset_size", "split"} or null}

Version-1 files (no ``variant``) load as ``pooled`` networks; :func:`cached_feature_net`
asks for a variant (default ``layout``) and replaces a saved net of another variant,
so an old run directory's pooled net is never silently reused for the new metric.

Public API: :func:`train_feature_net` (``variant``, ``layout``, ``layout_weight``),
:func:`cached_feature_net`, :func:`layout_targets`, :class:`FeatureNet`
(``features(images)``, ``variant``, ``save(dir)``, ``FeatureNet.load(dir)``), :func:`load_images` (a dataset, a tensor or
an iterable of batches → one ``(N, C, H, W)`` tensor, and labels when present).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.atomic import (atomic_save_tensors, atomic_write_text, load_state, load_tensors,
                        read_json)
from gaf.config import option, option_error
from gaf.errors import BadConfig, BadData
from gaf.seeding import torch_generator, torch_seed

__all__ = ["FeatureNet", "FeatureNetConfig", "train_feature_net", "cached_feature_net", "load_images",
           "layout_targets", "VARIANTS", "WEIGHTS_FILE", "META_FILE"]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "feature_net.json"
FORMAT = "gaf.feature_net"
VERSION = 2
#: feature layouts: ``pooled`` is the version-1 network (global max pool), ``layout``
#: keeps a 3x3 spatial map (see the module docstring)
VARIANTS = ("pooled", "layout")
#: the spatial grid of the ``layout`` variant (the ``shapes`` grid)
GRID = 3
#: per-cell layout target: 0 = empty, else 1 + index of the object's size here
LAYOUT_SIZES = ("small", "large")


def _integer(inst: Any, attribute: Any, value: Any) -> None:
    """The sidecar's JSON reaches the config uncoerced: sizes must be integers."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise option_error(attribute.name, f"must be an integer, not a {type(value).__name__}",
                           value)


def _boolean(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise option_error(attribute.name, f"must be true or false, not a {type(value).__name__}",
                           value)


@attrs.define
class FeatureNetConfig:
    """The architecture of a :class:`FeatureNet` (stored in its JSON sidecar)."""

    in_channels: int = option(3, "image channels", ge=1, validator=_integer)
    num_classes: int = option(10, "classes of the labels it learns from", ge=2,
                              validator=_integer)
    width: int = option(16, "base width w of the convolutions", ge=1, validator=_integer)
    feature_dim: int = option(128, "width of the features (penultimate layer)", ge=1,
                              validator=_integer)
    resolution: int = option(32, "the image side it was trained on (recorded, and checked "
                                 "on use)", ge=1, validator=_integer)
    variant: str = option("layout", "pooled (global max pool: position-blind, the version-1 "
                                    "network) or layout (a 3x3 max-pooled map: keeps where "
                                    "objects are, their size and count)", choices=VARIANTS)
    layout_head: bool = option(False, "trained with per-cell targets (9 cells x {empty, small, "
                                      "large}) read from the items' attributes",
                               validator=_boolean)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    groups = math.gcd(cout, 8)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(groups, cout),
                         nn.ReLU())


class FeatureNet(nn.Module):
    """A small CNN classifier whose penultimate activations are the metric features.

    ``info`` holds what the JSON sidecar records besides the architecture (dataset,
    accuracy, sizes, training options, floor).
    """

    def __init__(self, config: FeatureNetConfig | None = None,
                 info: Mapping[str, Any] | None = None):
        super().__init__()
        self.config = config or FeatureNetConfig()
        self.info: dict[str, Any] = dict(info or {})
        c, w = self.config, self.config.width
        self.body = nn.Sequential(
            _block(c.in_channels, w, 1),
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),
        )
        cells = GRID * GRID if c.variant == "layout" else 1
        self.feature = nn.Linear(4 * w * cells, c.feature_dim)
        self.head = nn.Linear(c.feature_dim, c.num_classes)
        if c.layout_head:
            if c.variant != "layout":
                raise BadConfig("feature net: layout_head needs variant='layout'")
            self.layout = nn.Linear(c.feature_dim, GRID * GRID * (1 + len(LAYOUT_SIZES)))
        if c.variant == "layout":
            # the RMS feature value on the training images, set after training: the
            # metric features are divided by it, so they are O(1) whatever the net
            self.register_buffer("feature_scale", torch.ones(()))

    @property
    def accuracy(self) -> float | None:
        """Held-out classification accuracy recorded at training time."""
        return self.info.get("accuracy")

    @property
    def variant(self) -> str:
        """``"layout"`` (position-aware) or ``"pooled"`` (a version-1, position-blind net)."""
        return self.config.variant

    @property
    def floor(self) -> dict[str, Any] | None:
        """The real-vs-real floor recorded at training time (or ``None``)."""
        return self.info.get("floor")

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(B, feature_dim)`` of images ``(B, C, H, W)`` in [-1, 1]."""
        # *max* pooling: objects in these datasets are small and sparse, and a spatial
        # mean dilutes them into the background; ``layout`` pools to the 3x3 grid only
        h = self.body(x)
        if self.config.variant == "layout":
            h = F.adaptive_max_pool2d(h, GRID).flatten(1)
        else:
            h = h.amax(dim=(2, 3))
        return F.relu(self.feature(h))

    def layout_logits(self, features: Tensor) -> Tensor:
        """Per-cell layout logits ``(B, 3, 9)`` (empty, small, large) from features."""
        return self.layout(features).view(-1, 1 + len(LAYOUT_SIZES), GRID * GRID)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.embed(x))

    def check_images(self, images: Tensor) -> None:
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_channels:
            raise ValueError(f"the feature net takes (N, {c.in_channels}, H, W) images, "
                             f"got shape {tuple(images.shape)}")
        if tuple(images.shape[2:]) != (c.resolution, c.resolution):
            raise ValueError(f"the feature net was trained on {c.resolution}x{c.resolution} "
                             f"images, got {images.shape[2]}x{images.shape[3]}: features of "
                             "another resolution are not comparable")

    @torch.no_grad()
    def features(self, images: Tensor | Iterable[Any], batch_size: int = 256) -> Tensor:
        """Features ``(N, feature_dim)`` float64 of ``images`` (see :func:`load_images`)."""
        if not isinstance(images, Tensor):
            images, _ = load_images(images)
        self.check_images(images)
        was_training = self.training
        self.eval()
        try:
            out = [self.embed(images[i:i + batch_size].float())
                   for i in range(0, images.shape[0], batch_size)]
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros(0, self.config.feature_dim, dtype=torch.float64)
        feats = torch.cat(out).to(torch.float64)
        if self.config.variant == "layout":
            feats = feats / float(self.feature_scale)
        return feats

    # ----------------------------------------------------------------- save / load

    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` and ``feature_net.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(self.state_dict(), path / WEIGHTS_FILE, {"gaf_kind": FORMAT})
        meta = {"format": FORMAT, "version": VERSION, "config": attrs.asdict(self.config),
                **self.info}
        atomic_write_text(path / META_FILE, json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureNet:
        """Rebuild a network written by :meth:`save` (safetensors + JSON; no pickle)."""
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise BadData(f"not a feature net directory (no {META_FILE}); make one with "
                          "gaf.plugins.metrics.features.train_feature_net(train_ds, eval_ds)"
                          ".save(dir)", path=str(path))
        meta = read_json(path / META_FILE)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BadData(f"not a feature net file (format is not {FORMAT!r})",
                          path=str(path / META_FILE))
        version = meta.get("version")
        if version not in (1, VERSION):
            raise BadData(f"unsupported feature net version {version!r} (this gaf reads 1 "
                          f"and {VERSION})", path=str(path / META_FILE))
        try:
            raw = dict(meta["config"])
            if version == 1:  # version 1 had only the globally pooled network
                if "variant" in raw or "layout_head" in raw:
                    raise TypeError("a version-1 config has no variant or layout_head")
                raw.update(variant="pooled", layout_head=False)
            elif "variant" not in raw:
                raise TypeError("a version-2 config must name its variant")
            config = FeatureNetConfig(**raw)
        except (KeyError, TypeError, BadConfig) as exc:
            raise BadData(f"bad feature net config: {exc}", path=str(path / META_FILE)) from None
        info = {k: v for k, v in meta.items() if k not in ("format", "version", "config")}
        net = cls(config, info)
        load_state(net, load_tensors(path / WEIGHTS_FILE), where=str(path / WEIGHTS_FILE))
        net.eval()
        return net


# ---------------------------------------------------------------------- data


def load_images(data: Any, limit: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Gather images (and labels, when every item has one) into tensors.

    ``data`` is a ``(N, C, H, W)`` tensor, a map-style dataset whose items are dicts
    with ``"image"`` (and ``"label"``), or an iterable of such dicts, of image batches
    ``(B, C, H, W)`` or of dict batches. Returns ``(images float32, labels int64 or
    None)``; ``limit`` keeps the first ``limit`` images.
    """
    if isinstance(data, Tensor):
        images = data if limit is None else data[:limit]
        return images.float(), None
    images: list[Tensor] = []
    labels: list[Tensor] = []
    has_labels = True
    count = 0

    def items() -> Iterable[Any]:
        if hasattr(data, "__len__") and hasattr(data, "__getitem__"):  # map-style
            for i in range(len(data)):
                yield data[i]
        else:
            yield from data

    for item in items():
        if limit is not None and count >= limit:
            break
        if isinstance(item, Mapping):
            img = torch.as_tensor(item["image"])
            lab = item.get("label")
        else:
            img, lab = torch.as_tensor(item), None
        if img.dim() == 3:
            img = img.unsqueeze(0)
            lab = None if lab is None else torch.as_tensor([int(lab)])
        elif lab is not None:
            lab = torch.as_tensor(lab).long().reshape(-1)
        if img.dim() != 4:
            raise ValueError(f"expected images (C, H, W) or batches (B, C, H, W), "
                             f"got shape {tuple(img.shape)}")
        if limit is not None:
            img = img[:limit - count]
            lab = None if lab is None else lab[:limit - count]
        images.append(img.float())
        if lab is None:
            has_labels = False
        else:
            labels.append(lab.long())
        count += img.shape[0]
    if not images:
        raise ValueError("no images")
    out = torch.cat(images)
    return out, (torch.cat(labels) if has_labels else None)


def _object_cell(obj: Any) -> tuple[int, int] | None:
    """(cell, 1 + size index) of one object's attributes, or None if it lacks them."""
    if not isinstance(obj, Mapping):
        return None
    row, col, size = obj.get("row"), obj.get("col"), obj.get("size")
    if (not isinstance(row, int) or not isinstance(col, int) or size not in LAYOUT_SIZES
            or not (0 <= row < GRID and 0 <= col < GRID)):
        return None
    return row * GRID + col, 1 + LAYOUT_SIZES.index(size)


def layout_targets(data: Any, limit: int | None = None) -> Tensor | None:
    """Per-cell layout targets ``(N, 9)`` int64 of a map-style dataset, or ``None``.

    Cell ``row * 3 + col`` holds 0 when empty, else ``1 + index`` of the size
    (:data:`LAYOUT_SIZES`) of the object in it (the larger, if two share a cell). The
    objects come from each item's ``attributes`` (``data.attributes(i)`` when the
    dataset has that method, which skips rendering): the object itself (``row``,
    ``col``, ``size``) and its ``second`` object, if any (the ``shapes`` format). A
    dataset whose items lack these (``idx``, ``folder``, tensors, iterables) gives
    ``None``: its network learns from the class labels alone.
    """
    if isinstance(data, Tensor) or not (hasattr(data, "__len__")
                                        and hasattr(data, "__getitem__")):
        return None
    n = len(data) if limit is None else min(limit, len(data))
    getter = getattr(data, "attributes", None)
    rows = []
    for i in range(n):
        if callable(getter):
            attributes = getter(i)
        else:
            item = data[i]
            attributes = item.get("attributes") if isinstance(item, Mapping) else None
        first = _object_cell(attributes)
        if first is None:
            return None
        row = [0] * (GRID * GRID)
        objects = [first]
        if attributes.get("second"):
            second = _object_cell(attributes["second"])
            if second is None:
                return None
            objects.append(second)
        for cell, size in objects:
            row[cell] = max(row[cell], size)
        rows.append(row)
    if not rows:
        return None
    return torch.tensor(rows, dtype=torch.int64)


def _describe(ds: Any) -> str:
    for attr in ("description", "name"):
        value = getattr(ds, attr, None)
        if isinstance(value, str) and value:
            return value
    parts = [type(ds).__name__]
    for attr in ("split", "resolution", "channels", "num_classes"):
        value = getattr(ds, attr, None)
        if value is not None:
            parts.append(f"{attr}={value}")
    return " ".join(parts)


# ------------------------------------------------------------------- training


def train_feature_net(train_ds: Any, eval_ds: Any, *, epochs: int = 12, batch_size: int = 64,
                      lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
                      width: int = 16, feature_dim: int | None = None,
                      num_classes: int | None = None,
                      max_train: int | None = None, max_eval: int | None = None,
                      description: str | None = None, compute_floor: bool = True,
                      floor_subsets: int = 50, floor_subset_size: int = 1000,
                      num_threads: int | None = None, verbose: bool = False,
                      variant: str = "layout", layout: bool | None = None,
                      layout_weight: float = 3.0) -> FeatureNet:
    """Train a :class:`FeatureNet` on ``train_ds`` (the real training split) only.

    ``train_ds`` and ``eval_ds`` give ``{"image", "label"}`` items (see
    :func:`load_images`). ``eval_ds`` must be disjoint from ``train_ds``: it is used
    only to measure the held-out accuracy and, when ``compute_floor``, the
    real-vs-real floor (FD and KID between two disjoint random halves of it). The
    returned network is in eval mode; its ``info`` records the dataset
    (``description`` or one made from the dataset's attributes), ``n_train``,
    ``n_eval``, ``accuracy``, the training options and the floor.

    ``variant`` is ``"layout"`` (the default: a 3x3 spatial map, position-aware) or
    ``"pooled"`` (the version-1 global max pool). ``feature_dim`` defaults to 64 for
    ``layout`` and 128 for ``pooled``. ``layout`` (``layout`` variant only) trains the
    auxiliary per-cell head on :func:`layout_targets` with weight ``layout_weight``:
    ``None`` uses it when both splits provide the targets, ``True`` requires them.

    ``num_threads`` sets torch's intra-op threads for the call (restored after): on a
    machine shared with other jobs, ``1`` can be many times faster than the default
    (oversubscribed OpenMP threads wait on each other).
    """
    if variant not in VARIANTS:
        close = difflib.get_close_matches(str(variant), VARIANTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadConfig(f"feature net: variant must be one of {', '.join(VARIANTS)}, "
                        f"got {variant!r}{hint}")
    if layout and variant != "layout":
        raise BadConfig("feature net: layout=True (per-cell targets) needs variant='layout'")
    if not layout_weight >= 0:
        raise BadConfig(f"feature net: layout_weight must be >= 0, got {layout_weight!r}")
    if feature_dim is None:
        feature_dim = 64 if variant == "layout" else 128
    with _threads(num_threads):
        return _train(train_ds, eval_ds, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, seed=seed, width=width,
                      feature_dim=feature_dim, num_classes=num_classes, max_train=max_train,
                      max_eval=max_eval, description=description, compute_floor=compute_floor,
                      floor_subsets=floor_subsets, floor_subset_size=floor_subset_size,
                      verbose=verbose, variant=variant, layout=layout,
                      layout_weight=layout_weight)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(train_ds: Any, eval_ds: Any, *, epochs: int, batch_size: int, lr: float,
           weight_decay: float, seed: int, width: int, feature_dim: int,
           num_classes: int | None, max_train: int | None, max_eval: int | None,
           description: str | None, compute_floor: bool, floor_subsets: int,
           floor_subset_size: int, verbose: bool, variant: str, layout: bool | None,
           layout_weight: float) -> FeatureNet:
    from .frechet import fd_from_features, kid_from_features  # no import cycle at load

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise BadConfig("epochs and batch_size must be >= 1 and lr > 0")
    if eval_ds is train_ds:
        raise BadConfig("eval_ds must be a held-out split, not the training set itself")
    x, y = load_images(train_ds, max_train)
    if y is None:
        raise BadData("train_feature_net needs labelled items ({'image', 'label'})")
    ex, ey = load_images(eval_ds, max_eval)
    if ey is None:
        raise BadData("train_feature_net needs a labelled eval split ({'image', 'label'})")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"square images expected, got {x.shape[2]}x{x.shape[3]}")
    if tuple(ex.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"train and eval images differ: {tuple(x.shape[1:])} vs "
                         f"{tuple(ex.shape[1:])}")
    if num_classes is None:
        num_classes = getattr(train_ds, "num_classes", None) or int(max(y.max(), ey.max())) + 1
    if int(y.min()) < 0 or int(max(y.max(), ey.max())) >= num_classes:
        raise BadData(f"labels must lie in [0, {num_classes})")
    lt = et = None
    if variant == "layout" and layout is not False:
        lt, et = layout_targets(train_ds, max_train), layout_targets(eval_ds, max_eval)
        if lt is None or et is None or lt.shape[0] != x.shape[0] or et.shape[0] != ex.shape[0]:
            if layout:
                raise BadData("train_feature_net(layout=True) needs items whose "
                              "'attributes' give each object's row, col and size (the "
                              "shapes dataset's format), in both splits")
            lt = et = None
    config = FeatureNetConfig(in_channels=int(x.shape[1]), num_classes=int(num_classes),
                              width=width, feature_dim=feature_dim, resolution=int(x.shape[2]),
                              variant=variant, layout_head=lt is not None)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, "feature-net-init"))
        net = FeatureNet(config)
    gen = torch_generator(seed, "feature-net-order")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            feats = net.embed(x[idx])
            loss = F.cross_entropy(net.head(feats), y[idx])
            if lt is not None:
                loss = loss + layout_weight * F.cross_entropy(net.layout_logits(feats), lt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        if verbose:
            print(f"feature net epoch {epoch + 1}/{epochs}: loss {running / steps_per_epoch:.4f}")
    net.eval()
    with torch.no_grad():
        if variant == "layout":
            train_feats = torch.cat([net.embed(x[i:i + 512]) for i in range(0, n, 512)])
            rms = float(train_feats.double().pow(2).mean().sqrt())
            net.feature_scale.fill_(rms if rms > 0 else 1.0)
        feats = torch.cat([net.embed(ex[i:i + 512]) for i in range(0, ex.shape[0], 512)])
        pred = net.head(feats).argmax(1)
        layout_acc = None
        if et is not None:
            cells = net.layout_logits(feats).argmax(1)
            layout_acc = {"cells": float((cells == et).float().mean()),
                          "scenes": float((cells == et).all(1).float().mean())}
    accuracy = float((pred == ey).float().mean())
    seconds = time.perf_counter() - start
    floor = None
    if compute_floor and ex.shape[0] >= 4:
        feats = net.features(ex)
        perm = torch.randperm(ex.shape[0], generator=torch_generator(seed, "floor-halves"))
        half = ex.shape[0] // 2
        a, b = feats[perm[:half]], feats[perm[half:2 * half]]
        kid = kid_from_features(a, b, subsets=floor_subsets, subset_size=floor_subset_size,
                                seed=seed)
        floor = {"fd": fd_from_features(a, b), "kid": kid["kid"], "kid_std": kid["kid_std"],
                 "n_per_side": half, "kid_subsets": floor_subsets,
                 "kid_subset_size": min(floor_subset_size, half),
                 "split": "held-out eval split, two disjoint random halves"}
    net.info = {"dataset": description or _describe(train_ds), "n_train": int(n),
                "n_eval": int(ex.shape[0]), "accuracy": accuracy,
                "layout_accuracy": layout_acc,
                "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                             "weight_decay": weight_decay, "seed": seed,
                             "layout_weight": layout_weight if lt is not None else None,
                             "seconds": round(seconds, 2)},
                "floor": floor}
    if verbose:
        print(f"feature net: held-out accuracy {accuracy:.4f} on {ex.shape[0]} images "
              f"({seconds:.1f} s)")
    return net


def cached_feature_net(directory: str | Path, train_ds: Any, eval_ds: Any, *,
                       variant: str = "layout", **train_kwargs: Any) -> FeatureNet:
    """The feature net saved in ``directory`` if it is of ``variant``, else one trained
    with :func:`train_feature_net` (``variant``, ``train_kwargs``) and saved there.

    Evaluations that report an in-domain FD (the ``autoencoder`` and ``ldm``
    objectives) keep theirs in ``RUN_DIR/features/`` so ``gaf eval`` reuses it. A
    saved net of another variant (a version-1 ``pooled`` net of an older run) is not
    reused: it is replaced by a new one of ``variant``, so an old run re-evaluated
    reports the metric of the current code.
    """
    directory = Path(directory)
    if (directory / META_FILE).is_file():
        net = FeatureNet.load(directory)
        if net.variant == variant:
            return net
    import torch

    with torch.enable_grad():
        net = train_feature_net(train_ds, eval_ds, variant=variant, **train_kwargs)
    net.save(directory)
    return net
