"""``diffusion-dpo`` end to end on a tiny base run: pairs sampled and labelled by a
generation CLIP (cached; a re-opened run reads the cache), the per-step metrics, the
first step at ``ln 2``, the ldm evaluation, and the exported pipeline; the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

import gaf
from gaf.errors import BadConfig

pytestmark = pytest.mark.slow


def dpo_sets(base, out, name, *more):
    return [f"out_dir={json.dumps(str(out))}", f"name={json.dumps(name)}",
            f"objective.init_run={json.dumps(str(base))}", "objective.prompts=3",
            "objective.samples_per_prompt=3", "objective.sample_steps=2",
            "objective.eval_batch_size=8", "train.steps=3", "train.batch_size=4",
            "train.log_every=1", "train.warmup_steps=0", "train.lr=0.001", "progress=false",
            *more]


def test_sampled_pairs_train_log_evaluate_and_export(base_run, tiny_clip, tmp_path,
                                                     monkeypatch):
    eval_sets = ["objective.eval_images=4", "objective.eval_steps=2", "objective.fd=false",
                 "objective.grid_prompts=0", "objective.throughput_batch=4",
                 "objective.eval_guidance=[1.0]", "objective.eval_clip_steps=2"]
    run_dir, summary = gaf.run("diffusion-dpo", sets=dpo_sets(
        base_run, tmp_path, "dpo", f"objective.reward_clip={json.dumps(str(tiny_clip))}",
        *eval_sets))
    rows = [json.loads(x) for x in (run_dir / "data" / "preferences.jsonl").read_text()
            .splitlines()]
    assert rows and len({r["prompt"] for r in rows}) <= 3
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    assert len(list((run_dir / "data" / "images").glob("*.png"))) == 9
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference
    # h = 0 up to round-off: the UNet's no-grad kernels (the reference's) and its
    # training kernels differ in the last bits; test_loss checks h == 0 exactly
    assert abs(log[0]["margin"]) < 1e-6
    for r in log:
        assert {"implicit_accuracy", "margin", "reward_margin"} <= set(r)
        assert r["reward_margin"] > 0
    assert any(abs(r["margin"]) > 1e-6 for r in log[1:])  # the policy moved off the reference
    assert "trainable_parameters" in summary and "sampling_s" in summary
    # the exported pipeline: the fine-tuned noise model with the base run's other parts
    pipe = gaf.REGISTRY.get("pipeline", "diffusion").from_run(run_dir)
    base = gaf.REGISTRY.get("pipeline", "diffusion").from_run(base_run)
    tuned = dict(pipe.noise_model.state_dict())
    assert any(not torch.equal(v, base.noise_model.state_dict()[k]) for k, v in tuned.items())
    images = pipe(["a red circle"], steps=2, guidance=1.0, seed=0)
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()
    # re-opening the run (gaf eval) reads the cached pairs: nothing is sampled again
    import gaf.plugins.t2i.diffusion_dpo.objective as objective

    def no_sampling(*a, **k):
        raise AssertionError("sampled again")

    monkeypatch.setattr(objective, "sample_preferences", no_sampling)
    from gaf.launch import evaluate_run

    assert evaluate_run(run_dir, ("objective.eval_images=0",)) == {}


def test_the_evaluation_clip_cannot_label_the_pairs(base_run, tmp_path):
    judge = tmp_path / "judge"
    with pytest.raises(BadConfig, match="is the evaluation CLIP"):
        gaf.run("diffusion-dpo", sets=dpo_sets(
            base_run, tmp_path, "judged", f"objective.reward_clip={json.dumps(str(judge))}",
            f"objective.eval_clip_dir={json.dumps(str(judge))}"))


def test_a_missing_base_run_is_a_usage_error(tmp_path):
    with pytest.raises(BadConfig, match="objective.init_run"):
        gaf.run("diffusion-dpo", sets=[f"out_dir={json.dumps(str(tmp_path))}",
                                       "progress=false"])
    with pytest.raises(BadConfig, match="no such directory"):
        gaf.run("diffusion-dpo", sets=[f"out_dir={json.dumps(str(tmp_path))}",
                                       "objective.init_run=\"/nonexistent/run\"",
                                       "progress=false"])


def test_a_latent_base_run_records_its_first_stage_by_absolute_path(base_run, pair_file,
                                                                     tmp_path):
    """A base run whose first stage is a saved autoencoder inside it (what ``ldm`` writes
    as ``first_stage/autoencoder``): the fine-tuned run encodes the pairs with it and its
    pipeline.json points at it by absolute path, so it samples from anywhere."""
    import shutil

    latent = tmp_path / "latent-base"
    shutil.copytree(base_run, latent)
    ae = gaf.create("autoencoder", "kl-vae", downsample=1, base_channels=8, num_groups=4)
    gaf.save(ae, latent / "first_stage" / "autoencoder")
    meta = json.loads((latent / "pipeline.json").read_text())
    meta["autoencoder"] = {"path": "first_stage/autoencoder"}
    (latent / "pipeline.json").write_text(json.dumps(meta))
    run_dir, _ = gaf.run("diffusion-dpo", sets=[
        f"out_dir={json.dumps(str(tmp_path / 'runs'))}", "name=\"latent\"",
        f"objective.init_run={json.dumps(str(latent))}",
        f"task.path={json.dumps(str(pair_file))}", "objective.eval_images=0",
        "train.steps=1", "train.batch_size=2", "progress=false"])
    written = json.loads((run_dir / "pipeline.json").read_text())
    assert written["autoencoder"] == {"path": str(latent / "first_stage" / "autoencoder")}
    assert written["conditioner"]["name"] == str(latent / "conditioner_ema")
    assert written["init_run"] == str(latent)
    pipe = gaf.REGISTRY.get("pipeline", "diffusion").from_run(run_dir)
    assert type(pipe.autoencoder).__name__ == type(ae).__name__
    assert torch.isfinite(pipe(["a red circle"], steps=2, guidance=1.0)).all()
