"""The loss terms of the text-conditional GAN, each a small function of discriminator
logits ``s = D(x, e)`` (so ``D = σ(s)``).

Matching-aware discriminator (GAN-CLS, Reed et al. 2016, Algorithm 1): three kinds of
input, a real image with its text ``s_r``, a real image with a wrong text ``s_w`` and
a generated image with its text ``s_f``::

    original:  L_D = −log D(x, h) − ½ [log(1 − D(x, ĥ)) + log(1 − D(G(z, h), h))]
                   = softplus(−s_r) + ½ [softplus(s_w) + softplus(s_f)]
    hinge:     L_D = relu(1 − s_r) + ½ [relu(1 + s_w) + relu(1 + s_f)]

Without CLS (plain GAN) the wrong-text term is absent and the fake term has weight 1:
``softplus(−s_r) + softplus(s_f)`` (hinge: ``relu(1 − s_r) + relu(1 + s_f)``). Each
term is a batch mean; the wrong-text term averages over the pairs whose wrong caption
really differs from the image's own (``valid``; a batch without one has no such term).

Generator, on each set of generated images it is trained on (its own captions, and
with INT the interpolated embeddings: the two terms are added)::

    original (non-saturating):  L_G = −log D(G(z, h), h) = softplus(−s_f)
    hinge:                      L_G = −s_f

Matching-aware gradient penalty (DF-GAN, Tao et al. 2022) on real images with their
own text, added to ``L_D``::

    L_MA-GP = k · mean_i ‖(∇_x D(x_i, e_i), ∇_e D(x_i, e_i))‖₂^p,   k = 2, p = 6

the norm of the gradient with respect to the image and the text embedding together,
as DF-GAN's code computes it (its paper writes the sum of the two norms).

Interpolation (GAN-INT): ``interpolate(h1, h2, β) = β h1 + (1 − β) h2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["d_loss", "g_loss", "matching_aware_gp", "interpolate", "Kind"]

Kind = Literal["original", "hinge"]


def _real_term(s: Tensor, kind: Kind) -> Tensor:
    return F.softplus(-s) if kind == "original" else F.relu(1.0 - s)


def _fake_term(s: Tensor, kind: Kind) -> Tensor:
    return F.softplus(s) if kind == "original" else F.relu(1.0 + s)


def d_loss(s_real: Tensor, s_fake: Tensor, s_wrong: Tensor | None = None,
           valid: Tensor | None = None, kind: Kind = "original") -> tuple[Tensor, dict[str, float]]:
    """The discriminator loss of the module docstring and its parts, ``(loss, terms)``.

    ``s_wrong`` (real images with wrong texts) makes it matching-aware (CLS); ``valid``
    (bool, like ``s_wrong``) keeps the pairs whose wrong caption differs from the true
    one (default: all)."""
    _check(kind)
    real = _real_term(s_real, kind).mean()
    fake = _fake_term(s_fake, kind).mean()
    terms = {"d_real": float(real.detach()), "d_fake": float(fake.detach())}
    if s_wrong is None:
        return real + fake, terms
    keep = torch.ones_like(s_wrong, dtype=torch.bool) if valid is None else valid
    if not bool(keep.any()):
        return real + 0.5 * fake, terms
    wrong = _fake_term(s_wrong[keep], kind).mean()
    terms["d_wrong"] = float(wrong.detach())
    return real + 0.5 * (wrong + fake), terms


def g_loss(s_fake: Tensor, kind: Kind = "original") -> Tensor:
    """``softplus(−s)`` (non-saturating ``−log D``) or ``−s`` (hinge), the batch mean."""
    _check(kind)
    return F.softplus(-s_fake).mean() if kind == "original" else -s_fake.mean()


def matching_aware_gp(discriminator: Callable[[Tensor, Tensor], Tensor], x: Tensor, e: Tensor,
                      k: float = 2.0, p: float = 6.0) -> Tensor:
    """DF-GAN's ``k · mean ‖(∇_x D, ∇_e D)‖₂^p`` at real images ``x`` with their text
    embeddings ``e``; differentiable (``create_graph``), so it trains the discriminator."""
    x = x.detach().requires_grad_(True)
    e = e.detach().requires_grad_(True)
    out = discriminator(x, e)
    gx, ge = torch.autograd.grad(out.sum(), (x, e), create_graph=True)
    norm = torch.cat([gx.flatten(1), ge.flatten(1)], dim=1).norm(dim=1)
    return k * norm.pow(p).mean()


def interpolate(h1: Tensor, h2: Tensor, beta: float = 0.5) -> Tensor:
    """``β h1 + (1 − β) h2``: the GAN-INT embedding between two captions."""
    return beta * h1 + (1.0 - beta) * h2


def _check(kind: str) -> None:
    if kind not in ("original", "hinge"):
        raise ValueError(f"unknown GAN loss {kind!r} (original or hinge)")
