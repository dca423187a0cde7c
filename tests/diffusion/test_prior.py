"""The unCLIP prior (:mod:`gaf.plugins.diffusion.prior`): its token layout against an
independent float64 reference, what its output reads, the cached forward, the embedding
statistics, input checks, classifier-free guidance and the registry entry."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig
from gaf.plugins.diffusion.prior import (
    STEP_TOKENS,
    PriorCache,
    PriorCondition,
    PriorConfig,
    PriorTransformer,
)
from gaf.plugins.diffusion.unet.embeddings import timestep_embedding
from gaf.plugins.t2i.diffusion_pipeline import guided_prediction

F64 = torch.float64
L, W, E, D, HEADS, LAYERS = 5, 8, 6, 16, 2, 2
LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon (GPT2Config default) and nn.LayerNorm's


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make_model(seed=0, **options):
    """A float64 prior whose every parameter is random (out_proj is zero-initialised and
    LayerNorms start at (1, 0): left so, outputs would be 0 or blind to some weights)."""
    torch.manual_seed(seed)
    cfg = dict(text_length=L, text_width=W, embed_dim=E, width=D, heads=HEADS, layers=LAYERS)
    cfg.update(options)
    model = PriorTransformer(PriorConfig(**cfg)).double().eval()
    g = gen(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=F64)
            is_norm_weight = name.endswith("weight") and p.dim() == 1
            p.copy_(1.0 + 0.2 * noise if is_norm_weight else 0.3 * noise)
    return model


@functools.cache
def shared_model():
    """One model for the property tests (a cache is tied to its model instance)."""
    return make_model(seed=7)


def make_condition(batch, mask=None, seed=0):
    g = gen(seed)
    states = torch.randn(batch, L, W, generator=g, dtype=F64)
    if mask is None:
        lengths = torch.randint(0, L + 1, (batch,), generator=g)
        mask = torch.arange(L)[None, :] < lengths[:, None]
    pooled = torch.randn(batch, E, generator=g, dtype=F64)
    pooled = pooled / pooled.norm(dim=1, keepdim=True)
    return PriorCondition(states, torch.as_tensor(mask, dtype=torch.bool), pooled)


def make_x(batch, seed=100):
    return torch.randn(batch, E, generator=gen(seed), dtype=F64)


# ------------------------------------------------- float64 reference (written by hand)


def ref_linear(x, lin):
    """nn.Linear: weight (out, in)."""
    return x @ lin.weight.T + lin.bias


def ref_conv1d(x, conv):
    """GPT-2's Conv1D: weight (in, out)."""
    return x @ conv.weight + conv.bias


def ref_layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * norm.weight + norm.bias


def ref_gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def ref_allowed(text_mask):
    """(B, S, S) bool: query i sees key j iff j <= i and j is not a text pad, or j == i."""
    B = text_mask.shape[0]
    S = L + 1 + STEP_TOKENS
    keys = torch.cat([text_mask, torch.ones(B, S - L, dtype=torch.bool)], dim=1)
    allowed = torch.zeros(B, S, S, dtype=torch.bool)
    for b in range(B):
        for i in range(S):
            for j in range(S):
                allowed[b, i, j] = (j <= i and bool(keys[b, j])) or i == j
    return allowed


def ref_attention(x, attn, allowed):
    B, S, _ = x.shape
    hd = D // HEADS
    qkv = ref_conv1d(x, attn.c_attn)
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
    heads = []
    for h in range(HEADS):
        sl = slice(h * hd, (h + 1) * hd)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)  # (B, S, S)
        scores = scores.masked_fill(~allowed, -math.inf)
        top = scores.max(dim=-1, keepdim=True).values
        weights = torch.exp(scores - top)  # exp(-inf) = 0
        weights = weights / weights.sum(dim=-1, keepdim=True)
        heads.append(weights @ v[..., sl])
    return ref_conv1d(torch.cat(heads, dim=-1), attn.c_proj)


def ref_time_token(model, t, batch):
    t = torch.as_tensor(t).reshape(-1)
    t = t.expand(batch) if t.numel() == 1 else t
    sin = timestep_embedding(t, D).to(F64)
    fc1, fc2 = model.time_embed.fc1, model.time_embed.fc2
    h = ref_linear(sin, fc1)
    return ref_linear(h * torch.sigmoid(h), fc2)


def ref_forward(model, x_t, t, cond):
    B = x_t.shape[0]
    text = ref_linear(cond.states, model.text_proj)                         # (B, L, D)
    pooled = ref_linear(cond.pooled, model.embed_proj)[:, None]             # (B, 1, D)
    time = ref_time_token(model, t, B)[:, None]                             # (B, 1, D)
    x = ref_linear(x_t, model.x_proj)[:, None]                              # (B, 1, D)
    query = model.query.expand(B, 1, D)                                     # (B, 1, D)
    h = torch.cat([text, pooled, time, x, query], dim=1) + model.positions  # (B, L+4, D)
    allowed = ref_allowed(cond.mask)
    for block in model.blocks:
        h = h + ref_attention(ref_layer_norm(h, block.ln_1), block.attn, allowed)
        m = block.mlp
        h = h + ref_conv1d(ref_gelu_tanh(ref_conv1d(ref_layer_norm(h, block.ln_2), m.c_fc)),
                           m.c_proj)
    return ref_linear(ref_layer_norm(h[:, -1], model.norm), model.out_proj)


# ---------------------------------------------------------------------- token layout


@pytest.mark.parametrize("t", [0, 417, "per-row"])
@torch.no_grad()
def test_forward_matches_the_hand_written_token_layout(t):
    model = make_model()
    mask = torch.tensor([[True] * L,
                         [True, True, False, False, False],
                         [False] * L,
                         [True, False, True, False, True]])  # holes: not only a suffix
    cond = make_condition(4, mask=mask)
    x = make_x(4)
    if t == "per-row":
        t = torch.tensor([999, 0, 250, 31])
    out = model(x, t, cond)
    ref = ref_forward(model, x, t, cond)
    assert out.dtype == F64 and out.shape == (4, E)
    assert ref.abs().max() > 1e-2  # the comparison means something
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_out_proj_starts_at_zero():
    model = PriorTransformer(PriorConfig(text_length=L, text_width=W, embed_dim=E, width=D,
                                         heads=HEADS, layers=LAYERS))
    assert model.out_proj.weight.abs().max() == 0 and model.out_proj.bias.abs().max() == 0
    with torch.no_grad():
        out = model(make_x(2).float(), 5, make_condition(2))
    assert out.dtype == torch.float32 and torch.equal(out, torch.zeros(2, E))


# -------------------------------------------------------------- what the output reads


@torch.no_grad()
def test_output_ignores_padded_text_and_reads_everything_else():
    model = make_model(seed=3)
    mask = torch.tensor([[True, True, True, False, False],
                         [True, False, True, True, False]])
    cond = make_condition(2, mask=mask, seed=4)
    x, t = make_x(2), 300
    base = model(x, t, cond)

    def run(states=None, pooled=None, x_t=None, t_=None):
        c = PriorCondition(cond.states if states is None else states, cond.mask,
                           cond.pooled if pooled is None else pooled)
        return model(x if x_t is None else x_t, t if t_ is None else t_, c)

    # a pad's state changes (every pad of both rows): nothing moves
    states = cond.states.clone()
    states[~mask] = 100.0 * torch.randn(int((~mask).sum()), W, generator=gen(9), dtype=F64)
    torch.testing.assert_close(run(states=states), base, rtol=0, atol=1e-12)

    def changes_only_row0(out):
        assert (out[0] - base[0]).abs().max() > 1e-6
        torch.testing.assert_close(out[1], base[1], rtol=0, atol=1e-12)  # rows independent

    for j in (0, 2):  # real tokens of row 0: first and last one
        states = cond.states.clone()
        states[0, j] += 1.0
        changes_only_row0(run(states=states))
    pooled = cond.pooled.clone()
    pooled[0] = -pooled[0]
    changes_only_row0(run(pooled=pooled))
    x_t = x.clone()
    x_t[0] += 0.5
    changes_only_row0(run(x_t=x_t))
    changes_only_row0(run(t_=torch.tensor([301, 300])))
    assert (run(t_=301) - base).abs().max(dim=1).values.min() > 1e-6


@torch.no_grad()
def test_a_row_with_no_real_text_token_is_finite_and_reads_pooled():
    model = make_model(seed=5)
    cond = make_condition(1, mask=torch.zeros(1, L, dtype=torch.bool))
    out = model(make_x(1), 10, cond)
    assert torch.isfinite(out).all()
    other = PriorCondition(cond.states, cond.mask, -cond.pooled)
    assert (model(make_x(1), 10, other) - out).abs().max() > 1e-6


# ------------------------------------------------------------------ cache = forward


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 4))
    rows = [draw(st.lists(st.booleans(), min_size=L, max_size=L)) for _ in range(batch)]
    if draw(st.booleans()):
        rows[draw(st.integers(0, batch - 1))] = [False] * L  # a row with no real token
    if draw(st.booleans()):
        t = draw(st.integers(0, 999))
    else:
        t = torch.tensor(draw(st.lists(st.integers(0, 999), min_size=batch, max_size=batch)))
    return batch, torch.tensor(rows), t, draw(st.integers(0, 2 ** 16))


@settings(max_examples=20, deadline=None)
@given(cases())
@torch.no_grad()
def test_cached_forward_equals_full_forward(case):
    batch, mask, t, seed = case
    model = shared_model()
    cond = make_condition(batch, mask=mask, seed=seed)
    x = make_x(batch, seed=seed + 1)
    cache = model.cache_context(cond)
    assert isinstance(cache, PriorCache) and len(cache) == batch
    full = model(x, t, cond)
    assert torch.isfinite(full).all()
    torch.testing.assert_close(model(x, t, cache), full, rtol=0, atol=1e-12)
    # the cache is reusable: a second step (another x_t and t) against the same cache
    x2, t2 = make_x(batch, seed=seed + 2), 123
    torch.testing.assert_close(model(x2, t2, cache), model(x2, t2, cond), rtol=0, atol=1e-12)


@torch.no_grad()
def test_cache_of_another_model_or_batch_is_refused():
    model, other = make_model(seed=1), make_model(seed=1)
    cond = make_condition(3)
    with pytest.raises(ValueError, match="another model"):
        model(make_x(3), 5, other.cache_context(cond))
    with pytest.raises(ValueError, match="batch"):
        model(make_x(2), 5, model.cache_context(cond))
    with pytest.raises(ValueError, match="batch"):
        model(make_x(2), 5, cond)  # an uncached condition of the wrong batch too


# ------------------------------------------------------------------ standardisation


def test_fitted_statistics_standardise_and_are_saved():
    model = make_model()
    g = gen(11)
    scale = torch.tensor([0.05, 0.2, 1.0, 3.0, 0.01, 0.5], dtype=F64)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.3, 5.0, -0.7], dtype=F64)
    data = torch.randn(400, E, generator=g, dtype=F64) * scale + shift
    assert not bool(model.stats_fitted)
    model.fit_embedding_stats(data)
    assert bool(model.stats_fitted)
    z = model.standardize(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(E, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(z.std(0), torch.ones(E, dtype=F64), rtol=0, atol=1e-12)
    e = torch.randn(9, E, generator=g, dtype=F64)
    torch.testing.assert_close(model.unstandardize(model.standardize(e)), e,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(model.standardize(model.unstandardize(e)), e,
                               rtol=0, atol=1e-12)

    state = model.state_dict()
    for key in ("embed_mean", "embed_std", "stats_fitted"):
        assert key in state
    torch.testing.assert_close(state["embed_mean"], data.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(state["embed_std"], data.std(0), rtol=0, atol=1e-12)
    fresh = make_model(seed=99)
    torch.testing.assert_close(fresh.standardize(e), e, rtol=0, atol=0)  # identity unfitted
    fresh.load_state_dict(state)
    assert bool(fresh.stats_fitted)
    torch.testing.assert_close(fresh.standardize(e), model.standardize(e), rtol=0, atol=0)


def test_a_constant_component_has_a_floored_std():
    model = make_model()
    data = torch.randn(50, E, generator=gen(2), dtype=F64)
    data[:, 3] = 0.25
    model.fit_embedding_stats(data)
    assert model.embed_std[3].item() == pytest.approx(1e-4)
    assert torch.isfinite(model.standardize(data)).all()


@pytest.mark.parametrize("shape", [(10, E + 1), (10, E - 1), (E,), (1, E), (2, 3, E)])
def test_fit_embedding_stats_refuses_a_wrong_shape(shape):
    model = make_model()
    with pytest.raises(ValueError, match="fit_embedding_stats"):
        model.fit_embedding_stats(torch.randn(*shape, dtype=F64))
    assert not bool(model.stats_fitted)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("states_shape", [(2, L + 1, W), (2, L - 1, W), (2, L, W + 1),
                                          (2, L, W - 1), (2, L * W)])
@pytest.mark.parametrize("cached", [False, True])
@torch.no_grad()
def test_states_of_the_wrong_shape_name_the_options(states_shape, cached):
    model = make_model()
    mask = torch.ones(states_shape[:2], dtype=torch.bool)
    cond = PriorCondition(torch.randn(*states_shape, dtype=F64), mask,
                          torch.randn(2, E, dtype=F64))
    with pytest.raises(BadConfig, match=r"prior\.text_length") as info:
        model.cache_context(cond) if cached else model(make_x(2), 3, cond)
    assert "prior.text_width" in str(info.value)


@torch.no_grad()
def test_pooled_of_the_wrong_width_names_embed_dim():
    model = make_model()
    cond = make_condition(2)
    cond = PriorCondition(cond.states, cond.mask, torch.randn(2, E + 1, dtype=F64))
    with pytest.raises(BadConfig, match=r"prior\.embed_dim"):
        model(make_x(2), 3, cond)


@pytest.mark.parametrize("x_shape", [(2, E + 1), (2, E - 1), (E,), (2, E, 1)])
@torch.no_grad()
def test_x_t_of_the_wrong_shape_is_a_value_error(x_shape):
    model = make_model()
    cond = make_condition(2)
    for context in (cond, model.cache_context(cond)):
        with pytest.raises(ValueError, match="x_t"):
            model(torch.randn(*x_shape, dtype=F64), 3, context)


# ------------------------------------------------------------------------- guidance


@pytest.mark.parametrize("scale", [0.0, 1.0, 4.5])
@torch.no_grad()
def test_batched_guidance_equals_two_separate_calls(scale):
    model = make_model(seed=2)
    B = 3
    cond = make_condition(B, seed=20)
    empty = torch.zeros(B, L, dtype=torch.bool)
    empty[:, 0] = True  # the null caption: one real (start) token
    null = PriorCondition(torch.zeros(B, L, W, dtype=F64), empty, torch.zeros(B, E, dtype=F64))
    x, t = make_x(B), 640
    out_u, out_c = model(x, t, null), model(x, t, cond)
    assert (out_c - out_u).abs().max() > 1e-6
    expected = out_u + scale * (out_c - out_u)
    both = PriorCondition.cat([null, cond])
    torch.testing.assert_close(guided_prediction(model, x, t, both, None, scale),
                               expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        guided_prediction(model, x, t, model.cache_context(both), None, scale),
        expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        guided_prediction(model, x, t, cond, null, scale, batched=False),
        expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- registry


def test_registry_builds_the_prior():
    assert "prior" in gaf.REGISTRY.kinds()
    assert "prior-transformer" in gaf.REGISTRY.names("prior")
    model = gaf.REGISTRY.create("prior", "prior-transformer", width=16, heads=2, layers=1)
    assert isinstance(model, PriorTransformer)
    assert (model.config.width, model.config.heads, model.config.layers) == (16, 2, 1)
    assert len(model.blocks) == 1 and model.positions.shape == (
        model.config.text_length + 1 + STEP_TOKENS, 16)
