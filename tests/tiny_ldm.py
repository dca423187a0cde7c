"""The ``--set`` list of a tiny pixel-space ``ldm`` run (16×16, 64 images, 2 steps,
evaluated on 4 captions without FD, with a
2-step evaluation CLIP) for the tests of scripts that read a finished run."""

from __future__ import annotations

BASE = {
    "dataset.resolution": "16", "dataset.size": "64", "noise-model.channels": "[8, 16]",
    "noise-model.norm_groups": "4", "noise-model.heads": "2", "noise-model.context_dim": "16",
    "noise-model.in_channels": "3", "conditioner.width": "16", "conditioner.layers": "1",
    "conditioner.heads": "2", "train.steps": "2", "train.batch_size": "8",
    "train.log_every": "1", "train.warmup_steps": "0", "objective.eval_images": "4",
    "objective.eval_steps": "2", "objective.eval_batch_size": "4", "objective.fd": "false",
    "objective.grid_prompts": "0", "objective.throughput_batch": "4",
    "objective.eval_guidance": "[1.0, 3.0]", "objective.eval_clip_steps": "2",
}


def tiny_ldm_sets(**changes: str) -> list[str]:
    """``KEY=VALUE`` items of :data:`BASE` with ``changes`` (keys with ``__`` for ``.``:
    ``objective__eval_steps="3"``)."""
    merged = {**BASE, **{k.replace("__", "."): v for k, v in changes.items()}}
    return [f"{k}={v}" for k, v in merged.items()]
