"""The UNet's Imagen conditioning options: ``pooled_context`` (the context's mean over
its tokens through an MLP into the time embedding) and ``noise_level`` (the
augmentation level's sinusoidal embedding of ``1000·a``), against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gaf.errors import BadConfig
from gaf.plugins.diffusion.unet import UNet, UNetConfig
from gaf.plugins.diffusion.unet.embeddings import timestep_embedding

SMALL = dict(channels=(8, 16), norm_groups=4, heads=2, context_dim=6)


def _perturbed(model: UNet, seed: int = 1) -> UNet:
    """The model with every weight moved (so zero-initialised layers matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_a_fresh_model_with_the_options_computes_what_the_model_without_them_does():
    torch.manual_seed(0)
    plain = UNet(UNetConfig(**SMALL))
    torch.manual_seed(0)
    both = UNet(UNetConfig(**SMALL, pooled_context=True, noise_level=True))
    shared = {k: v for k, v in both.state_dict().items() if k in plain.state_dict()}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())
    _perturbed(plain, 3)
    both.load_state_dict({**both.state_dict(), **plain.state_dict()})
    x, ctx = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6)
    with torch.no_grad():  # the new layers' last Linear is zero: no change until trained
        torch.testing.assert_close(both(x, 7, ctx, noise_level=0.3), plain(x, 7, ctx))


def test_pooled_context_adds_an_mlp_of_the_token_mean_to_the_time_embedding():
    torch.manual_seed(0)
    model = _perturbed(UNet(UNetConfig(**SMALL, pooled_context=True)))
    ctx = torch.randn(3, 5, 6, dtype=torch.float64)
    model = model.double()
    t = torch.tensor([1.0, 50.0, 900.0], dtype=torch.float64)
    got = model.embed(t, 3, pooled=ctx.mean(1))
    pool = model.pool_embed
    want = F.silu(model.time_embed(t) + pool[2](F.silu(pool[0](ctx.mean(1)))))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_pooled_context_is_kept_by_cache_context():
    torch.manual_seed(0)
    model = _perturbed(UNet(UNetConfig(**SMALL, pooled_context=True)))
    x, ctx = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6)
    with torch.no_grad():
        direct = model(x, torch.tensor([3, 400]), ctx)
        cached = model(x, torch.tensor([3, 400]), model.cache_context(ctx))
        other = model(x, torch.tensor([3, 400]), ctx.flip(0))
    torch.testing.assert_close(cached, direct, rtol=0, atol=1e-6)
    assert not torch.allclose(other, direct)  # the output depends on the context


def test_noise_level_embeds_a_times_1000_like_a_timestep():
    torch.manual_seed(0)
    model = _perturbed(UNet(UNetConfig(**SMALL, noise_level=True, concat_channels=3))).double()
    t = torch.tensor([10.0, 20.0], dtype=torch.float64)
    a = torch.tensor([0.0, 0.25], dtype=torch.float64)
    got = model.embed(t, 2, noise_level=a)
    lv = model.level_embed
    sinus = timestep_embedding(1000.0 * a, lv.dim).double()
    want = F.silu(model.time_embed(t) + lv.fc2(F.silu(lv.fc1(sinus))))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # one shared level broadcasts like one shared timestep
    shared = model.embed(t, 2, noise_level=0.25)
    torch.testing.assert_close(shared[1], got[1], rtol=0, atol=1e-12)


def test_the_options_ask_for_their_inputs_and_refuse_them_otherwise():
    with pytest.raises(BadConfig, match="pooled_context"):
        UNetConfig(**{**SMALL, "context_dim": 0}, pooled_context=True)
    model = UNet(UNetConfig(**SMALL, noise_level=True, concat_channels=3))
    x, ctx = torch.randn(1, 3, 8, 8), torch.randn(1, 5, 6)
    with pytest.raises(BadConfig, match="noise_level"):
        model(x, 1, ctx, concat=x)
    plain = UNet(UNetConfig(**SMALL))
    with pytest.raises(BadConfig, match="no noise_level"):
        plain(x, 1, ctx, noise_level=0.5)
    with pytest.raises(ValueError, match="t must be"):
        model(x, 1, ctx, concat=x, noise_level=torch.zeros(3))


def test_gradients_reach_the_new_layers():
    torch.manual_seed(0)
    model = _perturbed(UNet(UNetConfig(**SMALL, pooled_context=True, noise_level=True,
                                       concat_channels=3))).train()
    x, ctx = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6)
    model(x, torch.tensor([5, 6]), ctx, concat=x, noise_level=torch.rand(2)).square().mean().backward()
    for layer in (model.pool_embed[0], model.pool_embed[2], model.level_embed.fc1,
                  model.level_embed.fc2):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
