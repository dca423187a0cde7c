"""Neural style transfer by optimising the pixels (Gatys, Ecker and Bethge 2016).

The ``gatys`` stylizer (kind ``stylizer``) takes a content image ``p`` and a style
image ``a`` and finds the image ``x`` that minimises

    L(x) = α · ½ ‖F(x) − F(p)‖²  +  β · Σ_l w_l ‖G^l(x) − G^l(a)‖² / (4 N_l² M_l²)

(:mod:`gaf.plugins.style.losses`), the features ``F`` and Gram matrices ``G`` coming
from a fixed feature network (:mod:`gaf.plugins.style.extractors`: ``features`` is a
registered name or a path). The content term reads the network's ``content_layer``,
the style term its ``style_layers`` with Gatys' equal weights ``w_l = 1/L``; either
can be set (``content_layer``, ``style_layers``). α and β default to the network's
own pair (``content_weight``, ``style_weight`` here override them).

Optimisation
------------
L-BFGS over the pixels, as in the paper: ``torch.optim.LBFGS`` with the strong-Wolfe
line search, ``steps`` iterations (``max_iter``; at most ``1.25·steps`` loss
evaluations, torch's default) and a history of ``history_size`` pairs. Both of torch's
tolerances are 0, so it stops early only when a step or the gradient is exactly zero
(no progress is possible), not on small ones. The start
is the content image (``init = "content"``) or Gaussian noise ``N(0, 0.5²)`` clamped
to the pixel range (``"noise"``, Gatys' white-noise start), drawn from the seed's
named stream ``"stylize-init"``.

Pixels stay in ``[-1, 1]`` by a projection inside the objective: the network sees
``clamp(x, −1, 1)``, so the loss L-BFGS lowers is exactly the loss of the image that is
returned (``clamp(x)``). A pixel pushed past a bound has a zero gradient there and is
returned at the bound. (No reparametrisation such as ``tanh``: near the black
background, ``−1``, its gradient vanishes and the background could not be restyled.)

Everything is deterministic for a seed on one device: the extractor's weights are
fixed by its own seed, the only random draw is the noise start, and L-BFGS is
deterministic.

Contract of a ``stylizer`` (what ``gaf stylize`` calls):
``__call__(content, style, *, seed=0, device=None)`` with images ``(3, H, W)`` in
``[-1, 1]`` of the same size → :class:`StyleResult`; ``features`` (the extractor) and
``losses(image, content, style)`` (the unweighted losses of any image).

Public API: :class:`Gatys` (``Config``), :class:`StyleResult`, :class:`Targets`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option, option_error
from gaf.errors import BadConfig, BadData
from gaf.seeding import torch_generator

from .extractors import resolve_features
from .losses import content_loss, gram_matrix, style_loss, uniform_weights

__all__ = ["Gatys", "GatysConfig", "StyleResult", "Targets"]

#: the standard deviation of the noise start
NOISE_STD = 0.5


@attrs.define
class GatysConfig:
    """Options of the ``gatys`` stylizer."""

    features: str = option("random-cnn", "feature network: a style-features name (gaf list "
                                         "style-features) or a path (a feature net directory "
                                         "or a trained clip run)")
    steps: int = option(100, "L-BFGS iterations", ge=1)
    content_weight: float | None = option(None, "alpha; none: the feature network's default",
                                          ge=0)
    style_weight: float | None = option(None, "beta; none: the feature network's default",
                                        ge=0)
    content_layer: str = option("", "the content layer; empty: the network's default")
    style_layers: tuple[str, ...] = option((), "the style layers (equal weights 1/L); "
                                               "empty: the network's default")
    init: Literal["content", "noise"] = option("content", "start from the content image or "
                                                          "from Gaussian noise")
    history_size: int = option(50, "L-BFGS history (curvature pairs kept)", ge=1)

    def __attrs_post_init__(self) -> None:
        if self.content_weight == 0 and self.style_weight == 0:
            raise option_error("style_weight", "must be > 0 when content_weight is 0",
                               self.style_weight)


@attrs.frozen
class Targets:
    """What the loss compares with: the content maps ``P`` and the style Grams ``A``."""

    content: Tensor
    grams: tuple[Tensor, ...]


@attrs.frozen
class StyleResult:
    """A stylised image and its losses (unweighted; ``*_start``: of the starting image)."""

    image: Tensor
    content_loss: float
    style_loss: float
    content_loss_start: float
    style_loss_start: float
    total: float
    iterations: int
    evaluations: int

    @property
    def style_fraction(self) -> float:
        """The style loss reached as a fraction of its starting value."""
        return self.style_loss / self.style_loss_start if self.style_loss_start else 0.0


class Gatys:
    """Gatys et al.'s style transfer: L-BFGS on the pixels against a fixed network."""

    Config = GatysConfig

    def __init__(self, config: GatysConfig | None = None, *, features: Any = None):
        self.config = c = config or GatysConfig()
        self.features = features if features is not None else resolve_features(c.features)
        layers = tuple(self.features.layers)
        self.content_layer = c.content_layer or self.features.content_layer
        self.style_layers = tuple(c.style_layers) or tuple(self.features.style_layers)
        for name in (self.content_layer, *self.style_layers):
            if name not in layers:
                raise BadConfig(f"stylizer gatys: the feature network has no layer {name!r}; "
                                f"its layers: {', '.join(layers)}")
        self._content_index = layers.index(self.content_layer)
        self._style_index = [layers.index(n) for n in self.style_layers]
        self.weights = uniform_weights(len(self.style_layers))
        self.content_weight = (self.features.content_weight if c.content_weight is None
                               else c.content_weight)
        self.style_weight = (self.features.style_weight if c.style_weight is None
                             else c.style_weight)

    # ------------------------------------------------------------------ losses

    def targets(self, content: Tensor, style: Tensor) -> Targets:
        """``P`` (the content layer's maps of ``content``) and ``A`` (the style layers'
        Gram matrices of ``style``), images ``(3, H, W)``."""
        with torch.no_grad():
            maps_c = self.features(content[None])
            maps_s = self.features(style[None])
        return Targets(maps_c[self._content_index][0],
                       tuple(gram_matrix(maps_s[i])[0] for i in self._style_index))

    def _losses(self, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
        maps = self.features(images)
        lc = content_loss(maps[self._content_index], targets.content)
        ls = style_loss([maps[i] for i in self._style_index], targets.grams, self.weights)
        return lc, ls

    def losses(self, image: Tensor, content: Tensor, style: Tensor) -> dict[str, float]:
        """The unweighted content and style losses of ``image`` (all ``(3, H, W)``)."""
        _check_images(content, style, image)
        device = _device_of(self.features)
        targets = self.targets(content.to(device), style.to(device))
        with torch.no_grad():
            lc, ls = self._losses(image.to(device)[None].clamp(-1, 1), targets)
        return {"content_loss": float(lc[0]), "style_loss": float(ls[0])}

    # ------------------------------------------------------------------ transfer

    def __call__(self, content: Tensor, style: Tensor, *, seed: int = 0,
                 device: Any = None) -> StyleResult:
        """Stylise ``content`` with ``style`` (both ``(3, H, W)`` in ``[-1, 1]``)."""
        _check_images(content, style)
        if device is not None:
            self.features.to(device)
        device = _device_of(self.features)
        content = content.to(device).float().contiguous()
        style = style.to(device).float().contiguous()
        targets = self.targets(content, style)
        c = self.config
        if c.init == "noise":
            gen = torch_generator(seed, "stylize-init")
            start = (torch.randn(content.shape, generator=gen) * NOISE_STD).clamp(-1, 1)
            start = start.to(device)
        else:
            start = content.clone()
        x = start[None].contiguous().clone().requires_grad_(True)
        alpha, beta = self.content_weight, self.style_weight
        with torch.no_grad():
            lc0, ls0 = self._losses(x.clamp(-1, 1), targets)
        optimiser = torch.optim.LBFGS([x], lr=1.0, max_iter=c.steps,
                                      history_size=c.history_size, tolerance_grad=0.0,
                                      tolerance_change=0.0, line_search_fn="strong_wolfe")
        evaluations = 0

        def closure() -> Tensor:
            nonlocal evaluations
            evaluations += 1
            optimiser.zero_grad(set_to_none=True)
            lc, ls = self._losses(x.clamp(-1, 1), targets)
            total = (alpha * lc + beta * ls).sum()
            total.backward()
            return total

        with torch.enable_grad():
            optimiser.step(closure)
        iterations = int(optimiser.state[optimiser.param_groups[0]["params"][0]]
                         .get("n_iter", 0))
        image = x.detach().clamp(-1, 1)
        with torch.no_grad():
            lc, ls = self._losses(image, targets)
        if not (torch.isfinite(lc).all() and torch.isfinite(ls).all()):
            raise BadData("stylizer gatys: the loss became non-finite; lower --style-weight "
                          "or --content-weight")
        return StyleResult(image=image[0].cpu(), content_loss=float(lc[0]),
                           style_loss=float(ls[0]), content_loss_start=float(lc0[0]),
                           style_loss_start=float(ls0[0]),
                           total=float(alpha * lc[0] + beta * ls[0]),
                           iterations=iterations, evaluations=evaluations)


def _device_of(module: Any) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _check_images(content: Tensor, style: Tensor, *more: Tensor) -> None:
    for name, image in (("content", content), ("style", style),
                        *(("image", m) for m in more)):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise BadData(f"stylizer gatys: the {name} image must be (3, H, W), got {shape}")
        if not torch.isfinite(image).all():
            raise BadData(f"stylizer gatys: the {name} image has non-finite pixels")
    if style.shape != content.shape:
        raise BadData(f"stylizer gatys: the style image is {style.shape[1]}x{style.shape[2]} "
                      f"and the content image {content.shape[1]}x{content.shape[2]}; resize "
                      "the style to the content's size (gaf stylize does)")
