"""The diffusion sampling loop: guidance, one batched CFG call, per-sample generators,
the step callback and hook, multistep scheduler state, and its errors. The noise model
and conditioner here are small stand-ins whose outputs are known in closed form."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import gaf
from gaf.errors import BadConfig
from gaf.hooks import plugin_manager
from gaf.plugins.diffusion.schedulers import DDIMScheduler, DDPMScheduler, SchedulerConfig
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline, guided_prediction


class RowModel(nn.Module):
    """out = a·x + mean(context) per row (row-independent); counts its calls."""

    prediction_type = "epsilon"
    in_channels = 2

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.calls: list[int] = []

    def forward(self, x, t, context=None, *, labels=None):
        self.calls.append(x.shape[0])
        bias = 0 if context is None else context.mean(dim=(1, 2))[:, None, None, None]
        return self.a * x + bias


class LengthConditioner(nn.Module):
    """Caption -> constant states equal to its length / 10; null = -1."""

    condition_key = "caption"
    tokens, width, trainable = 3, 4, True

    def __init__(self):
        super().__init__()
        self.encoded = 0
        self.nulls = 0

    def forward(self, captions):
        self.encoded += 1
        return torch.stack([torch.full((3, 4), len(c) / 10) for c in captions])

    def null(self, batch_size):
        self.nulls += 1
        return torch.full((batch_size, 3, 4), -1.0)


def make(scheduler=None):
    sched = scheduler or DDIMScheduler(SchedulerConfig(clip_sample=False))
    return DiffusionPipeline(RowModel(), sched, conditioner=LengthConditioner(),
                             autoencoder=gaf.create("autoencoder", "none", in_channels=2),
                             sample_shape=(2, 4, 4))


PROMPTS = ["a red circle", "a blue square above a green cross", "top left: a cyan diamond"]


def test_guidance_one_equals_the_conditional_prediction():
    model = RowModel()
    x = torch.randn(3, 2, 4, 4)
    cond, null = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    batched = torch.cat([null, cond])
    assert torch.equal(guided_prediction(model, x, 10, cond, null, 1.0, batched=False),
                       model(x, 10, cond))
    # the batched [uncond; cond] call at s = 1 also gives exactly the conditional half
    out_u, out_c = model(torch.cat([x, x]), 10, batched).chunk(2)
    assert torch.allclose(out_u + 1.0 * (out_c - out_u), model(x, 10, cond), atol=1e-6)


@given(st.floats(0.0, 12.0))
def test_guided_prediction_is_the_cfg_formula_in_one_batched_call(scale):
    model = RowModel()
    x = torch.randn(2, 2, 4, 4)
    cond, null = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    want = model(x, 5, null) + scale * (model(x, 5, cond) - model(x, 5, null))
    model.calls.clear()
    got = guided_prediction(model, x, 5, torch.cat([null, cond]), None, scale)
    assert torch.allclose(got, want, atol=1e-5)
    assert model.calls == [4]  # one call over the stacked batch
    unbatched = guided_prediction(model, x, 5, cond, null, scale, batched=False)
    assert torch.allclose(unbatched, want, atol=1e-5)


def test_one_batched_model_call_per_step_and_the_null_encoded_once():
    pipe = make()
    pipe(PROMPTS, steps=7, guidance=3.0)
    assert pipe.noise_model.calls == [6] * 7
    assert pipe.conditioner.encoded == 1 and pipe.conditioner.nulls == 1
    pipe.noise_model.calls.clear()
    pipe(PROMPTS, steps=7, guidance=1.0)  # no guidance: the conditional half only
    assert pipe.noise_model.calls == [3] * 7


def test_sampling_is_deterministic_for_a_seed_and_differs_across_seeds():
    pipe = make(DDPMScheduler(SchedulerConfig(clip_sample=False)))  # stochastic steps too
    a = pipe(PROMPTS, steps=10, seed=0, decode=False)
    b = pipe(PROMPTS, steps=10, seed=0, decode=False)
    c = pipe(PROMPTS, steps=10, seed=1, decode=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generators_are_per_sample_so_batching_does_not_change_an_image():
    pipe = make(DDPMScheduler(SchedulerConfig(clip_sample=False)))
    together = pipe(PROMPTS, steps=10, seed=3, decode=False)
    g = [torch.Generator().manual_seed(3 + i) for i in range(3)]
    for i, prompt in enumerate(PROMPTS):
        alone = pipe([prompt], steps=10, generators=[g[i]], decode=False)
        assert torch.allclose(alone[0], together[i], atol=1e-6)


def test_the_prompt_matters_and_guidance_changes_the_image():
    pipe = make()
    a = pipe(["a red circle", "a much longer caption about a big blue square"], steps=5,
             decode=False)
    assert not torch.allclose(a[0], a[1])
    assert not torch.allclose(pipe(PROMPTS, steps=5, guidance=1.0, decode=False),
                              pipe(PROMPTS, steps=5, guidance=5.0, decode=False))


def test_step_callback_sees_every_step_and_can_edit_the_latents():
    pipe = make()
    seen = []

    def callback(step, t, latents):
        seen.append((step, t, tuple(latents.shape)))
        return torch.zeros_like(latents) if step == 4 else None

    out = pipe(PROMPTS, steps=5, callback=callback, decode=False)
    assert [s for s, _, _ in seen] == list(range(5))
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()
    assert torch.equal(out, torch.zeros(3, 2, 4, 4))
    with pytest.raises(BadConfig, match="step callback returned"):
        pipe(PROMPTS, steps=2, callback=lambda s, t, x: x[:1])


def test_the_sample_step_hook_can_replace_the_latents():
    class Paste:
        @gaf.hookimpl
        def gaf_sample_step(self, step, timestep, latents):
            return torch.full_like(latents, 0.25)

    pipe = make()
    plugin = Paste()
    plugin_manager().register(plugin)
    try:
        hooked = pipe(PROMPTS, steps=3, decode=False)
        unhooked = pipe(PROMPTS, steps=3, decode=False, hooks=False)
    finally:
        plugin_manager().unregister(plugin)
    assert torch.equal(hooked, torch.full((3, 2, 4, 4), 0.25))
    assert not torch.equal(unhooked, hooked)


def test_a_multistep_scheduler_gets_a_fresh_state_per_sampling_call():
    class Multistep(DDIMScheduler):
        states: list[dict] = []

        def new_state(self):
            state = {"calls": 0}
            self.states.append(state)
            return state

        def step(self, model_output, t, sample, *, generator=None, state=None, **kw):
            state["calls"] += 1
            return super().step(model_output, t, sample, generator=generator)

    pipe = make(Multistep(SchedulerConfig(clip_sample=False)))
    pipe(PROMPTS, steps=4)
    pipe(PROMPTS, steps=6)
    assert [s["calls"] for s in Multistep.states] == [4, 6]


def test_images_are_decoded_and_clamped():
    pipe = make()
    latents = pipe(PROMPTS, steps=3, guidance=12.0, decode=False)
    images = pipe(PROMPTS, steps=3, guidance=12.0)
    assert latents.abs().max() > 1.0  # so the clamp is exercised
    assert torch.equal(images, latents.clamp(-1, 1))


def test_bad_requests_are_clear_errors(tmp_path):
    pipe = make()
    with pytest.raises(BadConfig, match="no prompts"):
        pipe([], steps=3)
    with pytest.raises(BadConfig, match="guidance must be >= 0"):
        pipe(PROMPTS, guidance=-1.0)
    with pytest.raises(BadConfig, match="2 generators for 3 conditions"):
        pipe(PROMPTS, generators=[torch.Generator(), torch.Generator()])
    with pytest.raises(BadConfig, match="predicts 'epsilon' but the scheduler"):
        DiffusionPipeline(RowModel(), DDIMScheduler(SchedulerConfig(
            prediction_type="v_prediction")), sample_shape=(2, 4, 4))
    with pytest.raises(BadConfig, match="no pipeline.json"):
        DiffusionPipeline.from_run(tmp_path)
    (tmp_path / "pipeline.json").write_text("{not json")
    with pytest.raises(gaf.errors.BadData, match="pipeline.json"):
        DiffusionPipeline.from_run(tmp_path)
    (tmp_path / "pipeline.json").write_text(json.dumps({
        "modules": {"noise_model": "noise_model"}, "autoencoder": {"name": "none"},
        "scheduler": {"name": "ddpm", "config": {}}, "sample_shape": [3, 8, 8]}))
    with pytest.raises(BadConfig, match="did the run finish"):
        DiffusionPipeline.from_run(tmp_path)
    with pytest.raises(BadConfig, match=r"steps=5000: .*\[1, 1000\]"):
        pipe(PROMPTS, steps=5000)  # more steps than the model was trained with


GOOD_META = {"pipeline": "diffusion", "modules": {"noise_model": "noise_model"},
             "autoencoder": {"name": "none"}, "conditioner": None,
             "scheduler": {"name": "ddim", "config": {}}, "sample_shape": [2, 4, 4]}


@pytest.mark.parametrize("edit, says", [
    (lambda m: m.pop("modules"), "field 'modules': missing"),
    (lambda m: m.update(modules=["noise_model"]), "field 'modules': expected an object"),
    (lambda m: m.update(modules={"noise_model": 5}),
     "field 'modules.noise_model': expected a directory inside the run, got 5"),
    (lambda m: m.update(modules={"noise_model": "../elsewhere"}),
     "field 'modules.noise_model': expected a directory inside the run"),
    (lambda m: m.update(modules={"conditioner": "noise_model"}),
     "field 'modules.noise_model': missing"),
    (lambda m: m.update(sample_shape="x"), "field 'sample_shape': expected a list, got 'x'"),
    (lambda m: m.update(sample_shape=[2, -4, 4]),
     "field 'sample_shape': expected positive integers"),
    (lambda m: m.update(scheduler=3), "field 'scheduler': expected an object, got 3"),
    (lambda m: m.update(scheduler={"config": {}}), "field 'scheduler.name'"),
    (lambda m: m.pop("autoencoder"), "field 'autoencoder': missing"),
    (lambda m: m.update(autoencoder={"name": 4}), "field 'autoencoder.name'"),
    (lambda m: m.update(conditioner={"name": "clip-text", "options": 3}),
     "field 'conditioner.options': expected a table"),
    (lambda m: m.update(pipeline=7), "field 'pipeline': expected a string, got 7"),
])
def test_a_hand_edited_pipeline_json_is_refused_naming_the_field(tmp_path, edit, says):
    """Every field from_run reads is checked before anything is built from it."""
    meta = json.loads(json.dumps(GOOD_META))
    edit(meta)
    (tmp_path / "noise_model").mkdir()
    (tmp_path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(gaf.errors.BadData, match="pipeline.json: " + re.escape(says)):
        DiffusionPipeline.from_run(tmp_path)


def test_a_pipeline_json_that_is_not_utf8_or_an_object_is_refused(tmp_path):
    (tmp_path / "pipeline.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(gaf.errors.BadData, match="pipeline.json: cannot read"):
        DiffusionPipeline.from_run(tmp_path)
    (tmp_path / "pipeline.json").write_text("[1, 2]")
    with pytest.raises(gaf.errors.BadData, match="pipeline.json: expected a JSON object"):
        DiffusionPipeline.from_run(tmp_path)


# ------------------------------------------------------------- the ``pipeline`` kind


class CountingAutoencoder(nn.Module):
    """A first stage with a parameter (so its decode counts); counts decoded images."""

    scale_factor = 1.0

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.decoded = 0

    def encode(self, x):
        return x

    def decode(self, z):
        self.decoded += z.shape[0]
        return self.w * z


def test_diffusion_pipeline_meets_the_pipeline_protocol_and_is_registered():
    from gaf.config import describe, to_dict
    from gaf.interfaces import Pipeline

    pipe = make()
    assert isinstance(pipe, Pipeline)
    assert gaf.REGISTRY.get("pipeline", "diffusion") is DiffusionPipeline
    assert to_dict(DiffusionPipeline.Options()) == {"steps": 50, "guidance": 3.0}
    assert all(f.help for f in describe(DiffusionPipeline.Options))
    with pytest.raises(BadConfig, match="steps must be >= 1"):
        pipe(PROMPTS, steps=0)
    with pytest.raises(BadConfig, match="unknown key 'stepz'; did you mean 'steps'"):
        pipe.options(stepz=3)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("first_stage", ["none", "counting"])
def test_evaluations_per_image_counts_the_networks_the_call_runs(steps, guidance, first_stage):
    """The declared count equals what one call really runs, per image: noise-model rows
    (the batched CFG pair is 2 rows), condition-encoder calls (one per batch, i.e. one
    per image's caption) and first-stage decodes (none for the parameter-free ``none``)."""
    pipe = make()
    if first_stage == "counting":
        pipe.autoencoder = CountingAutoencoder()
    n = len(PROMPTS)
    pipe(PROMPTS, steps=steps, guidance=guidance)
    denoiser = sum(pipe.noise_model.calls) / n
    decodes = pipe.autoencoder.decoded / n if first_stage == "counting" else 0
    encoder = pipe.conditioner.encoded  # one encoder pass over the batch: once per caption
    want = steps * (2 if guidance != 1.0 else 1) + decodes + encoder
    assert denoiser == steps * (2 if guidance != 1.0 else 1)
    assert pipe.evaluations_per_image(steps=steps, guidance=guidance) == want
    unconditional = DiffusionPipeline(RowModel(), DDIMScheduler(SchedulerConfig()),
                                      sample_shape=(2, 4, 4))
    assert unconditional.evaluations_per_image(steps=steps, guidance=guidance) == steps
    assert make().evaluations_per_image() == 50 * 2 + 1  # the Options defaults


def test_a_run_naming_another_pipeline_is_refused(tmp_path):
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline": "mean-colour"}))
    with pytest.raises(BadConfig, match="names pipeline 'mean-colour'"):
        DiffusionPipeline.from_run(tmp_path)


@pytest.mark.parametrize("name", gaf.names("pipeline"))
def test_every_registered_pipeline_declares_the_contract(name):
    """What gaf show and gaf sample rely on before any run is loaded: a from_run
    classmethod taking device=, a call taking generators= and seed=, and an attrs
    Options whose every field has a default and help text."""
    import inspect

    import attrs

    from gaf.config import describe

    cls = gaf.REGISTRY.get("pipeline", name)
    assert isinstance(inspect.getattr_static(cls, "from_run"), classmethod)
    assert "device" in inspect.signature(cls.from_run).parameters
    call = inspect.signature(cls.__call__).parameters
    assert {"conditions", "generators", "seed"} <= set(call)
    assert callable(getattr(cls, "evaluations_per_image", None))
    assert attrs.has(cls.Options)
    fields = describe(cls.Options)
    assert fields and all(f.help for f in fields)
    assert all(f.default is not attrs.NOTHING for f in attrs.fields(cls.Options))
