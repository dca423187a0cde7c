"""Gatys' losses: the Gram matrix, the style loss and the content loss.

For a layer ``l`` with ``N_l`` feature maps of ``M_l`` positions each (``M_l = H_l·W_l``),
``F^l`` is the ``N_l × M_l`` matrix of the generated image's activations and
``P^l`` that of the content image. Gatys, Ecker and Bethge (2016, eqs. 1–5):

* content loss (eq. 1):  ``L_content = ½ Σ_ij (F_ij − P_ij)²`` on one layer;
* Gram matrix (eq. 3):   ``G^l = F^l (F^l)ᵀ``, ``N_l × N_l``: which features fire
  together, wherever they are;
* per-layer style term (eq. 4): ``E_l = Σ_ij (G_ij − A_ij)² / (4 N_l² M_l²)``, with
  ``A^l`` the style image's Gram matrix;
* style loss (eq. 5):    ``L_style = Σ_l w_l E_l`` (Gatys: ``w_l = 1/L`` over the
  ``L`` style layers);
* total (eq. 7):         ``L = α L_content + β L_style``.

The sums are plain sums, not means, as in the paper: the loss grows with the layer's
size, which is why α and β are set per feature network (see
:mod:`gaf.plugins.style.extractors`). Every function takes a batch ``(B, N, H, W)`` and
returns one value per image, ``(B,)``; the maps' own dtype is kept (the tests compare
float32 against a float64 reference).

Public API: :func:`gram_matrix`, :func:`layer_style_loss`, :func:`style_loss`,
:func:`content_loss`, :func:`uniform_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["gram_matrix", "layer_style_loss", "style_loss", "content_loss", "uniform_weights"]


def _check_maps(maps: Tensor, who: str) -> None:
    if maps.dim() != 4:
        raise ValueError(f"{who}: feature maps are (B, N, H, W), got shape {tuple(maps.shape)}")


def gram_matrix(maps: Tensor) -> Tensor:
    """``G = F Fᵀ`` per image: ``(B, N, H, W)`` feature maps → ``(B, N, N)``,
    unnormalised (the normalisation is the style loss's ``1/(4 N² M²)``)."""
    _check_maps(maps, "gram_matrix")
    b, n = maps.shape[:2]
    flat = maps.reshape(b, n, -1)
    return flat @ flat.transpose(1, 2)


def layer_style_loss(gram: Tensor, target: Tensor, positions: int) -> Tensor:
    """``E_l = ‖G − A‖² / (4 N² M²)`` per image: ``gram`` ``(B, N, N)``, ``target``
    ``(N, N)`` or ``(B, N, N)`` (the style image's Gram), ``positions`` = ``M``."""
    if gram.dim() != 3 or gram.shape[1] != gram.shape[2]:
        raise ValueError(f"layer_style_loss: a Gram matrix is (B, N, N), got {tuple(gram.shape)}")
    if target.shape[-2:] != gram.shape[-2:]:
        raise ValueError(f"layer_style_loss: target {tuple(target.shape)} does not match "
                         f"the Gram matrix {tuple(gram.shape)}")
    if positions < 1:
        raise ValueError(f"layer_style_loss: positions must be >= 1, got {positions}")
    n = gram.shape[1]
    return (gram - target).pow(2).sum(dim=(1, 2)) / (4.0 * n * n * positions * positions)


def uniform_weights(layers: int) -> tuple[float, ...]:
    """Gatys' layer weights: ``1/L`` for each of ``L`` style layers."""
    if layers < 1:
        raise ValueError("at least one style layer is needed")
    return (1.0 / layers,) * layers


def style_loss(maps: Sequence[Tensor], targets: Sequence[Tensor],
               weights: Sequence[float] | None = None) -> Tensor:
    """``Σ_l w_l E_l`` per image: ``maps[l]`` ``(B, N_l, H_l, W_l)`` of the generated
    images, ``targets[l]`` the style image's Gram matrix of the same layer, ``weights``
    ``w_l`` (default :func:`uniform_weights`)."""
    if len(maps) != len(targets):
        raise ValueError(f"style_loss: {len(maps)} layers of maps but {len(targets)} targets")
    weights = uniform_weights(len(maps)) if weights is None else tuple(weights)
    if len(weights) != len(maps):
        raise ValueError(f"style_loss: {len(weights)} weights for {len(maps)} layers")
    total: Tensor | None = None
    for f, a, w in zip(maps, targets, weights, strict=True):
        _check_maps(f, "style_loss")
        term = w * layer_style_loss(gram_matrix(f), a, f.shape[2] * f.shape[3])
        total = term if total is None else total + term
    assert total is not None
    return total


def content_loss(maps: Tensor, target: Tensor) -> Tensor:
    """``½ Σ (F − P)²`` per image: ``maps`` ``(B, N, H, W)``, ``target`` the content
    image's maps of the same layer (``(N, H, W)`` or ``(B, N, H, W)``)."""
    _check_maps(maps, "content_loss")
    if target.shape[-3:] != maps.shape[-3:]:
        raise ValueError(f"content_loss: target {tuple(target.shape)} does not match the maps "
                         f"{tuple(maps.shape)}")
    return 0.5 * (maps - target).pow(2).sum(dim=(1, 2, 3))
