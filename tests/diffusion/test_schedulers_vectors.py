"""The DDPM / DDIM schedulers on vectors ``(B, D)`` (the unCLIP prior's samples), not only
images: whole sampling runs against the closed form of Gaussian data, the forward
process and training targets row by row, and the shape-agnosticism of every step."""

from __future__ import annotations

import math

import pytest
import torch

from gaf.plugins.diffusion.schedulers import DDIMScheduler, DDPMScheduler, SchedulerConfig

F64 = torch.float64
PREDICTIONS = ("sample", "epsilon", "v_prediction")
B, D = 4, 7
S = 0.5  # the data's standard deviation: x0 ~ N(MU, S² I)
MU = torch.linspace(-1.5, 2.0, D, dtype=F64)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(shape, generator=gen(seed), dtype=F64)


def make(cls, **options):
    return cls(SchedulerConfig(clip_sample=False, **options))


# --------------------------------------------------- the exact denoiser of N(MU, S² I)


def exact_x0(x_t, ab, mu=MU):
    """E[x0 | x_t] for x0 ~ N(mu, S² I), x_t = √ᾱ x0 + √(1−ᾱ) ε: μ + a (x_t − √ᾱ μ)."""
    sigma2 = ab * S ** 2 + 1 - ab
    a = math.sqrt(ab) * S ** 2 / sigma2
    return mu + a * (x_t - math.sqrt(ab) * mu)


def oracle_output(prediction, x_t, ab, mu=MU):
    """That denoiser written as a model output of each prediction type."""
    x0 = exact_x0(x_t, ab, mu)
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    if prediction == "sample":
        return x0
    if prediction == "epsilon":
        return eps
    return math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0


def ddim_factor(ab_t, ab_prev):
    """c_t: x_prev − √ᾱ' μ = c_t (x_t − √ᾱ_t μ) for one η = 0 DDIM step."""
    sigma2 = ab_t * S ** 2 + 1 - ab_t
    return (math.sqrt(ab_prev * ab_t) * S ** 2
            + math.sqrt((1 - ab_prev) * (1 - ab_t))) / sigma2


def run_ddim(sched, prediction, x_T, mu=MU):
    ab = sched.alphas_cumprod.tolist()
    x = x_T
    for t in sched.timesteps.tolist():
        x = sched.step(oracle_output(prediction, x, ab[t], mu), t, x)
    return x


# ------------------------------------------------------------------ DDIM closed form


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("spacing, alpha_to_one", [("leading", True), ("trailing", False),
                                                   ("linspace", True)])
def test_ddim_on_vectors_is_the_closed_form_for_gaussian_data(prediction, steps, spacing,
                                                             alpha_to_one):
    sched = make(DDIMScheduler, prediction_type=prediction, timestep_spacing=spacing,
                 set_alpha_to_one=alpha_to_one, eta=0.0)
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod.tolist()
    ts = sched.timesteps.tolist()
    assert len(ts) == steps
    ab_final = 1.0 if alpha_to_one else ab[0]  # ᾱ past the last step
    prevs = [ab[t] for t in ts[1:]] + [ab_final]
    factor = math.prod(ddim_factor(ab[t], p) for t, p in zip(ts, prevs))
    assert 1e-6 < factor < 1 - 1e-3  # the walk contracts, and not to nothing

    x_T = randn(B, D, seed=steps)
    out = run_ddim(sched, prediction, x_T)
    expected = math.sqrt(ab_final) * MU + factor * (x_T - math.sqrt(ab[ts[0]]) * MU)
    assert out.shape == (B, D) and out.dtype == F64
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddim_steps_are_shape_agnostic(prediction):
    sched = make(DDIMScheduler, prediction_type=prediction)
    sched.set_timesteps(10)
    ab = sched.alphas_cumprod.tolist()
    x_T = randn(B, D, seed=3)
    x_flat, x_img = x_T, x_T[:, :, None, None]
    mu_img = MU[:, None, None]
    for t in sched.timesteps.tolist():
        x_flat = sched.step(oracle_output(prediction, x_flat, ab[t]), t, x_flat)
        x_img = sched.step(oracle_output(prediction, x_img, ab[t], mu_img), t, x_img)
        assert x_flat.shape == (B, D) and x_img.shape == (B, D, 1, 1)
        torch.testing.assert_close(x_img[:, :, 0, 0], x_flat, rtol=0, atol=1e-13)
    # a single vector (B = 1) and a batch give the same rows
    sched.set_timesteps(10)
    one = run_ddim(sched, prediction, x_T[2:3])
    torch.testing.assert_close(one, x_flat[2:3], rtol=0, atol=1e-13)


def test_ddim_with_the_true_noise_lands_on_add_noise_at_every_step():
    """With the model output built from the true (x0, ε) of a vector, each η = 0 step
    maps add_noise(x0, ε, t) exactly onto add_noise(x0, ε, prev)."""
    for prediction in PREDICTIONS:
        sched = make(DDIMScheduler, prediction_type=prediction)
        sched.set_timesteps(20)
        x0, eps = MU + S * randn(B, D, seed=5), randn(B, D, seed=6)
        ts = sched.timesteps.tolist()
        x = sched.add_noise(x0, eps, ts[0])
        for t, prev in zip(ts, ts[1:] + [-1]):
            x = sched.step(sched.training_target(x0, eps, t), t, x)
            want = x0 if prev < 0 else sched.add_noise(x0, eps, prev)
            torch.testing.assert_close(x, want, rtol=0, atol=1e-10)


# -------------------------------------------------- forward process and targets, per row


def ref_alpha_bars(T=1000, start=1e-4, end=0.02):
    out, prod = [], 1.0
    for i in range(T):
        prod *= 1.0 - (start + (end - start) * i / (T - 1))
        out.append(prod)
    return out


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t_shape", ["(B,)", "(B, 1)"])
def test_add_noise_and_training_target_row_by_row(prediction, t_shape):
    sched = make(DDPMScheduler, prediction_type=prediction)
    ab = ref_alpha_bars()
    x0, eps = MU + S * randn(B, D, seed=1), randn(B, D, seed=2)
    rows = [0, 17, 503, 999]
    t = torch.tensor(rows) if t_shape == "(B,)" else torch.tensor(rows)[:, None]
    x_t = sched.add_noise(x0, eps, t)
    target = sched.training_target(x0, eps, t)
    assert x_t.shape == target.shape == (B, D) and x_t.dtype == target.dtype == F64
    for i, ti in enumerate(rows):
        a, b = math.sqrt(ab[ti]), math.sqrt(1 - ab[ti])
        torch.testing.assert_close(x_t[i], a * x0[i] + b * eps[i], rtol=0, atol=1e-12)
        want = {"sample": x0[i], "epsilon": eps[i],
                "v_prediction": a * eps[i] - b * x0[i]}[prediction]
        torch.testing.assert_close(target[i], want, rtol=0, atol=1e-12)
        # the same row alone at an int t
        torch.testing.assert_close(sched.add_noise(x0[i:i + 1], eps[i:i + 1], ti),
                                   x_t[i:i + 1], rtol=0, atol=1e-15)
    # and the conversions invert the target on vectors with per-row t
    torch.testing.assert_close(sched.pred_original_sample(target, t, x_t), x0,
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(sched.pred_epsilon(target, t, x_t), eps, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------- DDPM


def ddpm_posterior(ab_t, ab_prev):
    """(c0, ct, β̃, β') of q(x_prev | x_t, x0) for the jump t → prev (DDPM eq. 6-7)."""
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    c0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
    ct = math.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)
    return c0, ct, (1 - ab_prev) / (1 - ab_t) * beta, beta


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_with_explicit_noise_is_the_affine_recursion(prediction, variance_type):
    """With the exact denoiser, a DDPM step is x_prev − √ᾱ' μ = d_t (x_t − √ᾱ_t μ) + std_t z
    with d_t = c0 a_t + ct (no noise after the last timestep)."""
    sched = make(DDPMScheduler, prediction_type=prediction, variance_type=variance_type)
    sched.set_timesteps(25)
    ab = sched.alphas_cumprod.tolist()
    ts = sched.timesteps.tolist()
    x_T = randn(B, D, seed=8)
    zs = [randn(B, D, seed=100 + k) for k in range(len(ts))]
    x, y = x_T, x_T - math.sqrt(ab[ts[0]]) * MU
    for k, (t, prev) in enumerate(zip(ts, ts[1:] + [-1])):
        last = prev < 0
        x = sched.step(oracle_output(prediction, x, ab[t]), t, x,
                       variance_noise=None if last else zs[k])
        ab_prev = 1.0 if last else ab[prev]
        c0, ct, small, large = ddpm_posterior(ab[t], ab_prev)
        a_t = math.sqrt(ab[t]) * S ** 2 / (ab[t] * S ** 2 + 1 - ab[t])
        y = (c0 * a_t + ct) * y
        if not last:
            y = y + math.sqrt(small if variance_type == "fixed_small" else large) * zs[k]
        torch.testing.assert_close(x, math.sqrt(ab_prev) * MU + y, rtol=0, atol=1e-10)
    assert x.shape == (B, D)


def test_ddpm_on_vectors_is_reproducible_with_a_generator():
    sched = make(DDPMScheduler, prediction_type="epsilon")
    sched.set_timesteps(8)
    ab = sched.alphas_cumprod.tolist()

    def sample(seed, x_T=randn(B, D, seed=4)):
        g, x = gen(seed), x_T
        for t in sched.timesteps.tolist():
            x = sched.step(oracle_output("epsilon", x, ab[t]), t, x, generator=g)
        return x

    a, b, c = sample(0), sample(0), sample(1)
    assert a.shape == (B, D) and a.dtype == F64 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    # one generator per row: a row's draws do not depend on the rest of the batch
    x_T = randn(B, D, seed=4)
    gens = [gen(10 + i) for i in range(B)]
    x = x_T
    for t in sched.timesteps.tolist():
        x = sched.step(oracle_output("epsilon", x, ab[t]), t, x, generator=gens)
    g_row, x_row = gen(12), x_T[2:3]
    for t in sched.timesteps.tolist():
        x_row = sched.step(oracle_output("epsilon", x_row, ab[t]), t, x_row, generator=g_row)
    torch.testing.assert_close(x[2:3], x_row, rtol=0, atol=1e-13)
