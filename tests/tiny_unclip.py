"""The ``--set`` list of a tiny pixel-space ``unclip`` run (16×16, 64 images, 3 steps, a
1-layer prior; evaluated on 4 captions without FD or CLIP score), for the tests that
train one; the CLIP comes from tests/t2i/conftest.py's ``tiny_clip`` (16-d, 16 wide)."""

from __future__ import annotations

TINY = ["dataset.resolution=16", "dataset.size=64", "noise-model.channels=[8, 16]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "noise-model.cond_dim=16", "noise-model.in_channels=3", "prior.embed_dim=16",
        "prior.text_width=16", "prior.width=16", "prior.heads=2", "prior.layers=1",
        "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=0",
        "objective.eval_images=4", "objective.eval_steps=2", "objective.eval_prior_steps=2",
        "objective.eval_batch_size=4", "objective.fd=false", "objective.grid_prompts=2",
        "objective.throughput_batch=4", "objective.eval_guidance=[1.0, 3.0]",
        "objective.eval_clip_steps=0", "objective.variation_images=2",
        "objective.variations_per_image=2", "progress=false"]
