"""The ``ldm`` objective end to end at toy sizes: pixel and latent space (with the
first stage trained inside the run), EMA, exact resumes, the evaluation, and sampling
a finished run from Python and from ``gaf sample --pipeline``."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import gaf
from gaf.cli import main
from gaf.config import OptionError, from_dict
from gaf.errors import BadConfig, Interrupted
from gaf.hooks import plugin_manager
from gaf.plugins.t2i.ldm import LDMConfig
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline

TINY = ["dataset.resolution=16", "dataset.size=64", "noise-model.channels=[8, 16]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "conditioner.width=16", "conditioner.layers=1", "conditioner.heads=2",
        "train.steps=4", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=0",
        "objective.eval_images=4", "objective.eval_steps=2", "objective.eval_batch_size=4",
        "objective.fd=false", "objective.grid_prompts=2", "objective.first_stage_steps=3",
        "objective.throughput_batch=4", "objective.eval_clip_steps=2"]


def run(tmp_path, *extra, autoencoder="none", name="run", **components):
    tiny = [s for s in TINY if components.get("conditioner", "text-transformer")
            == "text-transformer" or not s.startswith(("conditioner.layers",
                                                         "conditioner.heads"))]
    sets = [f"out_dir={json.dumps(str(tmp_path))}", f"name={name}", *tiny, *extra]
    if autoencoder == "none":
        sets.append("noise-model.in_channels=3")
    return gaf.run("ldm", autoencoder=autoencoder, sets=sets, **components)


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ldm"))


def test_pixel_space_run_trains_evaluates_and_exports(pixel_run):
    run_dir, summary = pixel_run
    assert summary["status"] == "completed"
    for name in ("noise_model", "conditioner", "noise_model_ema", "conditioner_ema"):
        assert (run_dir / name / "gaf.json").is_file(), name
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["sample_shape"] == [3, 16, 16] and meta["autoencoder"]["name"] == "none"
    for key in ("g1_exact", "g3_colour", "g7_position", "floor_exact", "ceiling_exact",
                "unseen_exact", "unseen_attrs_colour", "swapped_exact",
                "swapped_pair_binding"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["ceiling_exact"] == 1.0  # the evaluator reads real images exactly
    # the evaluation CLIP's figures, from the CLIP trained in RUN_DIR/evaluation_clip
    for key in ("clip_score", "clip_score_floor", "clip_score_real", "g3_clip_score"):
        assert 0.0 <= summary[key] <= 2.5, key
    for key in ("clip_r_precision", "clip_r_precision_real", "clip_r_precision_floor"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert json.loads((run_dir / "evaluation_clip" / "gaf.json").read_text())[
        "config"]["image_tower"] == "vit"
    assert summary["unseen_n"] == 4 and summary["swapped_n"] == 4
    # the headline row is fd_guidance = 3: the g3 sweep entry is the same samples
    assert summary["unseen_exact"] == summary["g3_exact"]
    assert summary["evaluations_per_image"] == 2 * 2 + 1  # 2 guided steps + 1
    assert summary["images_per_s"] > 0 and summary["train_s"] > 0
    assert summary["frozen_parameters"] == 0  # pixel space: no first stage
    assert summary["trainable_parameters"] == summary["parameters"]
    assert Image.open(run_dir / "samples" / "grid.png").size[1] > 3 * 16
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all("loss" in r and r["loss"] > 0 for r in records)


def test_ema_modules_differ_from_the_trained_ones_and_follow_the_formula(pixel_run):
    run_dir, _ = pixel_run
    trained = load_file(str(run_dir / "noise_model" / "model.safetensors"))
    ema = load_file(str(run_dir / "noise_model_ema" / "model.safetensors"))
    assert trained.keys() == ema.keys()
    assert any(not torch.equal(trained[k], ema[k]) for k in trained)


def test_sampling_a_finished_run_is_deterministic_and_swaps_schedulers(pixel_run):
    run_dir, _ = pixel_run
    pipe = DiffusionPipeline.from_run(run_dir)
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"  # as trained
    a = pipe(["a red circle in the middle"], steps=3, seed=0)
    b = pipe(["a red circle in the middle"], steps=3, seed=0)
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b)
    ddim = DiffusionPipeline.from_run(run_dir, scheduler="ddim", ema=False)
    assert type(ddim.scheduler).__name__ == "DDIMScheduler"
    assert ddim.scheduler.config.num_train_timesteps == pipe.scheduler.config.num_train_timesteps


def test_gaf_sample_pipeline_writes_a_grid(pixel_run, tmp_path):
    run_dir, _ = pixel_run
    out = tmp_path / "grid.png"
    args = ["sample", "--pipeline", str(run_dir), "--prompt", "a red circle above a blue square",
            "--prompt", "a green cross", "-n", "3", "--scheduler", "ddim", "--steps", "3",
            "--guidance", "3", "--seed", "0", "--out", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 image(s) written" in result.output
    grid = Image.open(out)
    assert grid.size == (3 * 18 + 2, 2 * 18 + 2)  # 2 rows of 3, 2-pixel padding
    first = out.read_bytes()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert out.read_bytes() == first  # same seed, same grid
    bad = CliRunner().invoke(main, [*args[:7], "--scheduler", "ddmi"])
    assert bad.exit_code == 2 and "ddim" in bad.output  # close match offered
    typo = CliRunner().invoke(main, [*args[:7], "--set", "etaa=1"])
    assert typo.exit_code == 2 and "unknown option 'etaa'" in typo.output
    assert "eta" in typo.output
    both = CliRunner().invoke(main, ["sample", "--prompt", "x"])
    assert both.exit_code == 2 and "exactly one of --policy" in both.output
    not_run = CliRunner().invoke(main, ["sample", "--pipeline", str(tmp_path), "--prompt", "x"])
    assert not_run.exit_code == 2 and "pipeline.json" in not_run.output


def test_dropped_conditions_use_the_null_whatever_the_caption(pixel_run, tmp_path):
    from gaf.config import from_dict
    from gaf.runs import RunContext
    from gaf.spec import resolve

    spec = resolve(objective="ldm", components={"autoencoder": "none"},
                   sets=[*TINY, "noise-model.in_channels=3"])
    cls = gaf.REGISTRY.get("objective", "ldm")
    obj = cls(from_dict(cls.Config, {"p_uncond": 0.5}))
    obj.setup(RunContext(spec, tmp_path))
    for p in obj.noise_model.parameters():  # zero-initialised outputs hide the context
        torch.nn.init.normal_(p, std=0.1)
    batch = obj.train_batch(0)
    n = len(batch["conditions"])
    other = dict(batch, conditions=["a yellow diamond in the bottom right"] * n)
    obj.noise_model.eval()
    with torch.no_grad():
        for drop, same in ((torch.ones(n, dtype=torch.bool), True),
                           (torch.zeros(n, dtype=torch.bool), False)):
            a, _ = obj.loss(dict(batch, drop=drop))
            b, _ = obj.loss(dict(other, drop=drop))
            assert (float(a) == float(b)) is same


def test_an_interrupted_run_resumes_to_the_same_weights_and_ema(tmp_path):
    whole_dir, _ = run(tmp_path, "train.save_every=2", "objective.eval_images=0", name="whole")

    class Stop:
        @gaf.hookimpl
        def gaf_step_end(self, step):
            if step == 3:
                raise KeyboardInterrupt

    stop = Stop()
    plugin_manager().register(stop)
    try:
        with pytest.raises(Interrupted):
            run(tmp_path, "train.save_every=2", "objective.eval_images=0", name="cut")
    finally:
        plugin_manager().unregister(stop)
    from gaf.launch import execute, load_run_spec

    cut = tmp_path / "cut"
    execute(load_run_spec(cut), resume=cut)
    for name in ("noise_model", "noise_model_ema", "conditioner_ema"):
        a = load_file(str(whole_dir / name / "model.safetensors"))
        b = load_file(str(cut / name / "model.safetensors"))
        for k in a:  # (in-process: MKL may round differently, see test_distributed)
            assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (name, k)


def test_latent_run_trains_its_first_stage_then_reuses_it(tmp_path):
    sets = ["objective.eval_images=2", "objective.grid_prompts=0"]
    small = ["autoencoder.base_channels=8", "autoencoder.num_groups=4"]
    run_dir, summary = run(tmp_path, *sets, *small, autoencoder="kl-vae")
    stage = run_dir / "first_stage"
    assert (stage / "autoencoder" / "gaf.json").is_file()
    assert json.loads((stage / "summary.json").read_text())["steps"] == 3
    ae = gaf.load("autoencoder", stage / "autoencoder")
    assert ae.scale_factor_fitted
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["autoencoder"] == {"path": "first_stage/autoencoder"}
    assert meta["sample_shape"] == [3, 4, 4]
    assert meta["scheduler"]["config"]["clip_sample"] is False  # latents are not clipped
    # a second run given the trained first stage does not train another
    again, again_summary = run(tmp_path, *sets, name="again", autoencoder=str(stage))
    assert not (again / "first_stage").exists()
    # the method's training wall time: from the run's start to its last step (the first
    # stage trained inside it counted once), plus a reused first stage's own run
    stage_summary = json.loads((stage / "summary.json").read_text())
    assert summary["train_wall_s"] == pytest.approx(_last_elapsed(run_dir), abs=0.01)
    assert _last_elapsed(run_dir) > stage_summary["train_s"]
    assert again_summary["train_wall_s"] == pytest.approx(
        _last_elapsed(again) + stage_summary["setup_s"] + stage_summary["train_s"], abs=0.02)
    pipe = DiffusionPipeline.from_run(again)
    assert pipe(["a red circle"], steps=2).shape == (1, 3, 16, 16)


def _last_elapsed(run_dir):
    return max(json.loads(x)["elapsed_s"]
               for x in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_v_prediction_and_class_conditioning_go_through_the_same_path(tmp_path):
    run_dir, summary = run(tmp_path, "noise-model.prediction_type=v_prediction",
                           "conditioner.num_classes=30", "objective.eval_images=2",
                           conditioner="class")
    pipe = DiffusionPipeline.from_run(run_dir)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe(["3", "7"], steps=2).shape == (2, 3, 16, 16)
    assert "g3_colour" in summary and "g3_position" not in summary  # labels say no position


def test_mismatched_components_are_clear_errors(tmp_path):
    with pytest.raises(BadConfig, match="noise-model.context_dim=16"):
        run(tmp_path, "noise-model.context_dim=32", name="ctx")
    with pytest.raises(BadConfig, match="noise-model.in_channels=3"):
        gaf.run("ldm", autoencoder="none", sets=[
            f"out_dir={json.dumps(str(tmp_path))}", *TINY, "noise-model.in_channels=4"])
    with pytest.raises(BadConfig, match="p_uncond"):
        run(tmp_path, "objective.p_uncond=1.5", name="p")


@pytest.mark.parametrize("options, message", [
    ({"p_uncond": 1.0}, "p_uncond must be in [0, 1), got 1"),
    ({"ema_decay": math.nan}, "ema_decay must be in [0, 1), got nan"),
    ({"first_stage_steps": -1}, "first_stage_steps must be >= 0, got -1"),
    ({"eval_steps": 0}, "eval_steps must be >= 1, got 0"),
    ({"eval_guidance": (1.0, -1.0)}, "eval_guidance must be >= 0 (each entry), got [1.0, -1.0]"),
    ({"fd_guidance": math.inf}, "fd_guidance must be finite, got inf"),
])
def test_ldm_options_are_declared(options, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
        LDMConfig(**options)
    with pytest.raises(OptionError, match=f"^objective ldm: {re.escape(message)}$"):
        from_dict(LDMConfig, options, where="objective ldm")


def test_gaf_eval_reproduces_the_evaluation_of_a_finished_run(pixel_run):
    run_dir, summary = pixel_run
    result = CliRunner().invoke(main, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    for key in ("g1_exact", "g3_colour", "floor_colour", "ceiling_exact"):
        assert metrics[key] == summary[key], key  # same weights, same seeds


def test_a_frozen_conditioner_is_left_untrained_and_rebuilt_for_sampling(tmp_path):
    from gaf.plugins.conditioners import ClassEmbedding

    class FrozenLabels(ClassEmbedding):
        trainable = False

    gaf.REGISTRY.add("conditioner", "frozen-labels-test", FrozenLabels, summary="test",
                     replace=True)
    run_dir, _ = run(tmp_path, "objective.eval_images=0", conditioner="frozen-labels-test")
    assert not (run_dir / "conditioner").exists()
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["conditioner"]["name"] == "frozen-labels-test"
    assert "conditioner" not in meta["modules"]
    pipe = DiffusionPipeline.from_run(run_dir)
    assert isinstance(pipe.conditioner, FrozenLabels)
    assert pipe(["3"], steps=2).shape == (1, 3, 16, 16)
