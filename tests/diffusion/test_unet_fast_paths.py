"""The UNet's inference-only fast paths against float64 references and against the
paths they replace: GroupNorm from channel sums (with the ResBlock's folded time shift)
and attention as two batched GEMMs at short lengths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gaf.plugins.diffusion.unet.attention as attention_mod
from gaf.plugins.diffusion.unet import ResBlock, UNet, UNetConfig
from gaf.plugins.diffusion.unet.attention import attend
from gaf.plugins.diffusion.unet.group_norm import (SUMS_MAX_BYTES, GroupNorm32,
                                                   group_norm_from_sums)
from redraw import randomize  # tests/ is on sys.path (conftest)

CL = torch.channels_last


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_group_norm(x, groups, weight, bias, eps, shift=None):
    """GroupNorm of x + shift written out in float64 (two-pass variance)."""
    x = x.double()
    if shift is not None:
        x = x + shift.double()[:, :, None, None]
    b, c, h, w = x.shape
    g = x.reshape(b, groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(b, c, h, w)
    return y * weight.double()[:, None, None] + bias.double()[:, None, None]


# ------------------------------------------------------------------------- GroupNorm

@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), groups=st.integers(1, 4), per_group=st.integers(1, 7),
       h=st.integers(1, 9), w=st.integers(1, 9), with_shift=st.booleans(),
       offset=st.floats(-5, 5), scale=st.floats(0.01, 10), seed=st.integers(0, 2 ** 16))
def test_group_norm_from_sums_equals_float64_reference(batch, groups, per_group, h, w,
                                                       with_shift, offset, scale, seed):
    assume(per_group * h * w >= 4)  # smaller groups: the constant-group test below
    gen = torch.Generator().manual_seed(seed)
    c = groups * per_group
    x = (torch.randn(batch, c, h, w, generator=gen) * scale + offset * scale)
    x = x.contiguous(memory_format=CL)
    weight, bias = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    shift = torch.randn(batch, c, generator=gen) * scale if with_shift else None
    out = group_norm_from_sums(x, groups, weight, bias, 1e-5, shift)
    assert out.shape == x.shape and out.is_contiguous(memory_format=CL)
    ref = reference_group_norm(x, groups, weight, bias, 1e-5, shift)
    torch.testing.assert_close(out.double(), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("value", [3.0, 0.1, -7.3])
def test_group_norm_from_sums_of_a_constant_group_is_its_bias(value):
    """A constant group has variance 0, which E[x^2] - mean^2 can round below zero: it
    is clamped, so the output is the bias (to the rounding of x * scale + offset with a
    scale of about 1/sqrt(eps)), not NaN."""
    x = torch.full((2, 4, 7, 5), value).contiguous(memory_format=CL)
    weight, bias = torch.randn(4), torch.randn(4)
    out = group_norm_from_sums(x, 2, weight, bias, 1e-5)
    torch.testing.assert_close(out, bias[None, :, None, None].expand_as(out), atol=2e-3, rtol=0)


def test_group_norm32_takes_the_sums_path_only_where_it_is_faster():
    norm = randomize(GroupNorm32(16, 32), std=1.0)
    fast = torch.randn(2, 32, 8, 8).contiguous(memory_format=CL)
    with torch.inference_mode():
        assert norm.uses_sums(fast)
        assert not norm.uses_sums(fast.contiguous())                      # NCHW
        assert not norm.uses_sums(torch.randn(2, 32, 4, 4).contiguous(memory_format=CL))
        assert not norm.uses_sums(torch.randn(2, 32, 32, 32).contiguous(memory_format=CL))
        assert not norm.uses_sums(fast.double())
        wide = GroupNorm32(4, 32)                                         # 8 per group
        assert not wide.uses_sums(fast)
        big = torch.empty(SUMS_MAX_BYTES // (4 * 32 * 64) + 1, 32, 8, 8).contiguous(
            memory_format=CL)
        assert not norm.uses_sums(big)
    assert not norm.uses_sums(fast)  # grad mode, trainable weights: PyTorch's kernel
    with torch.no_grad():
        assert norm.uses_sums(fast)


@pytest.mark.parametrize("with_shift", [False, True])
def test_group_norm32_paths_agree(with_shift, monkeypatch):
    torch.manual_seed(0)
    norm = randomize(GroupNorm32(16, 48), std=1.0)
    x = (torch.randn(3, 48, 12, 10) * 2 + 1).contiguous(memory_format=CL)
    shift = torch.randn(3, 48) if with_shift else None
    with torch.inference_mode():
        assert norm.uses_sums(x)
        fast = norm.from_sums(x, shift) if with_shift else norm(x)
        monkeypatch.setattr(GroupNorm32, "uses_sums", lambda self, x: False)
        slow = norm(x + shift[:, :, None, None] if with_shift else x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    ref = reference_group_norm(x, 16, norm.weight, norm.bias, norm.eps, shift)
    torch.testing.assert_close(fast.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_resblock_time_shift_through_the_norm_equals_adding_it(per_image, monkeypatch):
    """One time embedding per image: the sums path normalises conv1(h) + shift without
    adding it; the result is the block's formula either way."""
    torch.manual_seed(0)
    block = randomize(ResBlock(32, 48, 24, groups=16), std=0.2)
    block = block.to(memory_format=CL)
    x = torch.randn(3, 32, 8, 8).contiguous(memory_format=CL)
    emb = torch.randn(3 if per_image else 1, 24)
    with torch.inference_mode():
        fast = block(x, emb)
        monkeypatch.setattr(GroupNorm32, "uses_sums", lambda self, x: False)
        slow = block(x, emb)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the formula, written out in float64
        xd, e = x.double(), emb.double()
        h = F.silu(reference_group_norm(xd, 16, block.norm1.weight, block.norm1.bias, 1e-5))
        h = F.conv2d(h, block.conv1.weight.double(), block.conv1.bias.double(), padding=1)
        h = h + (e @ block.time_proj.weight.double().T + block.time_proj.bias.double())[
            :, :, None, None]
        h = F.silu(reference_group_norm(h, 16, block.norm2.weight, block.norm2.bias, 1e-5))
        h = F.conv2d(h, block.conv2.weight.double(), block.conv2.bias.double(), padding=1)
        ref = h + F.conv2d(xd, block.skip.weight.double(), block.skip.bias.double())
    torch.testing.assert_close(fast.double(), ref, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------- attention

def reference_attend(q, k, v):
    """softmax(q k^T / sqrt(hd)) v in float64, heads side by side: (B, N, heads * hd)."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    o = torch.softmax(scores, -1) @ v
    return o.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 3), n=st.integers(1, 20),
       length=st.integers(1, 20), hd=st.integers(1, 9), gemms=st.booleans(),
       strided=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_attend_equals_float64_reference(batch, heads, n, length, hd, gemms, strided, seed):
    gen = torch.Generator().manual_seed(seed)
    if strided:  # the head views of a projection, as the Attention module passes them
        q = torch.randn(batch, n, heads, hd, generator=gen).permute(0, 2, 1, 3)
        k, v = torch.randn(2, batch, length, heads, hd, generator=gen).permute(0, 1, 3, 2, 4)
    else:
        q = torch.randn(batch, heads, n, hd, generator=gen)
        k, v = torch.randn(2, batch, heads, length, hd, generator=gen)
    limit = attention_mod.KEYS_MAX
    try:
        attention_mod.KEYS_MAX = limit if gemms else 0
        with torch.inference_mode():
            out = attend(q * 2, k, v)
    finally:
        attention_mod.KEYS_MAX = limit
    assert out.shape == (batch, n, heads * hd)
    torch.testing.assert_close(out.double(), reference_attend(q * 2, k, v), atol=2e-6, rtol=1e-5)


def test_attend_uses_the_fused_kernel_for_long_keys_only(monkeypatch):
    calls, short = [], []
    fused, apply = F.scaled_dot_product_attention, attention_mod._ShortAttention.apply
    monkeypatch.setattr(attention_mod.F, "scaled_dot_product_attention",
                        lambda *a: calls.append(a[0].shape) or fused(*a))
    monkeypatch.setattr(attention_mod._ShortAttention, "apply",
                        lambda *a: short.append(a[0].shape) or apply(*a))
    q = torch.randn(2, 2, 6, 4, requires_grad=True)
    k, v = torch.randn(2, 2, 2, 5, 4)
    attend(q, k, v).sum().backward()                         # autograd, short: materialised
    assert (len(calls), len(short)) == (0, 1) and q.grad is not None
    keys = torch.randn(2, 2, attention_mod.KEYS_MAX + 1, 4)
    attend(q, keys, keys).sum().backward()                   # autograd, long: fused
    assert (len(calls), len(short)) == (1, 1)
    with torch.inference_mode():
        attend(q.detach(), k, v)                             # short: GEMMs per head
        assert (len(calls), len(short)) == (1, 1)
        attend(q.detach(), keys, keys)                       # too many keys
        assert len(calls) == 2
        rows = attention_mod.SCORES_MAX_BYTES // (4 * 2 * 8) + 1  # batch 2, 8 keys
        keys = torch.randn(2, 2, 8, 4)
        attend(torch.randn(2, 2, rows, 4), keys, keys)      # one head's scores too big
        assert len(calls) == 3


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 3), n=st.integers(1, 12),
       length=st.integers(1, 12), hd=st.integers(1, 9), strided=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_short_attention_gradients_equal_float64_reference(batch, heads, n, length, hd,
                                                           strided, seed):
    """Under autograd at short keys: the output and the gradients of q, k and v (each a
    strided head view of a projection, as the Attention module passes them) against
    autograd through the float64 formula."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        qp = torch.randn(batch, n, heads * hd, generator=gen, requires_grad=True)
        kvp = torch.randn(batch, length, 2 * heads * hd, generator=gen, requires_grad=True)
        (q,) = attention_mod._split_heads(qp, 1, heads)
        k, v = attention_mod._split_heads(kvp, 2, heads)
        leaves = (qp, kvp)
    else:
        q = torch.randn(batch, heads, n, hd, generator=gen, requires_grad=True)
        k = torch.randn(batch, heads, length, hd, generator=gen, requires_grad=True)
        v = torch.randn(batch, heads, length, hd, generator=gen, requires_grad=True)
        leaves = (q, k, v)
    w = torch.randn(batch, n, heads * hd, generator=gen)
    out = attend(q * 2, k, v)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    d_leaves = [t.detach().double().requires_grad_() for t in leaves]
    if strided:
        (dq,) = attention_mod._head_views(d_leaves[0], 1, heads)
        dk, dv = attention_mod._head_views(d_leaves[1], 2, heads)
    else:
        dq, dk, dv = d_leaves
    ref = reference_attend(dq * 2, dk, dv)
    ref_grads = torch.autograd.grad((ref * w.double()).sum(), d_leaves)
    torch.testing.assert_close(out.double(), ref.detach(), atol=2e-6, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, atol=2e-5, rtol=1e-4)


def test_short_attention_passes_gradcheck():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, m, 4, generator=gen, dtype=torch.float64,
                           requires_grad=True) for m in (5, 7, 7))
    assert torch.autograd.gradcheck(attention_mod._ShortAttention.apply, (q, k, v))


# ---------------------------------------------------------------------- the whole UNet

@pytest.mark.parametrize("one_t", [False, True])
def test_unet_fast_paths_change_nothing_but_rounding(one_t, monkeypatch):
    """Imagen's base layout (pooled text: one time embedding per image), every weight
    re-drawn: the output with the fast paths equals the output without them."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=3, channels=(16, 32, 48), level_layers=(1, 2, 1),
                            attention_levels=(1, 2), heads=2, norm_groups=8, context_dim=8,
                            pooled_context=True, skip_scale=2 ** -0.5)).eval()
    randomize(model, std=0.15)
    x, ctx = torch.randn(3, 3, 16, 16), torch.randn(3, 5, 8)
    t = torch.tensor(300) if one_t else torch.tensor([10, 300, 900])
    taken = []
    sums = GroupNorm32.uses_sums
    monkeypatch.setattr(GroupNorm32, "uses_sums",
                        lambda self, x: taken.append(sums(self, x)) or taken[-1])
    with torch.inference_mode():
        fast = model(x, t, ctx)
        monkeypatch.setattr(GroupNorm32, "uses_sums", lambda self, x: False)
        monkeypatch.setattr(attention_mod, "KEYS_MAX", 0)
        slow = model(x, t, ctx)
    assert any(taken) and not all(taken)  # the 16x16 and 8x8 maps, not the 4x4 ones
    assert fast.abs().max() > 0.1
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
