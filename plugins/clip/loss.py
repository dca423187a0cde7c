"""The CLIP contrastive loss (Radford et al. 2021), with duplicate captions as positives.

For a batch of ``N`` image features ``I`` and ``N`` text features ``T`` (row ``k`` of
each from the same pair), both L2-normalised along the feature axis::

    s      = min(τ, ln 100)                   # the learnable log-temperature, clamped
    logits = e^s · Î Tᵀ                         (N, N): image k against text j
    L      = ½ [ CE_rows(logits, P) + CE_rows(logitsᵀ, Pᵀ) ]

``τ`` (``logit_scale`` in open_clip) starts at ``ln(1/0.07)`` (:data:`INIT_LOG_SCALE`)
and ``e^s`` never exceeds 100 (:data:`MAX_LOG_SCALE`): the clamp is applied here, in the
forward pass, so the temperature the loss uses obeys it whatever the parameter holds,
and the parameter gets no gradient pushing it further while it sits above the bound
(:func:`clamp_log_scale_` also pulls the parameter itself back, as open_clip does after
every optimiser step).

``CE_rows(Z, P)`` is the mean over rows ``k`` of the cross-entropy
``−Σ_j P_kj log softmax(Z_k)_j`` against the target distribution ``P_k``. Plain CLIP has
``P = identity``: pair ``k``'s text is the only right one for image ``k``. On procedural
data (``shapes``, class captions) the same caption is often drawn twice in one batch,
and then the identity target calls a correct text a negative (open_clip issue 1027).
Here ``P_k`` is uniform over the texts whose caption is *identical* to pair ``k``'s
(:func:`duplicate_mask`; the pair itself always included), so duplicate captions are
positives for each other. The mask is symmetric, so ``Pᵀ`` is the same uniform target
for the text-to-image direction. With distinct captions ``P = identity`` and ``L`` is
exactly CLIP's loss (open_clip ``ClipLoss``: the mean of the two cross-entropies).

Under data parallelism every rank's loss must see the negatives of every rank:
:func:`gather_with_grad` all-gathers the features *with* their gradient (as open_clip's
``gather_with_grad=True``), so the loss each rank computes is the loss of the global
batch, and after DDP's gradient averaging every parameter gets exactly the gradient of
one process on the global batch (tested under ``torchrun``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["INIT_LOG_SCALE", "MAX_LOG_SCALE", "clip_logits", "clip_loss", "clamp_log_scale_",
           "duplicate_mask", "gather_with_grad"]

#: CLIP's initial log-temperature, ``ln(1 / 0.07)``
INIT_LOG_SCALE = math.log(1 / 0.07)
#: the bound on the log-temperature: ``e^τ ≤ 100``
MAX_LOG_SCALE = math.log(100.0)


def clip_logits(image: Tensor, text: Tensor, log_scale: Tensor) -> Tensor:
    """``e^min(τ, ln 100) · normalize(image) · normalize(text)ᵀ``: ``(N_image, N_text)``."""
    scale = torch.clamp(log_scale, max=MAX_LOG_SCALE).exp()
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


def duplicate_mask(keys: Tensor) -> Tensor:
    """``(N, N)`` bool: ``True`` where rows ``i`` and ``j`` of ``keys`` are identical
    (token ids ``(N, L)``, or any ``(N, …)`` tensor that identifies a caption; ``(N,)``
    integer ids work too). The diagonal is always ``True``."""
    flat = keys.reshape(keys.shape[0], -1)
    return (flat[:, None, :] == flat[None, :, :]).all(dim=-1)


def clip_loss(image: Tensor, text: Tensor, log_scale: Tensor,
              positives: Tensor | None = None) -> Tensor:
    """The symmetric InfoNCE loss of the module docstring (a scalar).

    ``image`` and ``text``: ``(N, D)`` features of ``N`` pairs (normalised here);
    ``log_scale``: the learnable log-temperature τ (a 0-d tensor); ``positives``: an
    optional ``(N, N)`` symmetric bool mask of the pairs whose captions are identical
    (:func:`duplicate_mask`; ``None`` = all captions distinct).
    """
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(f"clip_loss: image {tuple(image.shape)} and text "
                         f"{tuple(text.shape)} features must both be (N, D)")
    logits = clip_logits(image, text, log_scale)
    n = logits.shape[0]
    if positives is None:
        target = torch.arange(n, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    if positives.shape != (n, n):
        raise ValueError(f"clip_loss: positives must be ({n}, {n}), got "
                         f"{tuple(positives.shape)}")
    mask = positives.to(torch.bool) | torch.eye(n, dtype=torch.bool, device=logits.device)
    target = mask.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    rows = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    cols = -(target.T * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (rows + cols)


@torch.no_grad()
def clamp_log_scale_(log_scale: Tensor) -> Tensor:
    """Pull the parameter τ back into ``[0, ln 100]`` in place (open_clip's step)."""
    return log_scale.clamp_(0.0, MAX_LOG_SCALE)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of this rank's
    slice (all-reduce of the whole gradient, then the slice): synchronous collectives
    only, which gloo and NCCL both have."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor, world: Any = None) -> Tensor:
    """``x`` of every rank concatenated in rank order along dim 0, differentiable: the
    gradient that reaches rank ``r``'s ``x`` is the sum over ranks of the gradients of
    its slice (what ``torch.distributed.nn.functional.all_gather`` does, written with
    plain ``all_gather`` / ``all_reduce``). Without a process group (or with one rank)
    ``x`` itself. Every rank must pass the same shape. An integer tensor (caption token
    ids) is gathered without a gradient."""
    import torch.distributed as dist

    enabled = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if world is not None:
        enabled = enabled and bool(getattr(world, "enabled", True))
    if not enabled:
        return x
    if not x.is_floating_point():
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _GatherWithGrad.apply(x)
