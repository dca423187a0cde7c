"""A run's generation CLIP and its evaluation CLIP differ (issue 16).

An ``ldm`` run conditioned on a trained CLIP's frozen text tower (``clip-text``) is
evaluated by the shared evaluation, whose CLIP score and R-precision come from the
evaluation CLIP trained in ``RUN_DIR/evaluation_clip``: another image-tower design,
another seed, other weights. Handing the evaluation the generation CLIP is refused.
"""

from __future__ import annotations

import json

import pytest

import gaf
from gaf.errors import BadConfig
from gaf.plugins.clip.evaluation_clip import fingerprint
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline
from gaf.plugins.t2i.evaluation import evaluate_pipeline

pytestmark = pytest.mark.slow

CLIP = ["dataset.resolution=16", "dataset.size=64", "encoder.resolution=16",
        "encoder.embed_dim=16", "encoder.image_width=8", "encoder.image_heads=2",
        "encoder.text_width=16", "encoder.text_layers=1", "encoder.text_heads=2",
        "train.steps=2", "train.batch_size=16", "train.warmup_steps=0",
        "objective.eval_pairs=16"]
LDM = ["dataset.resolution=16", "dataset.size=64", "noise-model.channels=[8, 16]",
       "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
       "noise-model.in_channels=3", "train.steps=2", "train.batch_size=8",
       "train.warmup_steps=0", "objective.eval_images=4", "objective.eval_steps=2",
       "objective.eval_batch_size=4", "objective.fd=false", "objective.grid_prompts=0",
       "objective.throughput_batch=4", "objective.eval_guidance=[3.0]",
       "objective.eval_clip_steps=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_vs_eval")
    clip_dir, clip_summary = gaf.run("clip", sets=[f"out_dir={json.dumps(str(out))}",
                                                   "name=clip", *CLIP])
    ldm_dir, ldm_summary = gaf.run(
        "ldm", autoencoder="none", conditioner="clip-text",
        sets=[f"out_dir={json.dumps(str(out))}", "name=ldm", *LDM,
              f"conditioner.clip={json.dumps(str(clip_dir))}"])
    return clip_dir, clip_summary, ldm_dir, ldm_summary


def test_the_generation_clip_is_not_the_evaluation_clip(runs):
    clip_dir, _, ldm_dir, summary = runs
    meta = json.loads((ldm_dir / "pipeline.json").read_text())
    assert meta["conditioner"] == {"name": "clip-text",
                                   "options": {"clip": str(clip_dir.resolve())}}
    pipe = DiffusionPipeline.from_run(ldm_dir)
    generation = pipe.conditioner.clip
    evaluation = gaf.load("encoder", ldm_dir / "evaluation_clip")
    assert generation.config.image_tower == "cnn" and evaluation.config.image_tower == "vit"
    assert fingerprint(generation) != fingerprint(evaluation)
    assert 0.0 <= summary["clip_score"] <= 2.5 and "clip_r_precision" in summary
    # the frozen tower is not trained by the ldm run: it is not among its modules
    assert not (ldm_dir / "conditioner").exists()


def test_evaluating_with_the_generation_clip_is_refused(runs, tmp_path):
    clip_dir, _, ldm_dir, _ = runs
    pipe = DiffusionPipeline.from_run(ldm_dir)
    ds = gaf.create("dataset", "shapes", resolution=16, size=64)
    eval_ds = gaf.create("dataset", "shapes", resolution=16, size=64, split="eval")
    kwargs = dict(train_ds=ds, eval_ds=eval_ds, n_captions=2, fd_images=0,
                  throughput_batch=0, batch_size=2, log=lambda s: None)
    with pytest.raises(BadConfig, match="must never generate, guide or rerank"):
        evaluate_pipeline(pipe, {"steps": 1}, clip_model=gaf.load("encoder", clip_dir),
                          **kwargs)
    # nor is a generation CLIP's directory taken for an evaluation CLIP's (or overwritten)
    before = (clip_dir / "encoder" / "model.safetensors").read_bytes()
    with pytest.raises(BadConfig, match="not an evaluation CLIP"):
        evaluate_pipeline(pipe, {"steps": 1}, clip_dir=clip_dir / "encoder", clip_steps=2,
                          **kwargs)
    assert (clip_dir / "encoder" / "model.safetensors").read_bytes() == before
