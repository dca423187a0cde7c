"""The ``--set`` list of a tiny ``imagen`` run (32×32 shapes, a 16×16 base, 64 images, 3
steps per stage, a 1-layer 16-wide text encoder trained for 3 steps; evaluated on 4
captions without FD or CLIP score), for the tests that train one."""

from __future__ import annotations

TINY = ["dataset.size=64", "noise-model.channels=[8, 16]", "noise-model.level_layers=[1, 2]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "noise-model.attention_levels=[1]",
        "objective.text_encoder_steps=3", "objective.text_encoder_layers=1",
        "objective.text_encoder_width=16", "objective.text_encoder_heads=2",
        "objective.sr_steps=2", "train.steps=3", "train.batch_size=8", "train.log_every=1",
        "train.warmup_steps=0", "objective.eval_images=4", "objective.eval_steps=2",
        "objective.eval_sr_steps=2", "objective.eval_batch_size=4", "objective.fd=false",
        "objective.grid_prompts=2", "objective.throughput_batch=4",
        "objective.eval_guidance=[1.0, 3.0]", "objective.eval_aug_sweep=[0.5]",
        "objective.eval_clip_steps=0", "progress=false"]
