"""RePaint (:mod:`gaf.plugins.diffusion.repaint`, ``DiffusionPipeline.inpaint``).

* the jump schedule against its definition (a hand-worked case, Hypothesis properties
  and diffusers' ``RePaintScheduler`` timesteps recorded in
  ``tests/data/repaint_reference.json`` by ``tests/data/make_repaint_reference.py``);
* the undo's mean and variance against the forward process's closed form (float64);
* the paste formula, the latent mask's max-pool, the final ground-truth paste;
* the loop: ``jump_n_sample = 1`` is the plain sampler with the paste callback, the hook
  and the callback after every denoising step, per-image generators, unconditional fills,
  refused inputs and schedulers, and a latent (tiny ``kl-vae``) pipeline.

The noise model and conditioner are small stand-ins (as in ``tests/t2i/test_pipeline.py``).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import gaf
from gaf.errors import BadConfig, BadData
from gaf.hooks import plugin_manager
from gaf.plugins.diffusion.repaint import (JUMP_LENGTH, JUMP_N_SAMPLE, STEPS, KnownRegion,
                                           denoising_steps, jump_schedule, latent_mask,
                                           renoise)
from gaf.plugins.diffusion.schedulers import DDIMScheduler, DDPMScheduler, SchedulerConfig
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline, InpaintOptions

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "repaint_reference.json"
F64 = torch.float64


def gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


# --------------------------------------------------------------- the jump schedule


def test_a_small_schedule_worked_by_hand():
    # steps 6, j 2, r 2: jump points {0, 2}; down to 2, up to 4, down to 0, up to 2, down to -1
    assert jump_schedule(6, 2, 2) == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert jump_schedule(4, 1, 1) == [3, 2, 1, 0, -1]  # r = 1: no resampling
    assert jump_schedule(3, 5, 4) == [2, 1, 0, -1]     # j >= steps: no jump points


def up_runs(schedule: list[int]) -> list[tuple[int, int]]:
    """(start position, length) of each maximal run of moves up."""
    runs, start, length = [], 0, 0
    for a, b in zip(schedule, schedule[1:]):
        if b > a:
            if length == 0:
                start = a
            length += 1
        elif length:
            runs.append((start, length))
            length = 0
    return runs


@given(steps=st.integers(1, 80), jump_length=st.integers(1, 15),
       jump_n_sample=st.integers(1, 6))
def test_the_schedule_follows_its_definition(steps, jump_length, jump_n_sample):
    s = jump_schedule(steps, jump_length, jump_n_sample)
    points = list(range(0, steps - jump_length, jump_length))  # the paper's jump points
    assert s[0] == steps - 1 and s[-1] == -1  # starts at the top, ends at the clean level
    assert -1 not in s[:-1] and all(-1 <= p <= steps - 1 for p in s)
    assert all(abs(b - a) == 1 for a, b in zip(s, s[1:]))  # one level at a time
    resampled = len(points) * (jump_n_sample - 1) * jump_length
    assert len(s) == steps + 1 + 2 * resampled  # N down moves + each jump's j up and j down
    downs = sum(b < a for a, b in zip(s, s[1:]))
    assert downs == denoising_steps(steps, jump_length, jump_n_sample) == steps + resampled
    runs = up_runs(s)
    assert all(length == jump_length for _, length in runs)  # every jump climbs j levels
    assert Counter(start for start, _ in runs) == Counter(
        {k: jump_n_sample - 1 for k in points if jump_n_sample > 1})
    # every level is denoised at least once, and the clean level is reached from 0 only once
    assert {a for a, b in zip(s, s[1:]) if b < a} == set(range(steps))
    assert s[-2] == 0


def test_the_schedule_is_diffusers_repaint_schedule():
    data = json.loads(REFERENCE.read_text())
    assert len(data["cases"]) >= 10
    for case in data["cases"]:
        steps = case["steps"]
        ours = jump_schedule(steps, case["jump_length"], case["jump_n_sample"])
        scale = data["num_train_timesteps"] // steps
        assert ours[-1] == -1
        assert [p * scale for p in ours[:-1]] == case["timesteps"], case


@pytest.mark.parametrize("args, says", [
    ((0, 2, 2), "steps must be an integer >= 1, got 0"),
    ((10, 0, 2), "jump_length must be an integer >= 1, got 0"),
    ((10, 2, 0), "jump_n_sample must be an integer >= 1, got 0"),
    ((10, True, 2), "jump_length must be an integer >= 1, got True"),
    ((10, 2, 1.5), "jump_n_sample must be an integer >= 1, got 1.5"),
])
def test_bad_schedule_counts_are_refused(args, says):
    with pytest.raises(BadConfig, match=says):
        jump_schedule(*args)
    with pytest.raises(BadConfig, match=says):
        denoising_steps(*args)


def test_the_defaults_keep_the_papers_shape():
    """250 / 10 / 10 in the paper; 50 / 2 / 10 here: the same fraction of the trajectory
    per jump, the same resamplings and jump points, a fifth of the denoising steps."""
    assert (STEPS, JUMP_LENGTH, JUMP_N_SAMPLE) == (50, 2, 10)
    assert JUMP_LENGTH / STEPS == 10 / 250
    assert denoising_steps(250, 10, 10) == 2410 and denoising_steps(50, 2, 10) == 482


# ---------------------------------------------------------------------- the undo


@given(ab_from=st.floats(1e-4, 1.0), fraction=st.floats(0.0, 1.0))
def test_the_undo_is_the_forward_transition_and_keeps_the_marginal(ab_from, fraction):
    """x_a = √(ᾱ_a/ᾱ_b)·x_b + √(1 − ᾱ_a/ᾱ_b)·ε: its coefficients, and, applied to a
    forward draw x_b of x0, mean √ᾱ_a·x0 and variance 1 − ᾱ_a (float64 closed form)."""
    ab_to = ab_from * fraction
    one, zero = torch.ones((), dtype=F64), torch.zeros((), dtype=F64)
    c_x = float(renoise(one, ab_from, ab_to, zero))
    c_e = float(renoise(zero, ab_from, ab_to, one))
    assert c_x == pytest.approx(math.sqrt(ab_to / ab_from), rel=1e-12, abs=1e-15)
    assert c_e == pytest.approx(math.sqrt(1 - ab_to / ab_from), rel=1e-12, abs=1e-15)
    # x_b = √ᾱ_b·x0 + √(1 − ᾱ_b)·ε′  →  x_a = c_x·√ᾱ_b·x0 + (c_x·√(1 − ᾱ_b)·ε′ + c_e·ε)
    assert c_x * math.sqrt(ab_from) == pytest.approx(math.sqrt(ab_to), rel=1e-12, abs=1e-15)
    assert c_x ** 2 * (1 - ab_from) + c_e ** 2 == pytest.approx(1 - ab_to, rel=1e-12,
                                                                abs=1e-15)


def test_undos_level_by_level_compose_to_one_undo_and_sample_the_marginal():
    sched = DDPMScheduler(SchedulerConfig(clip_sample=False))
    levels = [120, 340, 560, 780]  # a grid walked upwards one level at a time
    ab = [sched.alpha_bar(t) for t in levels]
    one, zero = torch.ones((), dtype=F64), torch.zeros((), dtype=F64)
    gain, var = 1.0, 0.0
    for b, a in zip(ab, ab[1:]):
        c_x, c_e = float(renoise(one, b, a, zero)), float(renoise(zero, b, a, one))
        gain, var = gain * c_x, var * c_x ** 2 + c_e ** 2
    assert gain == pytest.approx(float(renoise(one, ab[0], ab[-1], zero)), rel=1e-12)
    assert var == pytest.approx(float(renoise(zero, ab[0], ab[-1], one)) ** 2, rel=1e-12)
    # Monte Carlo, float64, fixed seed: x0 → level 120 → up to 780 matches q(x_780 | x0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.3], dtype=F64).repeat(100_000, 1)
    x = sched.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=F64), levels[0])
    for b, a in zip(ab, ab[1:]):
        x = renoise(x, b, a, torch.randn(x.shape, generator=g, dtype=F64))
    n = x.shape[0]
    mean, std = x.mean(0), x.var(0).sqrt()
    want_var = 1 - ab[-1]
    assert torch.allclose(mean, math.sqrt(ab[-1]) * x0[0], atol=5 * math.sqrt(want_var / n))
    assert torch.allclose(std ** 2, torch.full((2,), want_var, dtype=F64),
                          atol=5 * want_var * math.sqrt(2 / n))


def test_an_undo_to_a_less_noisy_level_is_refused():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="noisier level"):
        renoise(x, 0.5, 0.6, x)
    with pytest.raises(ValueError, match="noisier level"):
        renoise(x, 0.0, 0.0, x)
    assert torch.equal(renoise(x + 1, 0.5, 0.0, torch.full((2,), 3.0)),
                       torch.full((2,), 3.0))  # to ᾱ = 0 (zero-SNR top): pure noise


# -------------------------------------------------------------------- the paste


def ddim(steps: int = 10) -> DDIMScheduler:
    sched = DDIMScheduler(SchedulerConfig(clip_sample=False))
    sched.set_timesteps(steps)
    return sched


@given(st.lists(st.booleans(), min_size=2 * 16, max_size=2 * 16), st.integers(0, 9))
def test_the_paste_is_the_formula(hole_bits, index):
    """x ← (1 − m)·add_noise(x0, ε, t′) + m·x at t′ = the level after the step (float64)."""
    sched = ddim()
    t = int(sched.timesteps[index])
    level = sched.previous_timestep(t)
    x0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    m = torch.tensor(hole_bits, dtype=F64).view(2, 1, 4, 4)
    paste = KnownRegion(sched, x0, m, gens(2, seed=5))
    out = paste(index, t, x)
    eps = torch.stack([torch.randn(3, 4, 4, generator=g, dtype=F64) for g in gens(2, seed=5)])
    if level >= 0:
        known = sched.add_noise(x0, eps, level)
    else:  # past the last timestep: ᾱ = 1, x0 itself
        known = x0
    want = (1 - m) * known + m * x
    assert torch.allclose(out, want, rtol=0, atol=1e-12)
    assert torch.equal(out * m, x * m)  # the hole is the sampler's, untouched


def test_the_last_paste_is_the_known_sample_itself_and_draws_nothing():
    sched = ddim(5)
    last = int(sched.timesteps[-1])
    assert sched.previous_timestep(last) == -1 and sched.alpha_bar(-1) == 1.0
    x0, x = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2, :] = 1
    g = gens(1)
    before = g[0].get_state()
    out = KnownRegion(sched, x0, m, g)(4, last, x)
    assert torch.equal(g[0].get_state(), before)
    assert torch.equal(out, torch.where(m.bool(), x, x0))


@given(st.lists(st.booleans(), min_size=2 * 64, max_size=2 * 64),
       st.sampled_from([(8, 8), (4, 4), (2, 4), (1, 1)]))
def test_the_latent_mask_regenerates_every_cell_the_hole_touches(bits, size):
    m = torch.tensor(bits, dtype=torch.float32).view(2, 1, 8, 8)
    h, w = size
    got = latent_mask(m, size)
    want = m.view(2, 1, h, 8 // h, w, 8 // w).amax(dim=(3, 5))
    assert torch.equal(got, want)


def test_a_mask_that_does_not_tile_the_latent_grid_is_refused():
    with pytest.raises(BadConfig, match="does not tile the 3×3 latent grid"):
        latent_mask(torch.ones(1, 1, 8, 8), (3, 3))


# ----------------------------------------------------------------- the pipeline


class RowModel(nn.Module):
    """An x0 predictor, out = tanh(a·x)/2 + mean(context)/10 per row (row-independent,
    bounded: the samples stay inside [-1, 1]); counts its calls."""

    prediction_type = "sample"

    def __init__(self, channels: int = 2):
        super().__init__()
        self.in_channels = channels
        self.a = nn.Parameter(torch.tensor(0.3))
        self.calls: list[int] = []

    def forward(self, x, t, context=None, *, labels=None):
        self.calls.append(x.shape[0])
        bias = 0 if context is None else context.mean(dim=(1, 2))[:, None, None, None]
        return torch.tanh(self.a * x) / 2 + bias / 10


class LengthConditioner(nn.Module):
    """Caption -> constant states equal to its length / 10; null = -1."""

    condition_key = "caption"
    tokens, width, trainable = 3, 4, True

    def forward(self, captions):
        return torch.stack([torch.full((3, 4), len(c) / 10) for c in captions])

    def null(self, batch_size):
        return torch.full((batch_size, 3, 4), -1.0)


SAMPLE = SchedulerConfig(clip_sample=False, prediction_type="sample")


def pixel_pipe(scheduler=None) -> DiffusionPipeline:
    sched = scheduler or DDPMScheduler(SAMPLE)
    return DiffusionPipeline(RowModel(), sched, conditioner=LengthConditioner(),
                             autoencoder=gaf.create("autoencoder", "none", in_channels=2),
                             sample_shape=(2, 8, 8))


PROMPTS = ["a red circle", "a blue square above a green cross"]


def inputs(n: int = 2, channels: int = 2, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, channels, size, size, generator=g) * 2 - 1
    masks = torch.zeros(n, 1, size, size)
    masks[0, :, 2:6, 1:5] = 1
    if n > 1:
        masks[1:, :, :, size // 2:] = 1
    return images, masks


SMALL = {"steps": 6, "jump_length": 2, "jump_n_sample": 3, "guidance": 3.0}


def test_known_pixels_come_back_exactly_and_the_hole_is_generated():
    pipe = pixel_pipe()
    images, masks = inputs()
    out = pipe.inpaint(PROMPTS, images, masks, **SMALL)
    known = masks.expand_as(images) == 0
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out[known], images[known])
    assert not torch.equal(out[~known], images[~known])
    assert out.abs().max() <= 1
    double = pipe.inpaint(PROMPTS, images.double(), masks, **SMALL)  # any float dtype
    assert double.dtype == F64 and torch.equal(double[known], images.double()[known])


@pytest.mark.parametrize("first_stage", ["pixels", "kl-vae"])
def test_what_the_hole_holds_in_the_input_does_not_matter(first_stage):
    pipe = pixel_pipe() if first_stage == "pixels" else latent_pipe()
    channels = pipe.image_shape[0]
    images, masks = inputs(channels=channels)
    other = torch.where(masks.bool(), torch.rand(images.shape) * 2 - 1, images)
    assert not torch.equal(other, images)
    assert torch.equal(pipe.inpaint(PROMPTS, images, masks, **SMALL),
                       pipe.inpaint(PROMPTS, other, masks, **SMALL))


def test_one_sample_per_jump_point_is_the_plain_sampler_with_the_paste_callback():
    """jump_n_sample = 1: RePaint without resampling, the replacement method: the same
    KnownRegion object handed to a plain pipeline call gives the same image (DDPM, so
    every stochastic draw has to come in the same order too)."""
    pipe = pixel_pipe()
    images, masks = inputs()
    repainted = pipe.inpaint(PROMPTS, images, masks, steps=7, guidance=3.0, jump_n_sample=1,
                             seed=4)
    paste = pipe.known_region(images, masks, seed=4)
    latents = pipe(PROMPTS, steps=7, guidance=3.0, generators=paste.generators,
                   callback=paste, decode=False)
    assert torch.equal(repainted, paste.finish(pipe.decode(latents)))
    resampled = pipe.inpaint(PROMPTS, images, masks, steps=7, guidance=3.0, jump_n_sample=2,
                             seed=4)
    assert not torch.equal(resampled, repainted)


def test_the_hook_and_the_callback_run_after_every_denoising_step():
    seen_hook, seen_callback = [], []

    class Record:
        @gaf.hookimpl
        def gaf_sample_step(self, step, timestep, latents):
            seen_hook.append((step, timestep))

    def callback(step, t, latents):
        seen_callback.append((step, t))
        if pipe.scheduler.previous_timestep(t) == -1:  # the paste ran before the callback
            assert torch.equal(latents * (1 - latent_masks), paste_known * (1 - latent_masks))
        return torch.zeros_like(latents) if t == last else None

    pipe = pixel_pipe(ddim_unset())
    images, masks = inputs()
    latent_masks = masks
    paste_known = torch.where(masks.bool(), 0.0, images)
    plugin = Record()
    plugin_manager().register(plugin)
    try:
        pipe.scheduler.set_timesteps(SMALL["steps"])
        last = int(pipe.scheduler.timesteps[-1])
        out = pipe.inpaint(PROMPTS, images, masks, callback=callback, **SMALL)
    finally:
        plugin_manager().unregister(plugin)
    grid = pipe.scheduler.timesteps.tolist()[::-1]
    s = jump_schedule(SMALL["steps"], SMALL["jump_length"], SMALL["jump_n_sample"])
    want = [(i, grid[a]) for i, a in enumerate(a for a, b in zip(s, s[1:]) if b < a)]
    assert seen_hook == seen_callback == want
    assert len(want) == denoising_steps(SMALL["steps"], SMALL["jump_length"],
                                        SMALL["jump_n_sample"])
    # the callback's zeros at the last step are the decoded hole; the known pixels are pasted
    assert torch.equal(out, torch.where(masks.bool(), 0.0, images))
    assert pipe.noise_model.calls == [4] * len(want)  # one batched CFG call per step


def ddim_unset() -> DDIMScheduler:
    return DDIMScheduler(SAMPLE)


def test_each_image_draws_from_its_own_generator():
    pipe = pixel_pipe()
    images, masks = inputs()
    together = pipe.inpaint(PROMPTS, images, masks, seed=3, **SMALL)
    alone = pipe.inpaint(PROMPTS[1:], images[1:], masks[1:], generators=gens(1, seed=4),
                         **SMALL)
    assert torch.equal(alone[0], together[1])
    assert torch.equal(together, pipe.inpaint(PROMPTS, images, masks, seed=3, **SMALL))
    assert not torch.equal(together, pipe.inpaint(PROMPTS, images, masks, seed=9, **SMALL))


def test_null_and_empty_captions_are_an_unconditional_fill():
    pipe = pixel_pipe(ddim_unset())
    images, masks = inputs()
    steps = denoising_steps(SMALL["steps"], SMALL["jump_length"], SMALL["jump_n_sample"])
    blank = pipe.inpaint([None, "  "], images, masks, **SMALL)
    assert pipe.noise_model.calls == [2] * steps  # no CFG pair: nothing to guide towards
    assert torch.equal(blank, pipe.inpaint([None, ""], images, masks,
                                           **{**SMALL, "guidance": 1.0}))
    pipe.noise_model.calls.clear()
    mixed = pipe.inpaint([None, PROMPTS[1]], images, masks, **SMALL)
    assert pipe.noise_model.calls == [4] * steps
    assert torch.equal(mixed[0], blank[0]) and not torch.equal(mixed[1], blank[1])
    unconditional = DiffusionPipeline(RowModel(), ddim_unset(), sample_shape=(2, 8, 8),
                                      autoencoder=gaf.create("autoencoder", "none",
                                                             in_channels=2))
    assert unconditional.inpaint([None, None], images, masks, **SMALL).shape == images.shape


def test_a_multistep_scheduler_is_refused_where_the_schedule_jumps_back():
    class Multistep(DDIMScheduler):
        def new_state(self):
            return {"calls": 0}

        def step(self, model_output, t, sample, *, generator=None, state=None, **kw):
            state["calls"] += 1
            return super().step(model_output, t, sample, generator=generator)

    pipe = pixel_pipe(Multistep(SAMPLE))
    images, masks = inputs()
    with pytest.raises(BadConfig, match="multistep sampler Multistep cannot follow.*"
                                        "jump_n_sample=1"):
        pipe.inpaint(PROMPTS, images, masks, **SMALL)
    out = pipe.inpaint(PROMPTS, images, masks, **{**SMALL, "jump_n_sample": 1})
    assert out.shape == images.shape  # no jump: its state follows the steps


def bad_masks():
    _, m = inputs()
    grey = m.clone()
    grey[0, 0, 0, 0] = 0.5
    empty = m.clone()
    empty[1] = 0
    full = m.clone()
    full[0] = 1
    return [
        (grey, "masks: image 0's mask is not binary"),
        (empty, "masks: image 1's mask is empty"),
        (full, "masks: image 0's mask is full"),
        (m[:, :, :4], r"masks: expected masks of shape \(2, 1, 8, 8\)"),
        (m.expand(2, 2, 8, 8), r"masks: expected masks of shape \(2, 1, 8, 8\)"),
    ]


@pytest.mark.parametrize("masks, says", bad_masks())
def test_masks_that_are_not_binary_empty_full_or_of_the_wrong_shape_are_refused(masks, says):
    pipe = pixel_pipe()
    images, _ = inputs()
    with pytest.raises(BadData, match=says):
        pipe.inpaint(PROMPTS, images, masks, **SMALL)


def bad_images():
    images, _ = inputs()
    nan = images.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        (images[:, :, :4], r"images: expected \(2, 2, 8, 8\) .*got \(2, 2, 4, 8\)"),
        (images[:1], r"images: expected \(2, 2, 8, 8\) \(one per condition"),
        (images[0], r"images: expected a tensor \(2, 2, 8, 8\), got \(2, 8, 8\)"),
        (images.numpy(), r"images: expected a tensor \(2, 2, 8, 8\), got ndarray"),
        (images * 2, r"images: values must lie in \[-1, 1\]"),
        (nan, "images: some values are NaN or infinite"),
        (((images + 1) * 127.5).to(torch.uint8), "images: expected floats in .* torch.uint8"),
    ]


@pytest.mark.parametrize("images, says", bad_images())
def test_images_of_the_wrong_shape_range_or_type_are_refused(images, says):
    pipe = pixel_pipe()
    _, masks = inputs()
    with pytest.raises(BadData, match=says):
        pipe.inpaint(PROMPTS, images, masks, **SMALL)


def test_bad_requests_are_clear_errors():
    pipe = pixel_pipe()
    images, masks = inputs()
    with pytest.raises(BadConfig, match="no prompts"):
        pipe.inpaint([], images, masks)
    with pytest.raises(BadConfig, match="jump_length must be >= 1"):
        pipe.inpaint(PROMPTS, images, masks, jump_length=0)
    with pytest.raises(BadConfig, match="jump_n_sample must be >= 1"):
        pipe.inpaint(PROMPTS, images, masks, jump_n_sample=0)
    with pytest.raises(BadConfig, match=r"steps=5000: .*\[1, 1000\]"):
        pipe.inpaint(PROMPTS, images, masks, steps=5000)
    with pytest.raises(BadConfig, match="unknown key 'jump_lenght'; did you mean 'jump_length'"):
        pipe.inpaint_options(jump_lenght=3)
    paste = pipe.known_region(images, masks)
    with pytest.raises(BadConfig, match="the paste holds"):
        pipe(PROMPTS[:1], steps=2, callback=paste)
    with pytest.raises(BadConfig, match=r"the step callback returned Tensor \(1, 2, 8, 8\)"):
        pipe.inpaint(PROMPTS, images, masks, callback=lambda i, t, x: x[:1], **SMALL)


def test_the_inpaint_options_are_documented_and_match_the_call():
    from gaf.config import describe, to_dict

    assert DiffusionPipeline.InpaintOptions is InpaintOptions
    defaults = to_dict(InpaintOptions())
    assert defaults == {"steps": STEPS, "guidance": 3.0, "jump_length": JUMP_LENGTH,
                        "jump_n_sample": JUMP_N_SAMPLE}
    assert all(f.help for f in describe(InpaintOptions))
    params = inspect.signature(DiffusionPipeline.inpaint).parameters
    assert {k: params[k].default for k in defaults} == defaults


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_inpaint_evaluations_per_image_counts_the_calls(guidance):
    pipe = pixel_pipe()
    images, masks = inputs()
    options = {**SMALL, "guidance": guidance}
    pipe.inpaint(PROMPTS, images, masks, **options)
    rows = sum(pipe.noise_model.calls) / len(PROMPTS)
    calls = denoising_steps(SMALL["steps"], SMALL["jump_length"], SMALL["jump_n_sample"])
    assert rows == calls * (2 if guidance != 1.0 else 1)
    assert pipe.inpaint_evaluations_per_image(**options) == rows + 1  # + the text encoder


class GaussianOracle(nn.Module):
    """The exact x0 predictor E[x0 | x_t] for two-pixel images x0 ~ N(0, Σ):
    √ᾱ·Σ·(ᾱΣ + (1 − ᾱ)I)⁻¹·x_t (jointly Gaussian), in float64."""

    prediction_type = "sample"
    in_channels = 1

    def __init__(self, sched, cov):
        super().__init__()
        self.sched, self.cov = sched, cov
        self.gains: dict[int, torch.Tensor] = {}

    def forward(self, x, t, context=None):
        t = int(t)
        if t not in self.gains:
            ab = self.sched.alpha_bar(t)
            inner = ab * self.cov + (1 - ab) * torch.eye(2, dtype=F64)
            self.gains[t] = math.sqrt(ab) * self.cov @ torch.linalg.inv(inner)
        v = x.reshape(x.shape[0], 2).double()
        return (v @ self.gains[t].T).float().reshape(x.shape)


def test_resampling_brings_the_fill_closer_to_the_true_conditional():
    """RePaint's claim on data whose conditional is known: two pixels with correlation
    0.95 and std 0.5, the first known (0.8), the second generated with the exact
    denoiser. The true conditional is N(0.95·0.8, 0.25·(1 − 0.95²)); the replacement
    method (r = 1) lands far below its mean, resampling (r = 5) clearly nearer (300
    images, fixed seeds)."""
    rho, known = 0.95, 0.8
    cov = 0.25 * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)
    sched = DDPMScheduler(SAMPLE)
    pipe = DiffusionPipeline(GaussianOracle(sched, cov), sched, sample_shape=(1, 1, 2),
                             autoencoder=gaf.create("autoencoder", "none", in_channels=1))
    n = 300
    images = torch.zeros(n, 1, 1, 2)
    images[..., 0] = known
    masks = torch.zeros(n, 1, 1, 2)
    masks[..., 1] = 1
    errors = {}
    for r in (1, 5):
        fill = pipe.inpaint([None] * n, images, masks, steps=20, jump_length=2,
                            jump_n_sample=r)[:, 0, 0, 1].double()
        errors[r] = abs(float(fill.mean()) - rho * known)
    # a fill's mean has a standard error of about 0.01 here (std ≈ 0.17, 300 images)
    assert errors[1] > 0.15  # the replacement method's bias
    assert errors[1] - errors[5] > 0.08  # resampling removes a good part of it


# ------------------------------------------------------------- a latent pipeline


@functools.cache
def latent_pipe() -> DiffusionPipeline:
    """One tiny kl-vae pipeline for the module (its convolutions warm up once)."""
    torch.manual_seed(0)
    ae = gaf.create("autoencoder", "kl-vae", downsample=2, latent_channels=2,
                    base_channels=8, num_groups=4, attention=False).eval()
    ae.scale_factor = 0.7
    return DiffusionPipeline(RowModel(), DDPMScheduler(SAMPLE),
                             conditioner=LengthConditioner(), autoencoder=ae,
                             sample_shape=(2, 4, 4))


def test_a_latent_pipeline_encodes_pastes_in_latent_space_and_pastes_pixels_last():
    pipe = latent_pipe()
    assert pipe.image_shape == (3, 8, 8)
    images, masks = inputs(channels=3)
    paste = pipe.known_region(images, masks)
    with torch.no_grad():
        blanked = torch.where(masks.bool(), 0.0, images)
        want = pipe.autoencoder.encode(blanked) * 0.7
    assert torch.allclose(paste.known, want, atol=1e-6)
    assert torch.equal(paste.hole.float(), latent_mask(masks, (4, 4)))
    out = pipe.inpaint(PROMPTS, images, masks, **SMALL)
    known = masks.expand_as(images) == 0
    assert out.shape == images.shape and torch.equal(out[known], images[known])
    assert pipe.inpaint_evaluations_per_image(**SMALL) == (
        denoising_steps(6, 2, 3) * 2 + 2 + 1)  # CFG pair, encode + decode, text encoder
    with pytest.raises(BadData, match=r"images: expected \(2, 3, 8, 8\)"):
        pipe.inpaint(PROMPTS, images[:, :2], masks, **SMALL)
