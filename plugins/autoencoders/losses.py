"""Loss pieces of the first-stage objective (``autoencoder``): each one a small,
separately tested function.

* :func:`reconstruction_loss` — mean absolute (``l1``, the LDM's choice) or squared
  (``l2``) error per pixel.
* :func:`kl_per_pixel` — the diagonal-Gaussian KL (summed over the latent elements of
  each image, averaged over the batch) divided by the number of input pixel values
  ``C·H·W``. The LDM sums the reconstruction error over pixels and adds
  ``kl_weight · KL``; dividing both by ``C·H·W`` (per-pixel mean reconstruction
  error) keeps its ratio, so the LDM's ``kl_weight = 1e-6`` means the same here.
* :func:`hinge_d_loss` — ``0.5·(mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))))``.
* :func:`hinge_g_loss` — ``−mean(D(x̂))``.
* :func:`adaptive_weight` — the LDM/VQGAN balance
  ``λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + 1e−4)``, clamped to ``[0, 1e4]`` and
  detached, with ``G_L`` the decoder's last layer weight.
* :func:`frozen_call` — run a module with its parameters detached, so gradients
  reach the module's *input* but never its parameters (the generator's view of the
  discriminator).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["reconstruction_loss", "kl_per_pixel", "hinge_d_loss", "hinge_g_loss",
           "adaptive_weight", "frozen_call", "ADAPTIVE_EPS", "ADAPTIVE_MAX"]

ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4


def reconstruction_loss(x: Tensor, rec: Tensor, kind: Literal["l1", "l2"] = "l1") -> Tensor:
    """Mean per-pixel ``|x − rec|`` (``l1``) or ``(x − rec)²`` (``l2``)."""
    if kind == "l1":
        return (x - rec).abs().mean()
    if kind == "l2":
        return (x - rec).pow(2).mean()
    raise ValueError(f"unknown reconstruction loss {kind!r} (l1 or l2)")


def kl_per_pixel(kl_per_image: Tensor, pixels: int) -> Tensor:
    """Batch-mean per-image KL divided by the ``pixels`` (``C·H·W``) of an input image."""
    return kl_per_image.mean() / pixels


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss ``0.5·(E[relu(1 − D(x))] + E[relu(1 + D(x̂))])``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator loss ``−E[D(x̂)]`` (the LDM's hinge-GAN generator term)."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor,
                    max_weight: float = ADAPTIVE_MAX) -> Tensor:
    """``‖∇_W rec_loss‖ / (‖∇_W g_loss‖ + 1e−4)`` at ``W = last_layer``, clamped to
    ``[0, max_weight]`` and detached (the graph is kept for the real backward)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = g_rec.float().norm() / (g_gan.float().norm() + ADAPTIVE_EPS)
    return weight.clamp(0.0, max_weight).detach()


def frozen_call(module: nn.Module, *args: Tensor) -> Tensor:
    """``module(*args)`` with every parameter replaced by its detached value: the
    output is differentiable with respect to ``args`` only. Buffers (BatchNorm
    statistics) are the module's own and are updated as in a normal call."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args)
