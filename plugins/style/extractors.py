"""Feature networks for style transfer (kind ``style-features``), chosen by name or path.

No pretrained VGG can be downloaded here, so the Gram statistics come from networks
available offline:

* ``random-cnn`` (:class:`RandomMultiScaleCNN`): an untrained, single-layer,
  multi-scale CNN in the spirit of Ustyuzhaninov, Brendel, Gatys and Bethge (2016,
  arXiv:1606.00021), who found that the Gram matrices of such a network model
  textures about as well as VGG's. One convolution per filter size
  (``kernel_sizes``, default 3, 5, 7, 11, 15: the paper's sizes that fit a 32-pixel
  image), ``channels`` filters each, applied side by side to the image with reflect
  padding, then ReLU. Weights are i.i.d. Gaussian ``N(0, 1/fan_in)``, no bias, drawn
  from the seed's named stream ``"style-random-cnn"`` (:mod:`gaf.seeding`): fixed for
  a seed, never trained. Layers: ``k3``, ``k5``, … (one per size) and ``all`` (every
  size's maps stacked, whose Gram matrix also holds the cross-scale correlations, the
  paper's multi-scale model). Style layer ``all``; content layer ``k3``.
* ``feature-net`` (:class:`FeatureNetLayers`): the in-domain classifier that the
  project trains for FD and KID (:mod:`gaf.plugins.metrics.features`,
  ``FeatureNet.load(path)``). Its five conv blocks (conv3×3, GroupNorm, ReLU) give the
  layers ``block1`` (w channels, full size), ``block2``, ``block3`` (2w, half size),
  ``block4``, ``block5`` (4w, quarter size). Gatys' choice transposed: every block is
  a style layer (the paper: the first conv of each of VGG's five stages) and the
  content layer is ``block4``, the first of the deepest stage (the paper: ``conv4_2``).
* ``clip-image`` (:class:`ClipCNNLayers`): the residual-CNN image tower of a trained
  CLIP (``gaf run --objective clip``; :func:`gaf.plugins.clip.frozen.load_clip`).
  Layers: ``res1``, ``res2``, ``res3`` (the output of each stage's ResBlock: w, w and
  2w channels at full, half and quarter size) and ``out`` (the 4w-channel map after the
  last GroupNorm and SiLU, an eighth of the size, what attention pooling reads). Style
  layers: all four; content layer ``res3``. A ViT tower has no feature maps and is
  refused.

Each extractor is an ``nn.Module`` in eval mode with every parameter frozen
(``requires_grad`` False); it is differentiable with respect to the image. Its
contract (what ``gaf.plugins.style.transfer`` uses, and a plugin's own extractor must
provide):

* ``__call__(images)``: images ``(B, 3, H, W)`` in ``[-1, 1]`` → a list of feature maps
  ``(B, N_l, H_l, W_l)``, one per name in ``layers``, in that order;
* ``layers``: the names of the maps; ``content_layer`` and ``style_layers``: the
  defaults Gatys' loss reads;
* ``content_weight`` and ``style_weight``: the default α and β. Gatys' ratio α/β is
  specific to VGG's activation scale (plain sums over a layer's activations), so each
  network declares its own pair, chosen on the ``shapes`` validation split
  (docs/results.md § Neural style transfer says how).

``--features`` takes a registered name or a path: :func:`resolve_features` builds a
name from the registry (``gaf list style-features``) and recognises a directory with
``feature_net.json`` as a ``feature-net`` and anything else that exists as a trained
CLIP (a ``clip`` run directory or a saved ``clip`` encoder).

Public API: :class:`RandomMultiScaleCNN`, :class:`FeatureNetLayers`,
:class:`ClipCNNLayers` (each with its ``Config``), :func:`resolve_features`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.errors import BadConfig
from gaf.seeding import torch_generator

__all__ = ["RandomMultiScaleCNN", "RandomCNNConfig", "FeatureNetLayers", "FeatureNetLayersConfig",
           "ClipCNNLayers", "ClipCNNLayersConfig", "resolve_features", "KIND"]

#: the registry kind of the extractors
KIND = "style-features"


class _Frozen(nn.Module):
    """Eval mode always, no parameter trained: a fixed feature space."""

    layers: tuple[str, ...] = ()
    content_layer: str = ""
    style_layers: tuple[str, ...] = ()
    content_weight: float = 1.0
    style_weight: float = 1.0

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        """Stays in eval mode: the network is a fixed feature space."""
        return super().train(False)

    def _check(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.gaf_label}: images are (B, 3, H, W), got "
                             f"{tuple(images.shape)}")

    @property
    def gaf_label(self) -> str:
        return f"{KIND} {getattr(self, 'gaf_name', type(self).__name__)}"


# ------------------------------------------------------------------- random-cnn


def _kernel_sizes(inst: Any, attribute: Any, value: Any) -> None:
    if not value:
        raise option_error(attribute.name, "must name at least one size", value)
    if any(k % 2 == 0 for k in value):
        raise option_error(attribute.name, "must be odd (same-size maps)", value)
    if len(set(value)) != len(value):
        raise option_error(attribute.name, "must not repeat a size", value)


@attrs.define
class RandomCNNConfig:
    """Options of ``random-cnn``."""

    kernel_sizes: tuple[int, ...] = option((3, 5, 7, 11, 15), "filter sizes, one layer each "
                                           "(odd)", ge=1, validator=_kernel_sizes)
    channels: int = option(32, "filters per size", ge=1)
    seed: int = option(0, "seed of the random filters", ge=0)
    content_weight: float = option(1.0, "default alpha (content weight)", gt=0)
    style_weight: float = option(1e4, "default beta (style weight), chosen on validation",
                                 gt=0)


class RandomMultiScaleCNN(_Frozen):
    """An untrained single-layer multi-scale CNN (Ustyuzhaninov et al. 2016)."""

    Config = RandomCNNConfig

    def __init__(self, config: RandomCNNConfig | None = None):
        super().__init__()
        self.config = c = config or RandomCNNConfig()
        gen = torch_generator(c.seed, "style-random-cnn")
        self.weights = nn.ParameterList()
        for k in c.kernel_sizes:
            fan_in = 3 * k * k
            w = torch.randn(c.channels, 3, k, k, generator=gen) / fan_in ** 0.5
            self.weights.append(nn.Parameter(w))
        self.layers = (*(f"k{k}" for k in c.kernel_sizes), "all")
        self.content_layer = f"k{c.kernel_sizes[0]}"
        self.style_layers = ("all",)
        self.content_weight, self.style_weight = c.content_weight, c.style_weight
        self._freeze()

    def forward(self, images: Tensor) -> list[Tensor]:
        """One ReLU map per filter size, then all of them stacked (``all``)."""
        self._check(images)
        maps = []
        for k, w in zip(self.config.kernel_sizes, self.weights, strict=True):
            pad = k // 2
            if pad >= min(images.shape[2:]):
                raise ValueError(f"{self.gaf_label}: a {k}x{k} filter needs images larger "
                                 f"than {pad} pixels, got {images.shape[2]}x{images.shape[3]}")
            x = F.pad(images, (pad, pad, pad, pad), mode="reflect") if pad else images
            maps.append(F.relu(F.conv2d(x, w.to(images.dtype))))
        return [*maps, torch.cat(maps, dim=1)]


# ------------------------------------------------------------------ feature-net


def _needs_path(value: str, what: str, how: str) -> None:
    if not value:
        raise BadConfig(f"{KIND} {what} needs a path: {how}")


@attrs.define
class FeatureNetLayersConfig:
    """Options of ``feature-net``."""

    path: str = option("", "a feature net directory (feature_net.json + model.safetensors)")
    content_weight: float = option(1.0, "default alpha (content weight)", gt=0)
    style_weight: float = option(100.0, "default beta (style weight), chosen on validation",
                                 gt=0)


class FeatureNetLayers(_Frozen):
    """The conv blocks of a trained in-domain :class:`~gaf.plugins.metrics.features.FeatureNet`."""

    Config = FeatureNetLayersConfig

    def __init__(self, config: FeatureNetLayersConfig | None = None):
        from gaf.plugins.metrics.features import FeatureNet

        super().__init__()
        self.config = c = config or FeatureNetLayersConfig()
        _needs_path(c.path, "feature-net", "--features DIR, a directory written by "
                    "gaf.plugins.metrics.features.train_feature_net(...).save(DIR)")
        net = FeatureNet.load(c.path)
        if net.config.in_channels != 3:
            raise BadConfig(f"{KIND} feature-net: {c.path} takes {net.config.in_channels}-"
                            "channel images; style transfer needs an RGB network")
        self.body = net.body
        self.layers = tuple(f"block{i + 1}" for i in range(len(self.body)))
        self.content_layer = "block4"
        self.style_layers = self.layers
        self.content_weight, self.style_weight = c.content_weight, c.style_weight
        self._freeze()

    def forward(self, images: Tensor) -> list[Tensor]:
        """Each block's output (after its ReLU)."""
        self._check(images)
        maps, h = [], images
        for block in self.body:
            h = block(h)
            maps.append(h)
        return maps


# ------------------------------------------------------------------- clip-image


@attrs.define
class ClipCNNLayersConfig:
    """Options of ``clip-image``."""

    clip: str = option("", "a trained clip run directory (or a saved clip encoder) with the "
                           "cnn image tower")
    content_weight: float = option(1.0, "default alpha (content weight)", gt=0)
    style_weight: float = option(3e3, "default beta (style weight), chosen on validation",
                                 gt=0)


class ClipCNNLayers(_Frozen):
    """The stages of a trained CLIP's residual-CNN image tower."""

    Config = ClipCNNLayersConfig

    def __init__(self, config: ClipCNNLayersConfig | None = None):
        from gaf.plugins.clip.frozen import load_clip

        super().__init__()
        self.config = c = config or ClipCNNLayersConfig()
        _needs_path(c.clip, "clip-image", "--features RUN_DIR, the directory of a "
                    "`gaf run --objective clip` run")
        clip = load_clip(str(Path(c.clip).resolve()), who=f"{KIND} clip-image")
        if clip.config.image_tower != "cnn":
            raise BadConfig(f"{KIND} clip-image: {c.clip} has a {clip.config.image_tower} "
                            "image tower; style transfer reads the feature maps of the cnn "
                            "tower")
        if clip.config.in_channels != 3:
            raise BadConfig(f"{KIND} clip-image: {c.clip} takes {clip.config.in_channels}-"
                            "channel images; style transfer needs an RGB tower")
        self.body = clip.image.body
        self.layers = ("res1", "res2", "res3", "out")
        self.content_layer = "res3"
        self.style_layers = self.layers
        self.content_weight, self.style_weight = c.content_weight, c.style_weight
        self._freeze()

    def forward(self, images: Tensor) -> list[Tensor]:
        """The output of each stage's ResBlock, and the normalised last map."""
        self._check(images)
        body = list(self.body)
        h = body[0](images)
        maps = []
        for i in range(3):  # ResBlock, then the stride-2 conv of stage i
            h = body[1 + 2 * i](h)
            maps.append(h)
            h = body[2 + 2 * i](h)
        for layer in body[7:]:  # GroupNorm, SiLU
            h = layer(h)
        return [*maps, h]


# ---------------------------------------------------------------- resolution


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith(".") or spec.startswith("~")


def resolve_features(spec: str, registry: Any = None) -> Any:
    """The extractor that ``--features spec`` names: a registered ``style-features``
    name (built with its defaults), a feature net directory (``feature_net.json``:
    ``feature-net``) or a trained CLIP (``clip-image``). An unknown name is an
    :class:`~gaf.errors.UnknownComponent` listing close matches; a missing path a
    :class:`~gaf.errors.BadConfig`."""
    if registry is None:
        from gaf.registry import REGISTRY as registry
    if not isinstance(spec, str) or not spec:
        raise BadConfig(f"--features: a {KIND} name or a path, got {spec!r}")
    path = Path(spec).expanduser()
    if path.exists():
        if (path / "feature_net.json").is_file():
            return registry.create(KIND, "feature-net", path=str(path))
        return registry.create(KIND, "clip-image", clip=str(path))
    if _looks_like_path(spec):
        raise BadConfig(f"--features {spec}: no such file or directory (a path must be a "
                        "feature net directory or a trained clip run)")
    return registry.create(KIND, spec)
