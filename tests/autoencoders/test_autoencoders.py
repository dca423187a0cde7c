"""The first-stage models: shapes, the KL term, the quantiser (straight-through, losses,
EMA, restarts), the discriminator, and the latent scale factor through save/load."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.config import OptionError
from gaf.plugins.autoencoders import (DiagonalGaussian, KLAutoencoder, PatchDiscriminator,
                                                VectorQuantizer, VQAutoencoder)
from gaf.plugins.autoencoders.kl import LOGVAR_RANGE
from gaf.plugins.autoencoders.vq import perplexity
from gaf.interfaces import Autoencoder

TINY = {"base_channels": 8, "num_groups": 4, "num_res_blocks": 0}


@pytest.mark.parametrize("name", ["kl-vae", "vqgan"])
def test_registry_builds_both_with_about_a_million_parameters_or_less(name):
    model = gaf.create("autoencoder", name)
    assert isinstance(model, Autoencoder)
    assert model.gaf_name == name and model.gaf_kind == "autoencoder"
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n <= 1_000_000
    assert model.config.downsample == 4 and model.config.latent_channels == 3


@settings(max_examples=10)
@given(name=st.sampled_from(["kl-vae", "vqgan"]), f=st.sampled_from([1, 2, 4, 8, 16]),
       c=st.integers(1, 4), k=st.integers(1, 2), batch=st.integers(1, 2),
       attention=st.booleans())
def test_latent_and_reconstruction_shapes(name, f, c, k, batch, attention):
    res = f * k if f >= 4 else 4 * k
    model = gaf.create("autoencoder", name, downsample=f, latent_channels=c,
                       attention=attention, **TINY).eval()
    x = torch.rand(batch, 3, res, res) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (batch, c, res // f, res // f)
        assert model.decode(z).shape == x.shape
        assert model(x).reconstruction.shape == x.shape
    assert len(model.encoder.down) == int(math.log2(f)) + 1


@pytest.mark.parametrize("name, options, message", [
    ("kl-vae", {"downsample": 3}, "downsample must be one of: 1, 2, 4, 8, 16, got 3"),
    ("kl-vae", {"downsample": 32}, "downsample must be one of: 1, 2, 4, 8, 16, got 32"),
    ("kl-vae", {"downsample": 4, "channel_mult": [1, 2]},
     "channel_mult needs log2(f) + 1 = 3 entries for f=4, got [1, 2]"),
    ("kl-vae", {"downsample": 2, "channel_mult": [1, 0]},
     "channel_mult must be >= 1 (each entry), got [1, 0]"),
    ("kl-vae", {"base_channels": 12, "num_groups": 8},
     "num_groups must divide every width (base_channels x channel_mult = [12, 24, 48]), got 8"),
    ("kl-vae", {"latent_channels": 0}, "latent_channels must be >= 1, got 0"),
    ("kl-vae", {"num_res_blocks": -1}, "num_res_blocks must be >= 0, got -1"),
    ("kl-vae", {"dropout": math.nan}, "dropout must be in [0, 1), got nan"),
    ("vqgan", {"n_embed": 1}, "n_embed must be >= 2, got 1"),
    ("vqgan", {"beta": -0.5}, "beta must be >= 0, got -0.5"),
    ("vqgan", {"ema_decay": 1.0}, "ema_decay must be in (0, 1), got 1"),
    ("vqgan", {"ema_eps": 0.0}, "ema_eps must be > 0, got 0"),
    ("vqgan", {"restart_after": -1}, "restart_after must be >= 0, got -1"),
])
def test_bad_configs(name, options, message):
    with pytest.raises(OptionError, match=f"^autoencoder {name}: {re.escape(message)}$"):
        gaf.create("autoencoder", name, **options)


def test_channel_mult_from_a_list_and_odd_sizes_rejected():
    model = gaf.create("autoencoder", "kl-vae", downsample=2, channel_mult=[1, 3], **TINY)
    assert model.config.channel_mult == (1, 3)
    assert model.decoder.conv_in.out_channels == 24
    with pytest.raises(ValueError, match="divisible"):
        model.encode(torch.zeros(1, 3, 9, 10))
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------------------- KL


def test_kl_matches_the_float64_closed_form():
    torch.manual_seed(0)
    moments = torch.randn(3, 8, 4, 5) * 2
    moments[0, 4, 0, 0] = -50.0  # below the clamp
    post = DiagonalGaussian(moments)
    mean, logvar = moments.double().chunk(2, dim=1)
    logvar = logvar.clamp(*LOGVAR_RANGE)
    std = torch.exp(0.5 * logvar)
    # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2, summed over elements
    ref = (-torch.log(std) + (std ** 2 + mean ** 2) / 2 - 0.5).sum(dim=(1, 2, 3))
    torch.testing.assert_close(post.kl().double(), ref, rtol=1e-5, atol=1e-4)
    normal = torch.distributions.Normal(mean, std)
    std_normal = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(std))
    ref2 = torch.distributions.kl_divergence(normal, std_normal).sum(dim=(1, 2, 3))
    torch.testing.assert_close(post.kl().double(), ref2, rtol=1e-5, atol=1e-4)
    assert float(post.logvar.min()) == LOGVAR_RANGE[0]


def test_kl_encode_is_the_mode_and_forward_samples():
    model = gaf.create("autoencoder", "kl-vae", **TINY).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        post = model.encode_posterior(x)
        torch.testing.assert_close(model.encode(x), post.mean)
        torch.manual_seed(1)
        a = model(x).latent
        torch.manual_seed(1)
        b = model(x).latent
        torch.manual_seed(2)
        c = model(x).latent
        mode = model(x, sample=False).latent
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(mode, post.mean)


# ---------------------------------------------------------------------------- VQ


def _nearest64(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    flat = z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    d = ((flat[:, None, :] - codes.double()[None]) ** 2).sum(-1)
    return d.argmin(1)


def test_quantiser_picks_the_nearest_code_and_is_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3, ema=True, restart_after=0)
    vq.embedding.data = torch.randn(16, 3)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z, update=False)
    idx = _nearest64(z.detach(), vq.embedding.data)
    assert torch.equal(out.indices.flatten(), idx)
    expected = vq.embedding.data[idx].reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q, expected)
    g = torch.randn_like(z)
    (out.z_q * g).sum().backward()
    assert torch.equal(z.grad, g)  # d z_q / d z = identity


def test_commitment_and_codebook_losses_against_float64():
    torch.manual_seed(1)
    vq = VectorQuantizer(8, 4, beta=0.25, ema=False, restart_after=0)
    vq.embedding.data = torch.randn(8, 4)
    z = torch.randn(3, 4, 2, 5, requires_grad=True)
    out = vq(z, update=False)
    idx = _nearest64(z.detach(), vq.embedding.data)
    flat = z.detach().double().permute(0, 2, 3, 1).reshape(-1, 4)
    e = vq.embedding.data.double()[idx]
    sq = ((flat - e) ** 2).mean()
    torch.testing.assert_close(out.commitment.double(), sq)
    torch.testing.assert_close(out.codebook.double(), sq)
    torch.testing.assert_close(out.loss.double(), 1.25 * sq)
    out.loss.backward()
    # d/dz of beta*mean((z - sg e)^2) = 2 beta (z - e) / N; d/de_k of mean((sg z - e)^2)
    n = flat.numel()
    gz = (2 * 0.25 * (flat - e) / n).reshape(3, 2, 5, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(z.grad.double(), gz, rtol=1e-5, atol=1e-7)
    ge = torch.zeros(8, 4, dtype=torch.float64).index_add_(0, idx, -2 * (flat - e) / n)
    torch.testing.assert_close(vq.embedding.grad.double(), ge, rtol=1e-5, atol=1e-7)


def test_ema_update_matches_a_hand_computation():
    vq = VectorQuantizer(3, 2, ema=True, decay=0.9, eps=1e-5, restart_after=0)
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    vq.embedding.data = codes.clone()
    vq.embed_sum.copy_(codes)
    vq.cluster_size.fill_(1.0)
    # five vectors: three nearest code 0, two nearest code 1, none nearest code 2
    pts = torch.tensor([[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1], [0.9, 1.2], [1.1, 0.8]])
    z = pts.t().reshape(1, 2, 1, 5)
    out = vq(z, update=True)
    assert out.indices.flatten().tolist() == [0, 0, 0, 1, 1]
    n = torch.tensor([3.0, 2.0, 0.0], dtype=torch.float64)
    s = torch.stack([pts[:3].sum(0), pts[3:].sum(0), torch.zeros(2)]).double()
    cluster = 0.9 * 1.0 + 0.1 * n
    embed_sum = 0.9 * codes.double() + 0.1 * s
    total = cluster.sum()
    smoothed = (cluster + 1e-5) / (total + 3 * 1e-5) * total
    torch.testing.assert_close(vq.cluster_size.double(), cluster)
    torch.testing.assert_close(vq.embed_sum.double(), embed_sum)
    torch.testing.assert_close(vq.embedding.data.double(), embed_sum / smoothed[:, None])
    assert vq.unused_steps.tolist() == [0, 0, 1]
    assert not vq.embedding.requires_grad
    # no update outside training / when asked not to
    before = vq.embedding.data.clone()
    vq(z, update=False)
    assert torch.equal(vq.embedding.data, before)


@pytest.mark.parametrize("ema", [True, False])
def test_a_dead_code_is_restarted_from_the_batch(ema):
    vq = VectorQuantizer(3, 2, ema=ema, restart_after=2)
    vq.embedding.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])
    vq.embed_sum.copy_(vq.embedding.data)
    pts = torch.tensor([[0.1, 0.0], [0.9, 1.1], [0.2, 0.1], [1.0, 0.9]])
    z = pts.t().reshape(1, 2, 1, 4)
    first = vq(z, update=True)
    assert first.restarts == 0 and vq.unused_steps.tolist() == [0, 0, 1]
    second = vq(z, update=True)
    assert second.restarts == 1
    restarted = vq.embedding.data[2]
    assert any(torch.allclose(restarted, p) for p in pts)  # one of the batch's vectors
    assert vq.unused_steps.tolist() == [0, 0, 0]
    if ema:
        assert float(vq.cluster_size[2]) == 1.0
        torch.testing.assert_close(vq.embed_sum[2], restarted)


def test_perplexity_and_vq_code_round_trip():
    assert float(perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4.0)
    assert float(perplexity(torch.tensor([0.0, 7.0, 0.0]))) == pytest.approx(1.0)
    model = gaf.create("autoencoder", "vqgan", n_embed=32, **TINY).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        idx = model.encode_indices(x)
        assert idx.shape == (2, 2, 2) and idx.dtype == torch.long
        torch.testing.assert_close(model.decode(model.encode(x)), model.decode_indices(idx))
        codebook_before = model.quantizer.embedding.clone()
        model.train()
        model.decode(model.encode(x))  # decode never updates the codebook
    assert torch.equal(model.quantizer.embedding, codebook_before)


# ------------------------------------------------------------------ discriminator


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_patch_discriminator_shapes(norm):
    d = PatchDiscriminator(3, 8, n_layers=2, norm=norm)
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 6, 6)
    assert PatchDiscriminator(1, 8, n_layers=3)(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError):
        PatchDiscriminator(norm="layer")


# ------------------------------------------------------------------- scale factor


@pytest.mark.parametrize("cls", [KLAutoencoder, VQAutoencoder])
def test_scale_factor_gives_unit_variance_and_survives_save_load(cls, tmp_path):
    name = "kl-vae" if cls is KLAutoencoder else "vqgan"
    model = gaf.create("autoencoder", name, **TINY).eval()
    assert model.scale_factor == 1.0 and not model.scale_factor_fitted
    torch.manual_seed(0)
    images = torch.rand(24, 3, 8, 8) * 2 - 1
    s = model.fit_scale_factor(images, batch_size=10)
    with torch.no_grad():
        z = model.encode(images).double()
    assert float((s * z).std()) == pytest.approx(1.0, abs=1e-5)
    assert model.scale_factor == pytest.approx(1 / float(z.std()), rel=1e-5)
    gaf.save(model, tmp_path / "ae")
    loaded = gaf.load("autoencoder", tmp_path / "ae").eval()
    assert isinstance(loaded, cls)
    assert loaded.scale_factor_fitted and loaded.scale_factor == pytest.approx(s)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(images)),
                                   model.decode(model.encode(images)))
    with pytest.raises(ValueError):
        model.scale_factor = -1.0
