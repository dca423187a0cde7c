"""The ``--set`` list of a tiny ``image-to-image`` run (16×16 shapes, 64 images, 3
steps, a 1-layer 16-wide caption encoder; evaluated on 4 items with 2 sampling steps,
FD off), for the tests that train one."""

from __future__ import annotations

TINY = ["dataset.resolution=16", "dataset.size=64", "noise-model.channels=[8, 16]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "noise-model.attention_levels=[1]", "conditioner.width=16", "conditioner.layers=1",
        "conditioner.heads=2", "train.steps=3", "train.batch_size=8", "train.log_every=1",
        "train.warmup_steps=0", "objective.eval_images=4", "objective.eval_steps=2",
        "objective.eval_batch_size=4", "objective.fd=false", "progress=false"]
