"""The UNet's spatial transformer: attention, the GEGLU MLP, transformer blocks, caching.

Shapes: image tokens ``x`` are ``(B, N, d)`` (``N = H*W``), the conditioner's context
``(B, L, context_dim)``; ``inner = heads * head_dim``.

:class:`Attention` (multi-head, no bias on q/k/v, bias on the output projection)::

    q = x Wq, k = c Wk, v = c Wv        c = x (self-attention) or the context (cross)
    per head h: o_h = softmax(q_h k_h^T / sqrt(head_dim)) v_h
    out = concat_h(o_h) Wo + bo

computed by :func:`attend`: ``torch.nn.functional.scaled_dot_product_attention`` (its
CPU flash kernel) for long keys; at short key lengths (the UNets' text contexts and small
maps) the scores are materialised instead: without autograd as two GEMMs per head around
a softmax, under autograd by :class:`_ShortAttention`, batched GEMMs whose backward reuses
the saved probabilities (docs/benchmarks.md § Attention at short lengths).

Self-attention keeps q, k, v in one ``(d, 3*inner)`` projection ``to_qkv`` (one matmul
instead of three); cross-attention has ``to_q`` and one ``(context_dim, 2*inner)``
projection ``to_kv``.
The parameter count equals separate q/k/v layers. The heads are strided views of the
projection (no copy); under autograd :class:`_SplitHeads` gathers their gradients into one
buffer in a single pass (autograd's stack-then-copy takes two).

:class:`GEGLU` (the transformer MLP, Shazeer 2020)::

    [a | g] = x W1 + b1                  one Linear(d, 2 * mult * d), split in halves
    out = (a * gelu(g)) W2 + b2          exact (erf) GELU; Linear(mult * d, d)

The MLP's ``(N, 2*mult*d)`` intermediate is the widest tensor of the UNet, so it has two
hand-made paths: for training, :class:`_GeGLUFunction` (two GEMMs into contiguous halves,
a backward that writes the first weight's gradient halves in place), and without
autograd, ``_geglu_inference`` (512 tokens at a time through one reused buffer, gated in
place). What each path is worth is in docs/benchmarks.md. With ``dropout > 0`` in
training mode or under autocast (``train.precision=bf16``: the hand-made paths write
into buffers of the weights' dtype) the plain formula runs.

:class:`TransformerBlock` (pre-norm, residual after each part)::

    x = x + SelfAttention(LayerNorm(x))
    x = x + CrossAttention(LayerNorm(x), context)       absent when context_dim == 0
    x = x + GEGLU(LayerNorm(x))

:class:`SpatialTransformer` (LDM), ``(B, C, H, W) -> (B, C, H, W)``::

    h = GroupNorm(x) (eps 1e-6) as tokens (B, H*W, C) -> Linear proj_in (C -> inner)
    h = depth x TransformerBlock(h, context)
    out = x + proj_out(h) as (B, C, H, W)               proj_out zero-initialised

``proj_in``/``proj_out`` are Linear layers on the tokens (the same parameters as LDM's
1x1 convs). When the feature map is channels-last in memory (the UNet keeps it so), the
``(B, C, H, W) <-> (B, H*W, C)`` views cost no copy.

:class:`ContextCache` holds every cross-attention layer's projected k and v for one
context: during sampling the context is the same at every step, so the projections run
once instead of once per step (for the benchmark's 16-token context they are a tiny part
of a step: the saving is below the measurement noise; it grows with the context length).

The custom autograd Functions support first-order gradients (no double backward).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import position_embedding_2d
from .resnet import GroupNorm32

__all__ = ["Attention", "GEGLU", "TransformerBlock", "SpatialTransformer", "ContextCache",
           "attend"]


def _split_heads(x: Tensor, parts: int, heads: int) -> tuple[Tensor, ...]:
    """``(B, L, parts*heads*hd)`` -> ``parts`` views ``(B, heads, L, hd)`` (no copy)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SplitHeads.apply(x, parts, heads)
    return _head_views(x, parts, heads)


def _head_views(x: Tensor, parts: int, heads: int) -> tuple[Tensor, ...]:
    b, n, width = x.shape
    return x.view(b, n, parts, heads, width // (parts * heads)).permute(2, 0, 3, 1, 4).unbind(0)


class _SplitHeads(torch.autograd.Function):
    """:func:`_head_views` whose backward writes the parts' gradients straight into one
    ``(B, L, parts*heads*hd)`` buffer (autograd would stack them, then copy the permute)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, parts: int, heads: int) -> tuple[Tensor, ...]:
        ctx.parts, ctx.heads = parts, heads
        return _head_views(x, parts, heads)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor, None, None]:
        g0 = next(g for g in grads if g is not None)
        b, _, n, e = g0.shape
        dx = g0.new_empty(b, n, ctx.parts * ctx.heads * e)
        for view, grad in zip(_head_views(dx, ctx.parts, ctx.heads), grads):
            if grad is None:
                view.zero_()
            else:
                view.copy_(grad)
        return dx, None, None


class Attention(nn.Module):
    """Multi-head attention, ``(B, N, dim) -> (B, N, dim)``; cross-attention when
    ``context_dim`` is given (k and v from the context), else self-attention."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.to_q = nn.Linear(dim, inner, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """The context's keys and values, each ``(B, heads, L, head_dim)``."""
        k, v = _split_heads(self.to_kv(context), 2, self.heads)
        return k, v

    def forward(self, x: Tensor, context: Tensor | ContextCache | None = None) -> Tensor:
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context (B, L, context_dim)")
            (q,) = _split_heads(self.to_q(x), 1, self.heads)
            k, v = (context.kv(self) if isinstance(context, ContextCache)
                    else self.project_context(context))
        else:
            q, k, v = _split_heads(self.to_qkv(x), 3, self.heads)
        return self.to_out(attend(q, k, v))


#: :func:`attend` computes attention head by head with two GEMMs when the keys are at
#: most this many ...
KEYS_MAX = 64
#: ... and one head's ``(B, N, L)`` float32 scores fit in this many bytes; above either,
#: the fused kernel is faster.
SCORES_MAX_BYTES = 4 << 20


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(head_dim)) v`` for ``(B, heads, N, hd)`` queries and
    ``(B, heads, L, hd)`` keys and values (strided head views of the projections are
    fine); returns the heads side by side, ``(B, N, heads * hd)``, the output
    projection's input.

    For long keys (more than :data:`KEYS_MAX`, or one head's scores above
    :data:`SCORES_MAX_BYTES`) this is ``scaled_dot_product_attention`` (its CPU flash
    kernel). Otherwise, the case of a small UNet (a 24-token text context, an 8x8 or 4x4
    map), the scores are materialised: under autograd by :class:`_ShortAttention`
    (batched GEMMs over all heads; its backward reuses the saved probabilities); without
    autograd, the sampling case, as two batched GEMMs per head around a softmax, each
    head read from its strided view (no copy of q, k or v into a head-major layout) and
    its result copied into its slot of the output (docs/benchmarks.md § Attention at
    short lengths).
    """
    b, heads, n, hd = q.shape
    length = k.shape[2]
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if (q.dtype != torch.float32 or length > KEYS_MAX
            or b * n * length * 4 > SCORES_MAX_BYTES):
        o = F.scaled_dot_product_attention(q, k, v)
        return o.transpose(1, 2).reshape(b, n, heads * hd)
    if grad:
        o = _ShortAttention.apply(q, k, v)
        return o.view(b, heads, n, hd).transpose(1, 2).reshape(b, n, heads * hd)
    out = q.new_empty(b, n, heads, hd)
    empty = q.new_empty(())
    for i in range(heads):
        scores = torch.baddbmm(empty, q[:, i], k[:, i].transpose(1, 2), beta=0,
                               alpha=hd ** -0.5)
        # (bmm's out= straight into the strided slot is far slower than this copy)
        out[:, :, i] = torch.bmm(scores.softmax(-1), v[:, i])
    return out.view(b, n, heads * hd)


class _ShortAttention(torch.autograd.Function):
    """``softmax(q k^T / sqrt(hd)) v`` for short keys, ``(B, heads, N, hd)`` ->
    ``(B * heads, N, hd)``, with the probabilities ``P`` materialised and saved::

        S = q k^T / sqrt(hd)      P = softmax(S)      o = P v
        dv = P^T do     dP = do v^T     dS = P * (dP - rowsum(dP * P))
        dq = dS k / sqrt(hd)          dk = dS^T q / sqrt(hd)

    Each product is one batched GEMM over all ``B * heads`` heads, so a step costs a few
    kernel launches where the fused kernel's backward, at these lengths, mostly works on
    padding (docs/benchmarks.md § Attention at short lengths). It keeps ``P``
    (``B * heads * N * L`` floats, bounded by :data:`SCORES_MAX_BYTES` per head) for the
    backward, where the fused kernel keeps one log-sum-exp per query. First-order
    gradients only."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, heads, n, hd = q.shape
        length = k.shape[2]
        q2 = q.reshape(b * heads, n, hd)
        k2, v2 = k.reshape(b * heads, length, hd), v.reshape(b * heads, length, hd)
        p = torch.baddbmm(q2.new_empty(()), q2, k2.transpose(1, 2), beta=0,
                          alpha=hd ** -0.5).softmax(-1)
        ctx.save_for_backward(q2, k2, v2, p)
        ctx.shapes = q.shape, k.shape
        return torch.bmm(p, v2)

    @staticmethod
    def backward(ctx: Any, do: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q2, k2, v2, p = ctx.saved_tensors
        q_shape, k_shape = ctx.shapes
        scale = q_shape[-1] ** -0.5
        do = do.contiguous()
        dv = torch.bmm(p.transpose(1, 2), do)
        ds = torch._softmax_backward_data(torch.bmm(do, v2.transpose(1, 2)), p, -1, p.dtype)
        dq = torch.baddbmm(q2.new_empty(()), ds, k2, beta=0, alpha=scale)
        dk = torch.baddbmm(q2.new_empty(()), ds.transpose(1, 2), q2, beta=0, alpha=scale)
        return dq.view(q_shape), dk.view(k_shape), dv.view(k_shape)


class GEGLU(nn.Module):
    """The gated-GELU MLP ``(B, N, dim) -> (B, N, dim)``: ``a * gelu(g)`` then project back."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * mult * dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if (self.dropout.p > 0 and self.training) or torch.is_autocast_enabled(x.device.type):
            a, g = self.proj(x).chunk(2, dim=-1)
            return self.out(self.dropout(a * F.gelu(g)))
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        args = (self.proj.weight, self.proj.bias, self.out.weight, self.out.bias)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in args)):
            out = _GeGLUFunction.apply(x2, *args)
        else:
            out = _geglu_inference(x2, *args)
        return out.view(*shape[:-1], -1)


GEGLU_ROWS = 512


def _geglu_inference(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """The GEGLU MLP on ``(N, d)`` tokens without autograd: ``GEGLU_ROWS`` tokens at a time
    through one reused ``(rows, 2*inner)`` buffer, gated in place, so that the wide
    intermediate stays in cache."""
    n, rows = x.shape[0], GEGLU_ROWS
    out = x.new_empty(n, w2.shape[0])
    buf = x.new_empty(min(rows, n), w1.shape[0])
    for r0 in range(0, n, rows):
        xc = x[r0:r0 + rows]
        h = buf[:xc.shape[0]]
        torch.addmm(b1, xc, w1.t(), out=h)
        a, g = h.chunk(2, dim=-1)
        a.mul_(torch.ops.aten.gelu_(g))
        torch.addmm(b2, a, w2.t(), out=out[r0:r0 + xc.shape[0]])
    return out


class _GeGLUFunction(torch.autograd.Function):
    """The GEGLU MLP ``(N, d) -> (N, d)`` with a hand-written backward.

    The value and gate halves are computed by two GEMMs into separate contiguous buffers
    (no strided half-views), and the backward writes the two halves of the first weight's
    gradient in place, without autograd's concatenation of the halves' gradients.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        inner = w2.shape[1]
        a = torch.addmm(b1[:inner], x, w1[:inner].t())
        g = torch.addmm(b1[inner:], x, w1[inner:].t())
        gelu_g = F.gelu(g)
        z = a * gelu_g
        ctx.save_for_backward(x, w1, w2, a, g, gelu_g, z)
        return torch.addmm(b2, z, w2.t())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w1, w2, a, g, gelu_g, z = ctx.saved_tensors
        inner = w2.shape[1]
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        dw2 = grad.t().mm(z) if need_w2 else None
        db2 = grad.sum(0) if need_b2 else None
        dz = grad.mm(w2)
        da = dz * gelu_g
        dg = torch.ops.aten.gelu_backward(dz.mul_(a), g)
        dw1 = db1 = dx = None
        if need_w1:
            dw1 = torch.empty_like(w1)
            torch.mm(da.t(), x, out=dw1[:inner])
            torch.mm(dg.t(), x, out=dw1[inner:])
        if need_b1:
            db1 = torch.cat([da.sum(0), dg.sum(0)])
        if need_x:
            dx = torch.addmm(da.mm(w1[:inner]), dg, w1[inner:])
        return dx, dw1, db1, dw2, db2


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention (if ``context_dim``) and GEGLU, each residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        if context_dim:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, head_dim, context_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, dropout=dropout)

    def forward(self, x: Tensor, context: Tensor | ContextCache | None = None) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """``(B, C, H, W), context -> (B, C, H, W)``: GroupNorm, proj_in, ``depth`` transformer
    blocks over the ``H*W`` tokens, zero-initialised proj_out, residual."""

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int = 1,
                 context_dim: int = 0, groups: int = 32, dropout: float = 0.0,
                 position: str = "none"):
        super().__init__()
        inner = heads * head_dim
        if position not in ("none", "sincos"):
            raise ValueError(f"position must be 'none' or 'sincos', got {position!r}")
        if position == "sincos" and inner % 4:
            raise ValueError(f"a sincos position embedding needs heads * head_dim divisible "
                             f"by 4, got {inner}")
        #: "sincos": a fixed 2-D sinusoidal embedding of each token's (row, column) is
        #: added after proj_in, so attention (and the cross-attention queries) know where
        #: a token is; "none" (the LDM's block): position only through the convolutions
        self.position = position
        self._position_cache: dict[tuple[int, int, Any, Any], Tensor] = {}
        self.norm = GroupNorm32(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.blocks = nn.ModuleList(TransformerBlock(inner, heads, head_dim, context_dim, dropout)
                                    for _ in range(depth))
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor | ContextCache | None = None) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        tokens = self.proj_in(tokens)
        if self.position == "sincos":
            tokens = tokens + self._positions(h, w, tokens)
        for block in self.blocks:
            tokens = block(tokens, context)
        out = self.proj_out(tokens).view(b, h, w, c).permute(0, 3, 1, 2)
        return out + x

    def _positions(self, h: int, w: int, like: Tensor) -> Tensor:
        key = (h, w, like.device, like.dtype)
        if key not in self._position_cache:
            self._position_cache[key] = position_embedding_2d(h, w, like.shape[-1]).to(
                device=like.device, dtype=like.dtype)
        return self._position_cache[key]

    def cross_attentions(self) -> list[Attention]:
        return [blk.attn2 for blk in self.blocks if blk.attn2 is not None]


class ContextCache:
    """One context's projected keys and values for every cross-attention layer of a model.

    Made by ``UNet.cache_context(context)`` and passed as ``context=`` in its place. It is
    tied to the weights it was computed with: using it after those weights changed (an
    optimiser step, ``load_state_dict``) raises ``RuntimeError`` instead of silently
    giving stale keys. (Weights made inside ``torch.inference_mode`` have no version
    counter and cannot change in place outside it: they are not checked.)
    """

    #: The ``cond_vector`` whose extra context tokens the cache holds (set by
    #: ``UNet.cache_context`` when the model has ``extra_context_tokens``), else None.
    cond_vector: Tensor | None = None
    #: The context's mean over its tokens, ``(B, context_dim)`` (set by
    #: ``UNet.cache_context`` when the model has ``pooled_context``), else None.
    pooled: Tensor | None = None

    def __init__(self, context: Tensor, layers: Iterable[Attention], owner: object):
        self.shape = tuple(context.shape)
        self.owner_id = id(owner)
        self._kv = {}
        self._versions = {}
        for layer in layers:
            self._kv[layer] = layer.project_context(context)
            self._versions[layer] = _version(layer.to_kv.weight)

    @property
    def batch_size(self) -> int:
        return self.shape[0]

    def kv(self, layer: Attention) -> tuple[Tensor, Tensor]:
        entry = self._kv.get(layer)
        if entry is None:
            raise ValueError("this context cache was made by another model's cache_context")
        if _version(layer.to_kv.weight) != self._versions[layer]:
            raise RuntimeError("the weights changed since cache_context was called: the cached "
                               "keys and values are stale; call cache_context again")
        return entry


def _version(weight: Tensor) -> int | None:
    """The weight's in-place version counter (None for an inference tensor, which has
    none)."""
    return None if weight.is_inference() else weight._version
