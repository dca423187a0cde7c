"""DDPM / DDIM schedulers: closed forms against float64 references, exact inversions,
timestep rules, oracle sampling loops, determinism, configs, and agreement with diffusers
(``diffusers_reference.json``, written by ``make_diffusers_reference.py``)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.config import from_dict, to_dict
from gaf.errors import BadConfig
from gaf.interfaces import Scheduler
from gaf.plugins.diffusion.schedulers import DDIMScheduler, DDPMScheduler, SchedulerConfig

F64 = torch.float64
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
REFERENCE = Path(__file__).with_name("diffusers_reference.json")


def make(cls, **options):
    return cls(SchedulerConfig(**options))


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------ float64 references (independent)


def ref_betas(schedule, T, start=1e-4, end=0.02):
    if schedule == "linear":
        return [start + (end - start) * i / (T - 1) for i in range(T)]
    if schedule == "scaled_linear":
        a, b = math.sqrt(start), math.sqrt(end)
        return [(a + (b - a) * i / (T - 1)) ** 2 for i in range(T)]
    f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
    return [min(1 - f[i + 1] / f[i], 0.999) for i in range(T)]


def ref_alpha_bars(betas):
    out, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        out.append(prod)
    return out


# -------------------------------------------------------------------- interface, config


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_registry_builds_a_scheduler(name):
    s = gaf.create("scheduler", name, num_train_timesteps=1000, eta=0.0)
    assert isinstance(s, Scheduler) and s.gaf_name == name
    assert s.timesteps is None
    s.set_timesteps(10)
    assert s.timesteps.dtype == torch.long and s.timesteps.tolist()[:2] == [900, 800]


def test_diffusers_defaults():
    c = SchedulerConfig()
    assert (c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule) == (
        1000, 0.0001, 0.02, "linear")
    assert c.trained_betas is None and c.variance_type == "fixed_small"
    assert c.clip_sample is True and c.clip_sample_range == 1.0
    assert c.prediction_type == "epsilon" and c.thresholding is False
    assert (c.dynamic_thresholding_ratio, c.sample_max_value) == (0.995, 1.0)
    assert (c.timestep_spacing, c.steps_offset) == ("leading", 0)
    assert c.rescale_betas_zero_snr is False and c.set_alpha_to_one is True and c.eta == 0.0


def test_configs_swap_and_round_trip(tmp_path):
    options = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                   clip_sample=False, steps_offset=1, prediction_type="v_prediction",
                   variance_type="fixed_large", eta=0.3)
    ddpm = gaf.create("scheduler", "ddpm", **options)
    ddim = gaf.create("scheduler", "ddim", **to_dict(ddpm.config))
    assert ddim.config == ddpm.config and torch.equal(ddim.alphas_cumprod, ddpm.alphas_cumprod)
    assert DDIMScheduler.from_config(ddpm.config).config == ddpm.config
    # a diffusers scheduler_config.json: unknown keys are dropped
    diffusers_dict = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.42.1",
                      "skip_prk_steps": True, **to_dict(ddpm.config)}
    assert DDIMScheduler.from_config(diffusers_dict).config == ddpm.config
    assert DDPMScheduler.from_config(ddpm.config, eta=0.0).config.eta == 0.0
    assert from_dict(SchedulerConfig, to_dict(ddpm.config)) == ddpm.config
    for s, name in ((ddpm, "ddpm"), (ddim, "ddim")):
        gaf.save(s, tmp_path / name)
        loaded = gaf.load("scheduler", tmp_path / name)
        assert type(loaded) is type(s) and loaded.config == s.config
        assert not (tmp_path / name / "model.safetensors").exists()


def test_trained_betas_round_trip(tmp_path):
    betas = [0.01, 0.02, 0.05, 0.1, 0.2]
    s = gaf.create("scheduler", "ddim", num_train_timesteps=5, trained_betas=betas)
    gaf.save(s, tmp_path)
    loaded = gaf.load("scheduler", tmp_path)
    assert loaded.config.trained_betas == tuple(betas)
    assert torch.allclose(loaded.alphas_cumprod, torch.tensor(ref_alpha_bars(betas), dtype=F64),
                          rtol=0, atol=1e-15)


@pytest.mark.parametrize("field, value, allowed", [
    ("beta_schedule", "cosine", "squaredcos_cap_v2"),
    ("prediction_type", "x0", "v_prediction"),
    ("timestep_spacing", "even", "trailing"),
    ("variance_type", "learned", "fixed_large"),
])
def test_unknown_choice_names_field_and_allowed_values(field, value, allowed):
    for build in (lambda: gaf.create("scheduler", "ddim", **{field: value}),
                  lambda: SchedulerConfig(**{field: value})):
        with pytest.raises(BadConfig, match=field) as info:
            build()
        assert allowed in str(info.value) and value in str(info.value)


@pytest.mark.parametrize("options, field", [
    ({"num_train_timesteps": 0}, "num_train_timesteps"),
    ({"beta_start": 0.0}, "beta_start"),
    ({"beta_end": 1.5}, "beta_end"),
    ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"num_train_timesteps": 2, "trained_betas": [1.0, 0.5]}, "trained_betas"),
    ({"clip_sample_range": 0.0}, "clip_sample_range"),
    ({"dynamic_thresholding_ratio": 1.5}, "dynamic_thresholding_ratio"),
    ({"sample_max_value": 0.5}, "sample_max_value"),
    ({"eta": -1.0}, "eta"),
    ({"steps_offset": -1}, "steps_offset"),
])
def test_bad_values_are_bad_config(options, field):
    with pytest.raises(BadConfig, match=field):
        gaf.create("scheduler", "ddpm", **options)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_step_errors(cls):
    s = make(cls)
    x = randn(2, 3)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(x, 900, x)
    s.set_timesteps(10)
    with pytest.raises(ValueError, match=r"timestep 950 is not one of .*900, 800"):
        s.step(x, 950, x)
    with pytest.raises(ValueError, match="one timestep"):
        s.step(x, torch.tensor([900, 800]), x)
    for bad in (0, 1001, None):
        with pytest.raises(ValueError, match="num_inference_steps"):
            s.set_timesteps(bad)
    with pytest.raises(ValueError, match="strictly decreasing"):
        s.set_timesteps(timesteps=[10, 20])
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        s.set_timesteps(timesteps=[1000, 5])
    with pytest.raises(ValueError, match=r"outside \[0, 1000\)"):
        s.add_noise(x, x, 1000)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        s.add_noise(x, x, torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="steps_offset"):
        make(cls, steps_offset=5).set_timesteps(1000)


def test_epsilon_at_zero_terminal_snr_is_refused():
    s = make(DDIMScheduler, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    s.set_timesteps(10)
    x = randn(2, 3)
    with pytest.raises(ValueError, match="v_prediction"):
        s.step(x, 999, x)
    assert torch.isfinite(s.step(x, 899, x)).all()


# ------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("schedule, start, end", [
    ("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_alpha_bars_match_float64_products(schedule, start, end):
    s = make(DDPMScheduler, beta_schedule=schedule, beta_start=start, beta_end=end)
    betas = ref_betas(schedule, 1000, start, end)
    ab = torch.tensor(ref_alpha_bars(betas), dtype=F64)
    assert s.alphas_cumprod.dtype == F64
    assert torch.allclose(s.betas, torch.tensor(betas, dtype=F64), rtol=1e-12, atol=0)
    assert torch.allclose(s.alphas_cumprod, ab, rtol=1e-11, atol=0)
    assert torch.allclose(s.alphas, 1 - torch.tensor(betas, dtype=F64), rtol=0, atol=1e-15)
    if schedule == "squaredcos_cap_v2":
        assert s.betas.max() <= 0.999


@given(t=st.integers(1, 999), prev=st.integers(-1, 998),
       schedule=st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]))
def test_posterior_coefficients_match_ddpm_eq7(t, prev, schedule):
    s = make(DDPMScheduler, beta_schedule=schedule)
    ab = ref_alpha_bars(ref_betas(schedule, 1000))
    # eq. 7 for the one-step posterior t -> t-1
    beta = 1 - ab[t] / ab[t - 1]
    c0, ct, var = s.posterior_coefficients(t)
    assert c0 == pytest.approx(math.sqrt(ab[t - 1]) * beta / (1 - ab[t]), rel=1e-10)
    assert ct == pytest.approx(math.sqrt(1 - beta) * (1 - ab[t - 1]) / (1 - ab[t]), rel=1e-10)
    assert var == pytest.approx((1 - ab[t - 1]) / (1 - ab[t]) * beta, rel=1e-9)
    # a strided jump t -> prev: the same formula with ᾱ_t/ᾱ_prev as the step's α
    prev = min(prev, t - 1)
    a_prev = 1.0 if prev < 0 else ab[prev]
    beta_eff = 1 - ab[t] / a_prev
    c0, ct, var = s.posterior_coefficients(t, prev)
    assert c0 == pytest.approx(math.sqrt(a_prev) * beta_eff / (1 - ab[t]), rel=1e-10, abs=1e-15)
    assert ct == pytest.approx(math.sqrt(ab[t] / a_prev) * (1 - a_prev) / (1 - ab[t]),
                               rel=1e-10, abs=1e-15)
    assert var == pytest.approx((1 - a_prev) / (1 - ab[t]) * beta_eff, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [999, 500, 1])
def test_ddpm_step_is_the_posterior_with_x0_hat(variance_type, t):
    s = make(DDPMScheduler, variance_type=variance_type, clip_sample=False)
    s.set_timesteps(1000)
    ab = ref_alpha_bars(ref_betas("linear", 1000))
    x_t, eps, z = randn(3, 4, seed=1), randn(3, 4, seed=2), randn(3, 4, seed=3)
    x0 = (x_t - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
    beta = 1 - ab[t] / ab[t - 1]
    mean = (math.sqrt(ab[t - 1]) * beta / (1 - ab[t]) * x0
            + math.sqrt(1 - beta) * (1 - ab[t - 1]) / (1 - ab[t]) * x_t)
    var = (1 - ab[t - 1]) / (1 - ab[t]) * beta if variance_type == "fixed_small" else beta
    out = s.step(eps, t, x_t, variance_noise=z)
    assert torch.allclose(out, mean + math.sqrt(var) * z, rtol=1e-9, atol=1e-10)


def test_ddpm_last_step_returns_x0_hat_without_noise():
    s = make(DDPMScheduler, clip_sample=False, variance_type="fixed_large",
             timestep_spacing="trailing")
    s.set_timesteps(10)
    x_t, eps = randn(2, 5, seed=1), randn(2, 5, seed=2)
    out = s.step(eps, 99, x_t, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, s.pred_original_sample(eps, 99, x_t), rtol=1e-12, atol=1e-12)


@given(t=st.lists(st.integers(0, 999), min_size=1, max_size=4),
       prediction=st.sampled_from(PREDICTIONS), seed=st.integers(0, 2**16),
       schedule=st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]))
def test_add_noise_then_exact_inversion_recovers_x0(t, prediction, seed, schedule):
    s = make(DDIMScheduler, prediction_type=prediction, beta_schedule=schedule)
    B = len(t)
    t = torch.tensor(t)
    x0, eps = randn(B, 2, 3, seed=seed), randn(B, 2, 3, seed=seed + 1)
    x_t = s.add_noise(x0, eps, t)
    ab = torch.tensor(ref_alpha_bars(ref_betas(schedule, 1000)), dtype=F64)[t].view(B, 1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, rtol=1e-12, atol=1e-12)
    v = s.velocity(x0, eps, t)
    assert torch.allclose(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, rtol=1e-12, atol=1e-12)
    target = s.training_target(x0, eps, t)
    assert torch.equal(target, {"epsilon": eps, "v_prediction": v, "sample": x0}[prediction])
    # ε-inversion divides by √ᾱ_t (≥ 0.0064 here): errors scale like 1/√ᾱ_t
    tol = 1e-12 / ab.sqrt().min().item()
    assert torch.allclose(s.pred_original_sample(target, t, x_t), x0, rtol=0, atol=tol)
    assert torch.allclose(s.pred_epsilon(target, t, x_t), eps, rtol=0, atol=tol * 100)
    # scalar timesteps (int and 0-d) give the same answer per row
    row = s.pred_original_sample(target[:1], int(t[0]), x_t[:1])
    assert torch.allclose(row, s.pred_original_sample(target[:1], t[0], x_t[:1]), rtol=0, atol=0)


@given(t=st.integers(1, 999), data=st.data(), prediction=st.sampled_from(PREDICTIONS),
       seed=st.integers(0, 2**16), schedule=st.sampled_from(["linear", "squaredcos_cap_v2"]))
def test_ddim_eta0_with_true_noise_lands_on_the_forward_marginal(t, data, prediction, seed,
                                                                  schedule):
    """One DDIM step t -> s with the true target maps x_t onto add_noise(x0, ε, s), and
    onto x0 exactly when the step goes past the end (set_alpha_to_one)."""
    s_prev = data.draw(st.integers(-1, t - 1), label="prev")
    sched = make(DDIMScheduler, prediction_type=prediction, beta_schedule=schedule,
                 clip_sample=False, eta=0.0)
    sched.set_timesteps(timesteps=[t] if s_prev < 0 else [t, s_prev])
    x0, eps = randn(2, 3, seed=seed), randn(2, 3, seed=seed + 1)
    x_t = sched.add_noise(x0, eps, t)
    out = sched.step(sched.training_target(x0, eps, t), t, x_t)
    expected = x0 if s_prev < 0 else sched.add_noise(x0, eps, s_prev)
    ab = ref_alpha_bars(ref_betas(schedule, 1000))[t]
    assert torch.allclose(out, expected, rtol=0, atol=1e-11 / math.sqrt(ab))


@pytest.mark.parametrize("spacing, n", [("linspace", 3), ("linspace", 7), ("trailing", 3),
                                        ("trailing", 7), ("leading", 7)])
def test_ddim_previous_timestep_comes_from_the_list(spacing, n):
    """diffusers' t − T//N is wrong for these; the list lookup lands on the next entry."""
    s = make(DDIMScheduler, timestep_spacing=spacing, clip_sample=False)
    s.set_timesteps(n)
    ts = s.timesteps.tolist()
    x0, eps = randn(2, 3, seed=5), randn(2, 3, seed=6)
    x = s.add_noise(x0, eps, ts[0])
    for t, prev in zip(ts, ts[1:] + [-1]):
        assert s.previous_timestep(torch.tensor(t)) == prev
        x = s.step(eps, torch.tensor(t), x)
        expected = x0 if prev < 0 else s.add_noise(x0, eps, prev)
        assert torch.allclose(x, expected, rtol=0, atol=1e-9), (t, prev)


def test_set_alpha_to_one_false_ends_on_alpha_bar_0():
    s = make(DDIMScheduler, set_alpha_to_one=False, clip_sample=False)
    s.set_timesteps(10)
    x0, eps = randn(2, 3, seed=1), randn(2, 3, seed=2)
    out = s.step(eps, 0, s.add_noise(x0, eps, 0))
    assert s.final_alpha_cumprod == s.alphas_cumprod[0].item()
    assert torch.allclose(out, s.add_noise(x0, eps, 0), rtol=0, atol=1e-12)


def test_clip_and_dynamic_thresholding():
    x = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.3, 0.4, 0.9]], dtype=F64)
    clipped = make(DDIMScheduler, clip_sample_range=0.8).clip_x0(x)
    assert torch.equal(clipped, x.clamp(-0.8, 0.8))
    assert torch.equal(make(DDIMScheduler, clip_sample=False).clip_x0(x), x)
    thr = make(DDIMScheduler, thresholding=True, dynamic_thresholding_ratio=0.75,
               sample_max_value=2.5).clip_x0(x)
    # row 0: the 0.75-quantile of |x| = {0.1, 0.5, 2, 3} is 2.25 -> clamp to ±2.25, /2.25
    assert torch.allclose(thr[0], x[0].clamp(-2.25, 2.25) / 2.25, rtol=1e-12, atol=0)
    assert torch.equal(thr[1], x[1])  # quantile < 1: s = 1, plain clipping to [-1, 1]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), n=st.integers(1, 400),
       q=st.floats(0.0, 1.0), dtype=st.sampled_from([torch.float32, F64]))
def test_row_quantile_is_torch_quantile_bit_for_bit(data, rows, n, q, dtype):
    """The top-k selection gives torch.quantile's values exactly, whatever the row length,
    the level, ties (values drawn from a few), infinities and NaN rows."""
    from gaf.plugins.diffusion.schedule_math import row_quantile

    pool = data.draw(st.sampled_from(["normal", "ties", "specials"]), label="values")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16), label="seed"))
    a = torch.randn(rows, n, generator=g, dtype=dtype)
    if pool == "ties":
        a = a.round()
    elif pool == "specials":
        mask = torch.rand(rows, n, generator=g) < 0.05
        a[mask] = torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)[
            torch.randint(0, 3, (int(mask.sum()),), generator=g)]
    a = a.abs()
    expected = torch.quantile(a, q, dim=1)
    got = row_quantile(a, q)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan())
    keep = ~expected.isnan()
    assert torch.equal(got[keep], expected[keep]), (got, expected)


# ------------------------------------------------------------------------- timesteps


@given(data=st.data(), T=st.integers(1, 2000), spacing=st.sampled_from(SPACINGS))
def test_timesteps_are_n_strictly_decreasing_in_range(data, T, spacing):
    n = data.draw(st.integers(1, T), label="N")
    top = (n - 1) * (T // n)
    offset = data.draw(st.integers(0, max(0, T - 1 - top)), label="steps_offset")
    s = make(DDPMScheduler, num_train_timesteps=T, timestep_spacing=spacing,
             steps_offset=min(offset, T - 1), beta_end=0.02 if T > 1 else 1e-4)
    s.set_timesteps(n)
    ts = s.timesteps.tolist()
    assert s.timesteps.dtype == torch.long and s.num_inference_steps == n
    assert len(ts) == n and all(a > b for a, b in zip(ts, ts[1:]))
    assert 0 <= ts[-1] and ts[0] < T
    if spacing == "trailing":
        assert ts[0] == T - 1
    if spacing == "linspace":
        assert ts[0] == (T - 1 if n > 1 else 0) and ts[-1] == 0
    if spacing == "leading":
        assert ts[-1] == s.config.steps_offset
        assert all(a - b == T // n for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("spacing, expected", [
    ("leading", [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])])
def test_timesteps_anchor_values(spacing, expected):
    s = make(DDIMScheduler, timestep_spacing=spacing)
    s.set_timesteps(10)
    assert s.timesteps.tolist() == expected
    if spacing == "leading":
        s = make(DDIMScheduler, steps_offset=1)
        s.set_timesteps(10)
        assert s.timesteps.tolist() == [t + 1 for t in expected]


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
def test_zero_terminal_snr(schedule):
    options = dict(beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
    plain = make(DDIMScheduler, **options)
    s = make(DDIMScheduler, rescale_betas_zero_snr=True, timestep_spacing="trailing",
             prediction_type="v_prediction", clip_sample=False, **options)
    assert s.alphas_cumprod[-1].item() == 0.0 and s.betas[-1].item() == pytest.approx(1.0)
    assert s.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-12)
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])
    # √ᾱ is an affine map of the original √ᾱ (Lin et al., Algorithm 1)
    a, b = plain.alphas_cumprod.sqrt(), s.alphas_cumprod.sqrt()
    ref = (a - a[-1]) * a[0] / (a[0] - a[-1])
    assert torch.allclose(b, ref, rtol=0, atol=1e-14)
    s.set_timesteps(10)
    assert s.timesteps[0].item() == 999
    # at T-1, x_t is pure noise and v = -x0: the oracle step lands on the marginal
    x0, eps = randn(2, 3, seed=3), randn(2, 3, seed=4)
    x_t = s.add_noise(x0, eps, 999)
    assert torch.equal(x_t, eps)
    out = s.step(s.velocity(x0, eps, 999), 999, x_t)
    assert torch.allclose(out, s.add_noise(x0, eps, 899), rtol=0, atol=1e-12)


# -------------------------------------------------------------------- sampling loops


def oracle(s, point):
    """The exact model output for data concentrated on ``point``."""
    def model(x_t, t):
        ab = s.alpha_bar(t)
        eps = (x_t - math.sqrt(ab) * point) / math.sqrt(1 - ab)
        return s.training_target(point.expand_as(x_t), eps, t)
    return model


def sample_loop(s, model, x, generator):
    for t in s.timesteps.tolist():
        x = s.step(model(x, t), t, x, generator=generator)
    return x


@pytest.mark.parametrize("cls, eta, n, spacing", [
    (DDPMScheduler, 0.0, 1000, "leading"), (DDPMScheduler, 0.0, 25, "trailing"),
    (DDIMScheduler, 0.0, 20, "linspace"), (DDIMScheduler, 1.0, 50, "leading"),
    (DDIMScheduler, 0.5, 13, "trailing")])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_oracle_sampling_converges_to_a_single_point(cls, eta, n, spacing, prediction):
    s = make(cls, eta=eta, prediction_type=prediction, timestep_spacing=spacing)
    s.set_timesteps(n)
    point = torch.tensor([0.7, -0.3, 0.0, -0.9], dtype=F64)
    g = torch.Generator().manual_seed(0)
    x = sample_loop(s, oracle(s, point), randn(64, 4, seed=1), g)
    assert torch.allclose(x, point.expand_as(x), rtol=0, atol=1e-6)


def gaussian_chain(pairs, mu, sd, ddim, eta=0.0, large=False):
    """Exact law of the sampled x for data N(μ, sd²), x_T ~ N(0, 1) and the exact
    posterior-mean model: every step is x ← A·x + B + σ·z, so x stays Gaussian.
    ``pairs`` lists (ᾱ_t, ᾱ_prev). Returns (A_total, B_total, mean, variance)."""
    A_tot, B_tot, var = 1.0, 0.0, 1.0
    for ab, abp in pairs:
        k = math.sqrt(ab) * sd**2 / (ab * sd**2 + 1 - ab)       # x̂0 = k·x + b0
        b0 = mu * (1 - k * math.sqrt(ab))
        ae = (1 - math.sqrt(ab) * k) / math.sqrt(1 - ab)         # ε̂ = ae·x + be
        be = -math.sqrt(ab) * b0 / math.sqrt(1 - ab)
        if ddim:
            sig2 = eta**2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
            c = math.sqrt(1 - abp - sig2)
            A, B = math.sqrt(abp) * k + c * ae, math.sqrt(abp) * b0 + c * be
        else:
            beta = 1 - ab / abp
            c0, ct = math.sqrt(abp) * beta / (1 - ab), math.sqrt(ab / abp) * (1 - abp) / (1 - ab)
            A, B = c0 * k + ct, c0 * b0
            sig2 = 0.0 if abp == 1.0 else (beta if large else (1 - abp) / (1 - ab) * beta)
        A_tot, B_tot, var = A * A_tot, A * B_tot + B, A * A * var + sig2
    return A_tot, B_tot, B_tot, var


@pytest.mark.parametrize("cls, options, n", [
    (DDPMScheduler, {}, 1000), (DDPMScheduler, {"variance_type": "fixed_large"}, 100),
    (DDIMScheduler, {"eta": 0.0, "timestep_spacing": "trailing"}, 50),
    (DDIMScheduler, {"eta": 0.0}, 1000), (DDIMScheduler, {"eta": 1.0}, 200),
    (DDIMScheduler, {"eta": 0.5, "timestep_spacing": "linspace"}, 30)])
def test_oracle_sampling_of_a_gaussian_has_the_predicted_law(cls, options, n):
    """Data N(μ, sd²) with the exact E[x0 | x_t] as the model: the sampled x is Gaussian
    with a mean and variance computed independently in float64; for eta = 0 it is an
    exact affine map of x_T. With the full 1000 steps the law is close to the data's."""
    mu, sd = 0.4, 0.3
    s = make(cls, clip_sample=False, **options)
    s.set_timesteps(n)

    def model(x_t, t):
        ab = s.alpha_bar(t)
        x0 = mu + math.sqrt(ab) * sd**2 / (ab * sd**2 + 1 - ab) * (x_t - math.sqrt(ab) * mu)
        return (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)

    ab = ref_alpha_bars(ref_betas("linear", 1000))
    ts = s.timesteps.tolist()
    pairs = [(ab[t], ab[p] if p >= 0 else 1.0) for t, p in zip(ts, ts[1:] + [-1])]
    A, B, mean, var = gaussian_chain(pairs, mu, sd, cls is DDIMScheduler,
                                     options.get("eta", 0.0),
                                     options.get("variance_type") == "fixed_large")
    x_T = randn(20000, seed=2)
    x = sample_loop(s, model, x_T, torch.Generator().manual_seed(3))
    if options.get("eta", 1.0) == 0.0:
        assert torch.allclose(x, A * x_T + B, rtol=0, atol=1e-10)
    assert x.mean().item() == pytest.approx(mean, abs=0.01)
    assert x.std().item() == pytest.approx(math.sqrt(var), rel=0.02)
    if n == 1000:
        assert mean == pytest.approx(mu, abs=1e-3) and math.sqrt(var) == pytest.approx(sd, rel=0.03)


# --------------------------------------------------------------- determinism, threads


@pytest.mark.parametrize("cls, eta", [(DDPMScheduler, 0.0), (DDIMScheduler, 1.0)])
def test_same_seed_same_step(cls, eta):
    s = make(cls, eta=eta)
    s.set_timesteps(10)
    x = randn(3, 2, 4, seed=1, dtype=torch.float32)
    out = randn(3, 2, 4, seed=2, dtype=torch.float32)

    def step(seed):
        return s.step(out, 500, x, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(step(7), step(7)) and not torch.equal(step(7), step(8))
    # one generator per row: a row does not depend on the rest of the batch
    rows = s.step(out, 500, x, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    one = s.step(out[1:2], 500, x[1:2], generator=torch.Generator().manual_seed(1))
    assert torch.equal(rows[1:2], one)
    with pytest.raises(ValueError, match="generators"):
        s.step(out, 500, x, generator=[torch.Generator()])


def test_a_shared_scheduler_serves_threads():
    s = make(DDIMScheduler, eta=1.0, timestep_spacing="linspace")
    s.set_timesteps(20)
    point = torch.tensor([0.5, -0.5], dtype=F64)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample_loop(s, oracle(s, point) if seed % 2 else (lambda x, t: x * 0.1),
                           randn(8, 2, seed=seed), g)

    expected = [run(i) for i in range(6)]
    results = [None] * 6

    def worker(i):
        results[i] = run(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_step_keeps_dtype():
    s = make(DDIMScheduler)
    s.set_timesteps(10)
    x = randn(2, 3, dtype=torch.float32)
    assert s.step(x, 500, x).dtype == torch.float32
    assert s.add_noise(x, x, torch.tensor([1, 2])).dtype == torch.float32
    assert make(DDIMScheduler, thresholding=True).clip_x0(x.half()).dtype == torch.float16


# --------------------------------------------------------------------- diffusers


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


def _tensor(ref, values):
    return torch.tensor(values, dtype=torch.float32).reshape(ref["shape"])


def test_timesteps_match_diffusers(reference):
    extra = 0
    for case in reference["timesteps"]:
        s = make(DDPMScheduler, num_train_timesteps=case["T"], timestep_spacing=case["spacing"],
                 steps_offset=case["steps_offset"])
        s.set_timesteps(case["N"])
        theirs = case["timesteps"]
        if len(theirs) == case["N"] + 1:  # diffusers' trailing sometimes appends -1
            assert case["spacing"] == "trailing" and theirs[-1] == -1
            theirs, extra = theirs[:-1], extra + 1
        assert s.timesteps.tolist() == theirs, case
    assert extra >= 1  # the fixture does hold such a case (T=1000, N=61)


def test_schedules_match_diffusers(reference):
    for case in reference["schedules"]:
        s = DDPMScheduler.from_config(case["config"])
        t = case["t"]
        # diffusers works in float32: its ᾱ_t is good to ~3e-7, and the zero-SNR betas
        # (1 − ᾱ_t/ᾱ_{t−1} of rescaled float32 values) only to ~5e-6; ours are float64
        beta_tol = 1e-5 if case["config"].get("rescale_betas_zero_snr") else 1e-7
        assert torch.allclose(s.betas[t], torch.tensor(case["betas"], dtype=F64),
                              rtol=1e-6, atol=beta_tol), case["config"]
        assert torch.allclose(s.alphas_cumprod[t], torch.tensor(case["alphas_cumprod"], dtype=F64),
                              rtol=1e-6, atol=5e-7), case["config"]


def test_add_noise_and_velocity_match_diffusers(reference):
    x0 = _tensor(reference, reference["inputs"]["x0"])
    noise = _tensor(reference, reference["inputs"]["noise"])
    for case in reference["noise"]:
        s = DDPMScheduler.from_config(case["config"])
        t = torch.tensor(case["t"])
        assert torch.allclose(s.add_noise(x0, noise, t), _tensor(reference, case["add_noise"]),
                              rtol=1e-5, atol=1e-5)
        assert torch.allclose(s.velocity(x0, noise, t), _tensor(reference, case["velocity"]),
                              rtol=1e-5, atol=1e-5)


def test_add_noise_broadcasts_timesteps_like_diffusers(reference):
    """diffusers flattens any timestep tensor and broadcasts it over the batch: 0-d,
    (1,), (B, 1), and (n,) against a batch of one; the recorded outputs and shapes."""
    x0 = _tensor(reference, reference["inputs"]["x0"])
    noise = _tensor(reference, reference["inputs"]["noise"])
    s = DDPMScheduler()
    assert len(reference["noise_shapes"]) == 4
    for case in reference["noise_shapes"]:
        t, b = torch.tensor(case["t"]), case["batch"]
        got = s.add_noise(x0[:b], noise[:b], t)
        assert list(got.shape) == case["out_shape"], case["t"]
        want = torch.tensor(case["add_noise"], dtype=x0.dtype).reshape(case["out_shape"])
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), case["t"]
        want_v = torch.tensor(case["velocity"], dtype=x0.dtype).reshape(case["out_shape"])
        assert torch.allclose(s.velocity(x0[:b], noise[:b], t), want_v,
                              rtol=1e-5, atol=1e-5), case["t"]
    with pytest.raises(ValueError, match="1 or 2 timesteps"):
        s.add_noise(x0, noise, torch.tensor([1, 2, 3]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(0, 999), min_size=1, max_size=4),
       st.sampled_from(["0d", "1", "B", "B1"]))
def test_add_noise_with_any_timestep_shape_equals_per_sample_calls(batch, ts, shape):
    ts = (ts * batch)[:batch]
    t = {"0d": torch.tensor(ts[0]), "1": torch.tensor(ts[:1]), "B": torch.tensor(ts),
         "B1": torch.tensor(ts).reshape(-1, 1)}[shape]
    per = [ts[0]] * batch if shape in ("0d", "1") else ts
    g = torch.Generator().manual_seed(batch)
    x0, eps = torch.randn(batch, 2, 3, 3, generator=g), torch.randn(batch, 2, 3, 3, generator=g)
    s = DDPMScheduler()
    got = s.add_noise(x0, eps, t)
    want = torch.stack([s.add_noise(x0[i], eps[i], per[i]) for i in range(batch)])
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


def test_steps_match_diffusers(reference):
    inputs = {k: _tensor(reference, v) for k, v in reference["inputs"].items()}
    kinds = set()
    for case in reference["steps"]:
        cls = DDIMScheduler if case["scheduler"] == "ddim" else DDPMScheduler
        s = cls.from_config(case["config"])
        s.set_timesteps(case["N"])
        t = case["t"]
        out, x = inputs["model_output"], inputs["sample"]
        if case["scheduler"] == "ddim":
            noise = inputs["variance_noise"] if case["eta"] > 0 else None
            got = s.step(out, t, x, eta=case["eta"], variance_noise=noise)
        else:
            got = s.step(out, t, x, variance_noise=_tensor(reference, case["variance_noise"]))
        x0 = s.clip_x0(s.pred_original_sample(out, t, x))
        # x̂0 from ε divides by √ᾱ_t: compare relative to that amplification
        ab = s.alpha_bar(t)
        tol = 1e-5 / math.sqrt(ab) if ab > 0 else 1e-5
        assert torch.allclose(x0, _tensor(reference, case["pred_original_sample"]),
                              rtol=1e-5, atol=tol), case
        assert torch.allclose(got, _tensor(reference, case["prev_sample"]),
                              rtol=1e-5, atol=tol), case
        kinds.add((case["scheduler"], case["config"].get("prediction_type", "epsilon")))
    assert len(kinds) == 6
