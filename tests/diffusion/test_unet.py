"""The ``unet`` noise model: block shapes, float64 references for attention, GEGLU and the
time embedding, conditioning (context, cache, labels, timesteps), zero init, a small
overfit, determinism, config round trips and the error messages."""

from __future__ import annotations

import json
import math
import re
import typing

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

import gaf.plugins.diffusion.unet.attention as attention_mod
import gaf.plugins.diffusion.unet.model as unet_model
from gaf.cli import main
from gaf.config import OptionError, dumps_toml, from_dict, loads_toml, to_dict
from gaf.errors import BadConfig
from gaf.interfaces import NoiseModel
from gaf.plugins.diffusion import schedule_math
from gaf.plugins.diffusion.schedulers import DDIMScheduler, SchedulerConfig
from gaf.plugins.diffusion.unet import (GEGLU, Attention, ContextCache, Downsample, ResBlock,
                                        SpatialTransformer, TimeEmbedding, TransformerBlock, UNet,
                                        UNetConfig, Upsample, timestep_embedding)
from gaf.plugins.diffusion.unet.resnet import GroupNorm32
from redraw import randomize  # tests/ is on sys.path (conftest)

TINY = dict(in_channels=4, channels=(8, 16), norm_groups=4, heads=2, context_dim=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is faster, and immune to the 100x slowdown that
    two OpenMP threads suffer when another process holds one of two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides) -> UNet:
    return UNet(UNetConfig(**{**TINY, **overrides}))


# ------------------------------------------------------------------------------ shapes

@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), c_in=st.sampled_from([4, 8, 12]), c_out=st.sampled_from([4, 8]),
       side=st.integers(1, 4), shared_t=st.booleans())
def test_resblock_and_resamplers_shapes(batch, c_in, c_out, side, shared_t):
    size = 2 * side
    x = torch.randn(batch, c_in, size, size)
    emb = torch.randn(1 if shared_t else batch, 16)
    block = ResBlock(c_in, c_out, 16, groups=4)
    assert block(x, emb).shape == (batch, c_out, size, size)
    assert Downsample(c_in)(x).shape == (batch, c_in, side, side)
    assert Upsample(c_in)(x).shape == (batch, c_in, 2 * size, 2 * size)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), tokens=st.integers(1, 20), heads=st.integers(1, 3),
       head_dim=st.integers(1, 6), ctx_len=st.integers(1, 5), ctx_dim=st.integers(1, 7),
       grad=st.booleans())
def test_attention_and_mlp_shapes(batch, tokens, heads, head_dim, ctx_len, ctx_dim, grad):
    dim = 6
    x = torch.randn(batch, tokens, dim, requires_grad=grad)
    ctx = torch.randn(batch, ctx_len, ctx_dim)
    with torch.set_grad_enabled(grad):
        assert Attention(dim, heads, head_dim)(x).shape == x.shape
        assert Attention(dim, heads, head_dim, ctx_dim)(x, ctx).shape == x.shape
        assert GEGLU(dim)(x).shape == x.shape
        assert TransformerBlock(dim, heads, head_dim, ctx_dim)(x, ctx).shape == x.shape
        assert TransformerBlock(dim, heads, head_dim, 0)(x).shape == x.shape


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 2), side=st.integers(1, 4), heads=st.integers(1, 3),
       head_dim=st.integers(0, 5), depth=st.integers(1, 2), ctx_len=st.integers(1, 4),
       with_context=st.booleans())
def test_spatial_transformer_shape(batch, side, heads, head_dim, depth, ctx_len, with_context):
    channels = 4 * heads
    block = SpatialTransformer(channels, heads, head_dim or channels // heads, depth,
                               context_dim=5 if with_context else 0, groups=4)
    x = torch.randn(batch, channels, side, side + 1)
    ctx = torch.randn(batch, ctx_len, 5) if with_context else None
    assert block(x, ctx).shape == x.shape


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 2), widths=st.lists(st.sampled_from([4, 8, 12]), min_size=1,
                                                 max_size=3),
       layers=st.integers(1, 2), k=st.integers(1, 2), data=st.data())
def test_unet_output_shape(batch, widths, layers, k, data):
    levels = len(widths)
    attention = data.draw(st.sets(st.integers(0, levels - 1)), label="attention_levels")
    context_dim = data.draw(st.sampled_from([0, 6]), label="context_dim")
    num_classes = data.draw(st.integers(0, 3), label="num_classes")
    out_channels = data.draw(st.integers(0, 3), label="out_channels")
    cfg = UNetConfig(in_channels=3, out_channels=out_channels, channels=tuple(widths),
                     layers_per_level=layers, attention_levels=tuple(sorted(attention)),
                     mid_attention=data.draw(st.booleans(), label="mid_attention"), heads=2,
                     head_dim=data.draw(st.integers(0, 3), label="head_dim"),
                     transformer_depth=data.draw(st.integers(1, 2), label="depth"),
                     context_dim=context_dim, num_classes=num_classes, norm_groups=4)
    model = UNet(cfg)
    side = k * 2 ** (levels - 1)
    x = torch.randn(batch, 3, side, 2 * side)
    ctx = torch.randn(batch, 3, context_dim) if context_dim else None
    labels = torch.randint(0, num_classes + 1, (batch,)) if num_classes else None
    out = model(x, torch.randint(0, 1000, (batch,)), ctx, labels=labels)
    assert out.shape == (batch, out_channels or 3, side, 2 * side)
    assert out.is_contiguous()


# ------------------------------------------------------------------- float64 references

def reference_attention(x, ctx, attn: Attention):
    """softmax(q k^T / sqrt(d)) v per head, written out in float64."""
    x, ctx = x.double(), ctx.double()
    h, e = attn.heads, attn.head_dim
    if attn.is_cross:
        wq = attn.to_q.weight.double()
        wk, wv = attn.to_kv.weight.double().chunk(2, dim=0)
    else:
        wq, wk, wv = attn.to_qkv.weight.double().chunk(3, dim=0)
    q, k, v = x @ wq.T, ctx @ wk.T, ctx @ wv.T
    outs = []
    for head in range(h):
        sl = slice(head * e, (head + 1) * e)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(e)
        outs.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    return torch.cat(outs, dim=-1) @ attn.to_out.weight.double().T + attn.to_out.bias.double()


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_attention_equals_float64_reference(cross, grad):
    torch.manual_seed(1)
    attn = randomize(Attention(12, 3, 5, 7 if cross else None), std=0.3)
    x = torch.randn(2, 9, 12, requires_grad=grad)
    ctx = torch.randn(2, 4, 7) if cross else x
    with torch.set_grad_enabled(grad):
        out = attn(x, ctx) if cross else attn(x)
    ref = reference_attention(x.detach(), ctx.detach(), attn)
    torch.testing.assert_close(out.detach().double(), ref, atol=2e-5, rtol=1e-4)


def reference_geglu(x, mlp: GEGLU):
    x = x.double()
    h = x @ mlp.proj.weight.double().T + mlp.proj.bias.double()
    a, g = h.chunk(2, dim=-1)
    gelu = 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))
    return (a * gelu) @ mlp.out.weight.double().T + mlp.out.bias.double()


@pytest.mark.parametrize("mode", ["autograd", "inference", "inference-chunked"])
def test_geglu_equals_its_formula(mode, monkeypatch):
    torch.manual_seed(2)
    mlp = randomize(GEGLU(6), std=0.4)
    x = torch.randn(3, 7, 6)
    if mode == "inference-chunked":
        monkeypatch.setattr(attention_mod, "GEGLU_ROWS", 4)  # 21 tokens: 6 chunks, one short
    if mode == "autograd":
        out = mlp(x)
        assert out.requires_grad
    else:
        with torch.inference_mode():
            out = mlp(x)
    torch.testing.assert_close(out.detach().double(), reference_geglu(x, mlp), atol=2e-5,
                               rtol=1e-4)


def grads_of(fn, tensors):
    out = fn()
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    return torch.autograd.grad((out * weight).sum(), tensors)


@pytest.mark.parametrize("kind", ["geglu", "self", "cross"])
def test_hand_written_backwards_equal_autograd_of_the_formula(kind):
    """The custom autograd Functions (GEGLU, head split) against autograd through the
    float64 reference formulas, for the input, the context and every weight."""
    torch.manual_seed(3)
    x = torch.randn(2, 5, 4, dtype=torch.double, requires_grad=True)
    ctx = torch.randn(2, 3, 5, dtype=torch.double, requires_grad=True)
    if kind == "geglu":
        module = randomize(GEGLU(4, mult=2), std=0.5).double()
        inputs, ref = (x,), lambda: reference_geglu(x, module)
    else:
        module = randomize(Attention(4, 2, 3, 5 if kind == "cross" else None), std=0.5).double()
        inputs = (x, ctx) if kind == "cross" else (x,)
        ref = lambda: reference_attention(x, ctx if kind == "cross" else x, module)  # noqa: E731
    tensors = [*inputs, *module.parameters()]
    got = grads_of(lambda: module(*inputs), tensors)
    want = grads_of(ref, tensors)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradcheck(module, inputs)


@pytest.mark.parametrize("grad", [True, False])
def test_the_unet_runs_under_bf16_autocast_near_its_float32_output(grad):
    """``train.precision=bf16`` wraps the loss in ``torch.autocast`` (on CPU too): the
    hand-made GEGLU and attention paths step aside for the plain formulas, the result is
    bf16-close to float32, and the gradients stay float32."""
    torch.manual_seed(4)
    unet = randomize(tiny(channels=(16, 32), context_dim=16), std=0.2)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 5, 16)
    with torch.no_grad():
        want = unet(x, t, ctx)
    mode = torch.enable_grad() if grad else torch.inference_mode()
    with mode, torch.autocast("cpu", dtype=torch.bfloat16):
        cond = ctx if grad else unet.cache_context(ctx)
        got = unet(x, t, cond)
        if grad:
            got.float().square().mean().backward()
    assert got.dtype in (torch.bfloat16, torch.float32)
    err = (got.float() - want).abs().max() / want.abs().max()
    assert err < 0.05, err
    if grad:
        grads = [p.grad for p in unet.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)


@pytest.mark.parametrize("dim", [8, 7])
def test_timestep_embedding_closed_form(dim):
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for row, tv in enumerate(t.tolist()):
        for i in range(half):
            freq = math.exp(-math.log(10000.0) * i / half)
            assert emb[row, i].item() == pytest.approx(math.cos(tv * freq), abs=2e-4)
            assert emb[row, half + i].item() == pytest.approx(math.sin(tv * freq), abs=2e-4)
        if dim % 2:
            assert emb[row, -1].item() == 0.0
    module = TimeEmbedding(dim, 12)
    assert module(t).shape == (4, 12)


@pytest.mark.parametrize("h, w, dim", [(3, 5, 8), (8, 8, 16)])
def test_position_embedding_2d_closed_form(h, w, dim):
    from gaf.plugins.diffusion.unet.embeddings import position_embedding_2d

    emb = position_embedding_2d(h, w, dim).double()
    quarter = dim // 4
    for row in range(h):
        for col in range(w):
            token = emb[row * w + col]
            for i in range(quarter):
                freq = math.exp(-math.log(10000.0) * i / quarter)
                want = [math.cos(row * freq), math.sin(row * freq), math.cos(col * freq),
                        math.sin(col * freq)]
                got = [token[i], token[quarter + i], token[2 * quarter + i],
                       token[3 * quarter + i]]
                assert [float(g) for g in got] == pytest.approx(want, abs=2e-4)
    assert len({tuple(r.tolist()) for r in emb}) == h * w  # every position distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        position_embedding_2d(2, 2, 6)


def test_sincos_positions_make_attention_position_aware_without_parameters():
    plain, placed = tiny(), tiny(position_embedding="sincos")
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in placed.parameters())
    placed.load_state_dict(randomize(plain).state_dict())
    x = torch.randn(1, 4, 8, 8)
    ctx = torch.randn(1, 5, 8)
    with torch.no_grad():
        assert not torch.allclose(plain(x, 10, ctx), placed(x, 10, ctx), atol=1e-4)
        # a constant input is shift-invariant for the attention without positions only
        block = placed.down[0].stages[0].attn
        const = torch.ones(1, 8, 4, 4)
        out = block(const, ctx).flatten(2)
        assert out.std(dim=2).max() > 1e-4
        block.position = "none"
        out = block(const, ctx).flatten(2)
        assert out.std(dim=2).max() < 1e-5


def test_groupnorm_runs_in_float32():
    norm = GroupNorm32(2, 4)
    x = torch.randn(2, 4, 3, 3) * 50
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x.bfloat16().float()), atol=0.05, rtol=0.02)


# ------------------------------------------------------------------------- conditioning

def test_cross_attention_reads_the_context():
    model = randomize(tiny()).eval()
    x = torch.randn(2, 4, 8, 8)
    c1, c2 = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        a, b, a2 = model(x, 10, c1), model(x, 10, c2), model(x, 10, c1)
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-3


def test_without_cross_attention_context_is_not_used():
    model = randomize(tiny(context_dim=0)).eval()
    assert not any("to_kv" in name for name, _ in model.named_parameters())
    assert any("attn1.to_qkv" in name for name, _ in model.named_parameters())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = model(x, 10)
    assert out.abs().max() > 0
    with pytest.raises(ValueError, match="no cross-attention"):
        model(x, 10, torch.randn(2, 5, 8))


def test_class_labels_change_the_output_and_none_is_the_null_label():
    model = randomize(tiny(num_classes=3)).eval()
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 5, 8)
    with torch.no_grad():
        a = model(x, 10, ctx, labels=torch.tensor([0, 1]))
        b = model(x, 10, ctx, labels=torch.tensor([2, 2]))
        null = model(x, 10, ctx, labels=torch.tensor([3, 3]))
        none = model(x, 10, ctx)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(none, null)
    assert model.label_embed.num_embeddings == 4


def test_cached_context_gives_the_same_output():
    model = randomize(tiny(transformer_depth=2, attention_levels=(0, 1))).eval()
    x, ctx = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 8)
    with torch.inference_mode():
        cache = model.cache_context(ctx)
        assert isinstance(cache, ContextCache)
        torch.testing.assert_close(model(x, 7, cache), model(x, 7, ctx), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        cache = model.cache_context(ctx)
        torch.testing.assert_close(model(x, 7, cache), model(x, 7, ctx), atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="batch 3 but x_t has batch 2"):
            model(x[:2], 7, cache)
        with pytest.raises(ValueError, match="another model"):
            tiny()(x, 7, cache)
        model.down[0].stages[0].attn.blocks[0].attn2.to_kv.weight.add_(1.0)  # weights moved
        with pytest.raises(RuntimeError, match="stale"):
            model(x, 7, cache)
    with torch.inference_mode():  # weights made in inference mode have no version counter
        built = randomize(tiny()).eval()
        torch.testing.assert_close(built(x, 7, built.cache_context(ctx)), built(x, 7, ctx),
                                   atol=1e-6, rtol=1e-5)


def test_one_timestep_equals_a_batch_of_that_timestep():
    model = randomize(tiny(num_classes=2)).eval()
    x, ctx = torch.randn(3, 4, 8, 8), torch.randn(3, 5, 8)
    with torch.no_grad():
        ref = model(x, torch.full((3,), 421), ctx)
        assert model.embed(421, 3).shape[0] == 1  # computed once for the batch
        for t in (421, 421.0, torch.tensor(421), torch.tensor([421])):
            torch.testing.assert_close(model(x, t, ctx), ref, atol=1e-6, rtol=1e-5)
        assert (model(x, 420, ctx) - ref).abs().max() > 1e-4
        per_row = model(x, torch.tensor([421, 5, 999]), ctx)
        torch.testing.assert_close(per_row[0], ref[0], atol=1e-6, rtol=1e-5)


def test_fresh_unet_outputs_exact_zeros():
    model = tiny(num_classes=2)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    out = model(x, torch.tensor([3, 900]), ctx, labels=torch.tensor([0, 1]))
    assert torch.count_nonzero(out) == 0
    randomize(model.conv_out)
    assert torch.count_nonzero(model(x, 3, ctx)) > 0


def test_inference_mode_and_grad_mode_agree():
    model = randomize(tiny())
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    out = model(x, torch.tensor([5, 600]), ctx)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.inference_mode():
        torch.testing.assert_close(model(x, torch.tensor([5, 600]), ctx), out.detach(),
                                   atol=1e-6, rtol=1e-5)


def test_is_a_noise_model():
    model = tiny(prediction_type="v_prediction")
    assert isinstance(model, NoiseModel)
    assert model.prediction_type == "v_prediction" and model.in_channels == 4


# ----------------------------------------------------------------------------- training

def test_overfits_one_latent():
    torch.manual_seed(0)
    model = tiny()
    sched = DDIMScheduler(SchedulerConfig(beta_schedule="linear", clip_sample=False))
    x0 = torch.randn(4, 4, 8, 8)
    noise, t, ctx = torch.randn_like(x0), torch.tensor([50, 300, 600, 900]), torch.randn(4, 5, 8)
    xt = sched.add_noise(x0, noise, t)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(xt, t, ctx), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_same_seed_same_model():
    torch.manual_seed(5)
    a = tiny()
    torch.manual_seed(5)
    b = tiny()
    torch.manual_seed(6)
    c = tiny()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    for m in (a, b):
        randomize(m.conv_out, seed=1)
        randomize(m.up, seed=2)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    assert torch.equal(a(x, 3, ctx), b(x, 3, ctx))


def test_config_round_trips():
    cfg = UNetConfig(channels=[16, 32, 32], attention_levels=[1, 2], norm_groups=8, heads=4,
                     head_dim=6, num_classes=10, prediction_type="sample")
    assert cfg.channels == (16, 32, 32) and cfg.attention_levels == (1, 2)
    data = to_dict(cfg)
    assert data["channels"] == [16, 32, 32]
    assert from_dict(UNetConfig, data) == cfg
    assert from_dict(UNetConfig, json.loads(json.dumps(data))) == cfg
    assert from_dict(UNetConfig, loads_toml(dumps_toml(data))) == cfg
    model = UNet(from_dict(UNetConfig, data))
    assert model.config == cfg and len(model.down) == 3


# ------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("options, message", [
    ({"channels": (8, 10)}, "norm_groups must divide every level width (channels has 10), got 4"),
    ({"channels": ()}, "channels must list at least one level width, got []"),
    ({"channels": (8, 0)}, "channels must be >= 1 (each entry), got [8, 0]"),
    ({"heads": 3}, "heads must divide the width 8 of every level with attention when "
                   "head_dim = 0 (or set head_dim), got 3"),
    ({"attention_levels": (2,)}, "attention_levels entries must be level indices in [0, 2) "
                                 "for 2 channel levels, got [2]"),
    ({"attention_levels": (-1,)}, "attention_levels must be >= 0 (each entry), got [-1]"),
    ({"attention_levels": (0, 0)}, "attention_levels must not repeat a level, got [0, 0]"),
    ({"prediction_type": "noise"},
     "prediction_type must be one of: epsilon, v_prediction, sample, got 'noise'"),
    ({"layers_per_level": 0}, "layers_per_level must be >= 1, got 0"),
    ({"context_dim": -1}, "context_dim must be >= 0, got -1"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1"),
    ({"dropout": math.nan}, "dropout must be in [0, 1), got nan"),
    ({"position_embedding": "learned"}, "position_embedding must be one of: none, sincos, "
                                        "got 'learned'"),
    ({"position_embedding": "sincos", "heads": 1, "head_dim": 6},
     "heads x head_dim must be divisible by 4 for position_embedding='sincos', got 6"),
])
def test_bad_configs(options, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
        UNetConfig(**{**TINY, **options})


def test_bad_options_through_the_cli_exit_2():
    result = CliRunner().invoke(main, ["run", "--objective", "ldm", "--set",
                                       "noise-model.dropout=inf"])
    assert result.exit_code == 2, result.output
    assert "noise-model unet: dropout must be in [0, 1), got inf" in result.output
    assert "Traceback" not in result.output


def test_types_are_checked_where_data_becomes_a_config():
    with pytest.raises(BadConfig, match="mid_attention: expected true or false, got 'yes'"):
        from_dict(UNetConfig, {**TINY, "mid_attention": "yes"})
    with pytest.raises(BadConfig, match="channels: expected an integer, got 'a'"):
        from_dict(UNetConfig, {**TINY, "channels": [8, "a"]})


def test_prediction_types_are_the_schedulers():
    assert typing.get_args(typing.get_type_hints(UNetConfig)["prediction_type"]) \
        == schedule_math.PREDICTION_TYPES
    assert unet_model.PREDICTION_TYPES is schedule_math.PREDICTION_TYPES


def test_bad_config_from_data_names_the_field():
    with pytest.raises(BadConfig, match="attention_head_dim"):
        from_dict(UNetConfig, {"attention_head_dim": 8})
    assert UNetConfig(**{**TINY, "heads": 3, "head_dim": 4}).head_width(8) == 4  # explicit


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.randn(2, 3, 8, 8), 1, torch.randn(2, 5, 8)),
     r"x_t must be \(B, in_channels=4, H, W\), got \(2, 3, 8, 8\)"),
    (lambda m: m(torch.randn(2, 4, 8, 6 + 1), 1, torch.randn(2, 5, 8)),
     r"must be divisible by 2 \*\* \(levels - 1\) = 2"),
    (lambda m: m(torch.randn(2, 4, 8, 8), 1),
     r"has cross-attention: pass context \(B, L, context_dim=8\)"),
    (lambda m: m(torch.randn(2, 4, 8, 8), 1, torch.randn(2, 5, 6)),
     r"context must be \(B, L, context_dim=8\) token states, got \(2, 5, 6\)"),
    (lambda m: m(torch.randn(2, 4, 8, 8), 1, torch.randn(3, 5, 8)),
     "context has batch 3 but x_t has batch 2"),
    (lambda m: m(torch.randn(2, 4, 8, 8), torch.ones(3), torch.randn(2, 5, 8)),
     r"t must be a number, a 0-d tensor or a \(B,\) tensor with B = 2"),
    (lambda m: m(torch.randn(2, 4, 8, 8), "ten", torch.randn(2, 5, 8)),
     "t must be a number or a tensor"),
    (lambda m: m(torch.randn(2, 4, 8, 8), 1, torch.randn(2, 5, 8), labels=torch.tensor([0, 1])),
     "no class embedding"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny())


def test_bad_labels():
    model = tiny(num_classes=3)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        model(x, 1, ctx, labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"labels must be a \(B,\) integer tensor"):
        model(x, 1, ctx, labels=torch.tensor([0.0, 1.0]))


# ------------------------------------------- conditioning for the systems after the LDM
# (cond_vector added to the time embedding, extra context tokens, concat channels)

def by_definition(model: UNet, x, t, context=None, *, cond_vector=None, concat=None):
    """The UNet of the module doc with the three options' conditioning written from their
    formulas (the blocks are the model's own):

        emb      = SiLU(TimeEmbedding(t) + W2 SiLU(W1 v + b1) + b2)
        context' = concat_L(context, reshape(Wc v + bc, (B, n, context_dim)))
        h        = conv_in([x_t | concat])
    """
    cfg = model.config
    emb = model.time_embed(torch.as_tensor(t, dtype=torch.float32).reshape(-1))
    if cfg.cond_dim:
        l1, l2 = model.cond_embed[0], model.cond_embed[2]
        emb = emb + F.linear(F.silu(F.linear(cond_vector, l1.weight, l1.bias)), l2.weight,
                             l2.bias)
    emb = F.silu(emb)
    if cfg.extra_context_tokens:
        proj = model.context_proj
        extra = F.linear(cond_vector, proj.weight, proj.bias)
        context = torch.cat([context, extra.view(len(x), cfg.extra_context_tokens,
                                                 cfg.context_dim)], dim=1)
    if cfg.concat_channels:
        x = torch.cat([x, concat], dim=1)
    h = F.conv2d(x, model.conv_in.weight, model.conv_in.bias, padding=1)
    skips = [h]
    for level in model.down:
        for stage in level.stages:
            h = stage(h, emb, context)
            skips.append(h)
        if level.resample is not None:
            h = level.resample(h)
            skips.append(h)
    for stage in model.mid:
        h = stage(h, emb, context)
    for level in model.up:
        for stage in level.stages:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context)
        if level.resample is not None:
            h = level.resample(h)
    return model.conv_out(F.silu(model.norm_out(h)))


COND = dict(cond_dim=5, extra_context_tokens=2, concat_channels=3)


def test_the_new_options_default_to_off_and_add_nothing():
    """Defaults keep today's UNet: no new module, parameter or input channel, and the
    forward is the layout's formula. Each option adds exactly its own parameters."""
    assert all(getattr(UNetConfig(), name) == 0 for name in COND)
    plain = tiny()
    assert plain.cond_embed is None and plain.context_proj is None
    assert not any(k.startswith(("cond_embed", "context_proj")) for k in plain.state_dict())
    assert plain.conv_in.weight.shape == (8, 4, 3, 3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    D, c0, ctx_dim = 4 * 8, 8, 8  # time embedding width, channels[0], context_dim
    assert count(tiny(cond_dim=5)) - count(plain) == (5 * D + D) + (D * D + D)
    assert (count(tiny(cond_dim=5, extra_context_tokens=2)) - count(tiny(cond_dim=5))
            == 5 * 2 * ctx_dim + 2 * ctx_dim)
    assert count(tiny(concat_channels=3)) - count(plain) == 3 * c0 * 9
    model = randomize(plain).eval()
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        for t in (7, torch.tensor([3, 900])):
            torch.testing.assert_close(model(x, t, ctx), by_definition(model, x, t, ctx),
                                       atol=1e-5, rtol=1e-4)


@settings(max_examples=8, deadline=None)
@given(cond_dim=st.sampled_from([0, 3]), extra=st.integers(0, 2), concat=st.integers(0, 2),
       batch=st.integers(1, 2), shared_t=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_forward_is_the_definition(cond_dim, extra, concat, batch, shared_t, seed):
    extra = extra if cond_dim else 0
    model = randomize(tiny(cond_dim=cond_dim, extra_context_tokens=extra,
                           concat_channels=concat), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(batch, 4, 8, 8, generator=gen), torch.randn(batch, 3, 8, generator=gen)
    v = torch.randn(batch, cond_dim, generator=gen) if cond_dim else None
    c = torch.randn(batch, concat, 8, 8, generator=gen) if concat else None
    t = 11 if shared_t else torch.randint(0, 1000, (batch,), generator=gen)
    with torch.no_grad():
        out = model(x, t, ctx, cond_vector=v, concat=c)
        assert out.shape == (batch, 4, 8, 8)
        torch.testing.assert_close(out, by_definition(model, x, t, ctx, cond_vector=v,
                                                      concat=c), atol=1e-5, rtol=1e-4)


def test_cond_vector_changes_the_output_through_the_time_embedding():
    model = randomize(tiny(cond_dim=5)).eval()
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    v, w = torch.randn(2, 5), torch.randn(2, 5)
    with torch.no_grad():
        a, b = model(x, 10, ctx, cond_vector=v), model(x, 10, ctx, cond_vector=w)
        assert (a - b).abs().max() > 1e-3
        emb = model.embed(10, 2, cond_vector=v)
        l1, l2 = model.cond_embed[0], model.cond_embed[2]
        want = F.silu(model.time_embed(torch.tensor([10.0]))
                      + (F.silu(v.double() @ l1.weight.double().T + l1.bias.double())
                         @ l2.weight.double().T + l2.bias.double()).float())
        torch.testing.assert_close(emb, want, atol=1e-5, rtol=1e-5)


def test_zero_initialised_cond_projection_leaves_a_fresh_model_unchanged():
    """cond_embed's last Linear starts at zero and is built after every other module: the
    model with cond_dim has the plain model's other weights (same seed) and, at init, its
    output whatever the vector. Its last Linear gets a gradient at once, the first none
    until the last has moved."""
    torch.manual_seed(3)
    plain = tiny()
    torch.manual_seed(3)
    model = tiny(cond_dim=5)
    shared = plain.state_dict()
    assert set(model.state_dict()) - set(shared) == {
        "cond_embed.0.weight", "cond_embed.0.bias", "cond_embed.2.weight", "cond_embed.2.bias"}
    for key, value in shared.items():
        assert torch.equal(model.state_dict()[key], value), key
    for m in (plain, model):  # (a fresh UNet outputs zeros: let the blocks show)
        randomize(m.conv_out, seed=1)
        randomize(m.up, seed=2)
    x, ctx, v = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8), 3 * torch.randn(2, 5)
    out = model(x, torch.tensor([4, 700]), ctx, cond_vector=v)
    torch.testing.assert_close(out, plain(x, torch.tensor([4, 700]), ctx), atol=1e-6, rtol=1e-5)
    out.square().mean().backward()
    assert model.cond_embed[2].weight.grad.abs().max() > 0
    assert torch.count_nonzero(model.cond_embed[0].weight.grad) == 0


def test_extra_context_tokens_are_appended_to_the_context():
    """The tokens join the cross-attention context: the model equals a model without
    them given [context | Wc v + bc] by hand, and the cache holds them too."""
    model = randomize(tiny(cond_dim=5, extra_context_tokens=2,
                           transformer_depth=2, attention_levels=(0, 1))).eval()
    bare = tiny(cond_dim=5, transformer_depth=2, attention_levels=(0, 1)).eval()
    bare.load_state_dict({k: v for k, v in model.state_dict().items()
                          if not k.startswith("context_proj")})
    x, ctx, v = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 8), torch.randn(3, 5)
    tokens = (v.double() @ model.context_proj.weight.double().T
              + model.context_proj.bias.double()).float().view(3, 2, 8)
    with torch.no_grad():
        out = model(x, 9, ctx, cond_vector=v)
        torch.testing.assert_close(out, bare(x, 9, torch.cat([ctx, tokens], 1), cond_vector=v),
                                   atol=1e-5, rtol=1e-4)
        assert (out - bare(x, 9, ctx, cond_vector=v)).abs().max() > 1e-3  # they are read
        cache = model.cache_context(ctx, cond_vector=v)
        assert cache.shape == (3, 8, 8)
        torch.testing.assert_close(model(x, 9, cache, cond_vector=v), out, atol=1e-6,
                                   rtol=1e-5)
        torch.testing.assert_close(model(x, 9, cache, cond_vector=v.clone()), out, atol=1e-6,
                                   rtol=1e-5)
        with pytest.raises(ValueError, match="differs from the one given to cache_context"):
            model(x, 9, cache, cond_vector=v + 1)
        with pytest.raises(BadConfig, match="extra_context_tokens = 2: pass cache_context"):
            model.cache_context(ctx)


def test_concat_channels_widen_conv_in_only():
    """conv_in takes [x_t | concat]; with the concat weights zero the model is the plain
    one (same other weights), and the output keeps x_t's channels."""
    model = randomize(tiny(concat_channels=3)).eval()
    assert model.conv_in.weight.shape == (8, 4 + 3, 3, 3)
    plain = tiny().eval()
    state = model.state_dict()
    plain.load_state_dict({**state, "conv_in.weight": state["conv_in.weight"][:, :4]})
    x, ctx, c = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = model(x, 5, ctx, concat=c)
        assert out.shape == (2, 4, 8, 8)
        assert (out - plain(x, 5, ctx)).abs().max() > 1e-3  # the images are read
        model.conv_in.weight[:, 4:] = 0
        torch.testing.assert_close(model(x, 5, ctx, concat=c), plain(x, 5, ctx), atol=1e-6,
                                   rtol=1e-5)


def test_a_training_step_reaches_every_new_parameter():
    model = randomize(tiny(**COND))
    x, ctx, v, c = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8), torch.randn(2, 5), \
        torch.randn(2, 3, 8, 8)
    model(x, torch.tensor([5, 600]), ctx, cond_vector=v, concat=c).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("options, call, error, message", [
    ({"cond_dim": 5}, lambda m, x, c: m(x, 1, c), BadConfig,
     r"has cond_dim = 5: pass cond_vector \(B, 5\)"),
    ({}, lambda m, x, c: m(x, 1, c, cond_vector=torch.randn(2, 5)), BadConfig,
     "takes no cond_vector .*cond_dim = 0"),
    ({"cond_dim": 5}, lambda m, x, c: m(x, 1, c, cond_vector=torch.randn(2, 4)), ValueError,
     r"cond_vector must be a \(B, cond_dim\) float tensor with B = 2, cond_dim = 5"),
    ({"cond_dim": 5}, lambda m, x, c: m(x, 1, c, cond_vector=torch.ones(2, 5, dtype=torch.long)),
     ValueError, "cond_vector must be a"),
    ({"cond_dim": 5, "extra_context_tokens": 2}, lambda m, x, c: m(x, 1, c), BadConfig,
     "cond_dim = 5: pass cond_vector"),
    ({"concat_channels": 3}, lambda m, x, c: m(x, 1, c), BadConfig,
     r"has concat_channels = 3: pass concat \(B, 3, H, W\)"),
    ({}, lambda m, x, c: m(x, 1, c, concat=torch.randn(2, 3, 8, 8)), BadConfig,
     "takes no concat images .*concat_channels = 0"),
    ({"concat_channels": 3}, lambda m, x, c: m(x, 1, c, concat=torch.randn(2, 3, 4, 4)),
     ValueError, r"concat must be \(B, concat_channels, H, W\) = \(2, 3, 8, 8\)"),
])
def test_missing_or_unexpected_conditioning_inputs(options, call, error, message):
    model = tiny(**options)
    with pytest.raises(error, match=message):
        call(model, torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8))


@pytest.mark.parametrize("options, message", [
    ({"extra_context_tokens": 2}, "extra_context_tokens needs cond_dim > 0"),
    ({"extra_context_tokens": 2, "cond_dim": 4, "context_dim": 0},
     "extra_context_tokens needs cond_dim > 0 (the vector they are projected from) and "
     "context_dim > 0 (the cross-attention they join), got 2"),
    ({"cond_dim": -1}, "cond_dim must be >= 0, got -1"),
    ({"concat_channels": -2}, "concat_channels must be >= 0, got -2"),
])
def test_bad_conditioning_options(options, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}"):
        UNetConfig(**{**TINY, **options})


def test_conditioning_options_round_trip():
    cfg = UNetConfig(**{**TINY, **COND})
    assert from_dict(UNetConfig, loads_toml(dumps_toml(to_dict(cfg)))) == cfg
    assert from_dict(UNetConfig, {k: v for k, v in to_dict(UNetConfig()).items()
                                  if k not in COND}) == UNetConfig()  # older configs load


# ------------------------------------------------------- Imagen's efficient UNet options


def _up_inputs_and_skips(model, x, t, ctx):
    """The tensors the up path's ResBlocks receive, and the skips the down path pushed
    (conv_in, each down stage, each downsampler), recorded by forward hooks."""
    pushed, received = [], []
    hooks = [model.conv_in.register_forward_hook(lambda m, i, o: pushed.append(o))]
    for level in model.down:
        for stage in level.stages:
            hooks.append(stage.register_forward_hook(lambda m, i, o: pushed.append(o)))
        if level.resample is not None:
            hooks.append(level.resample.register_forward_hook(
                lambda m, i, o: pushed.append(o)))
    for level in model.up:
        for stage in level.stages:
            hooks.append(stage.res.register_forward_pre_hook(
                lambda m, args: received.append(args[0])))
    try:
        out = model(x, t, ctx)
    finally:
        for h in hooks:
            h.remove()
    return out, received, pushed


@pytest.mark.parametrize("scale", [1.0, 2 ** -0.5, 0.25])
def test_skip_connections_are_scaled_by_skip_scale(scale):
    model = randomize(tiny(skip_scale=scale)).double().eval()
    x, ctx = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 6, 8,
                                                                      dtype=torch.float64)
    with torch.no_grad():
        _, received, pushed = _up_inputs_and_skips(model, x, 5, ctx)
    assert len(received) == len(pushed)
    for got, skip in zip(received, reversed(pushed)):  # the up path pops the last first
        c = skip.shape[1]
        torch.testing.assert_close(got[:, -c:], scale * skip, rtol=0, atol=1e-12)
    # and it changes the output (a scale the forward ignored would not)
    plain = randomize(tiny()).double().eval()
    with torch.no_grad():
        out_scaled = model(x, 5, ctx)
        out_plain = plain(x, 5, ctx)
    assert (scale == 1.0) == torch.allclose(out_scaled, out_plain, atol=1e-12)


def test_level_layers_put_more_blocks_at_low_resolution():
    torch.manual_seed(3)
    same = tiny(level_layers=(1, 1))
    torch.manual_seed(3)
    base = tiny()
    for a, b in zip(same.state_dict().values(), base.state_dict().values()):
        assert torch.equal(a, b)  # equal entries: the layers_per_level model, weight for weight
    deep = tiny(level_layers=(1, 3))
    assert [len(level.stages) for level in deep.down] == [1, 3]
    assert [len(level.stages) for level in deep.up] == [4, 2]  # up levels: one more each
    out = deep(torch.randn(2, 4, 8, 8), 5, torch.randn(2, 6, 8))
    assert out.shape == (2, 4, 8, 8)
    with pytest.raises(BadConfig, match="level_layers"):
        tiny(level_layers=(1, 2, 3))
