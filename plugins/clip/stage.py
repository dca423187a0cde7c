"""The generation CLIP of a text-to-image run: named, or trained as the run's first stage.

:func:`clip_text_stage` gives the frozen ``clip-text`` conditioner that GAN-INT-CLS and
unCLIP build on. With ``--set conditioner.clip=RUN_DIR`` (a trained ``clip`` run, which
several runs can share) it is that CLIP; else a CLIP is trained for ``steps`` steps on
the run's dataset in ``RUN_DIR/clip/`` (a resumed run reuses it). This CLIP generates;
the evaluation's CLIP (:mod:`.evaluation_clip`) is another design with other weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..images.batches import stack_images

__all__ = ["clip_text_stage", "reused_clip"]

#: the ``source`` of a CLIP trained inside the run (``RUN_DIR/clip``)
TRAINED_HERE = "clip"


def clip_text_stage(ctx: Any, dataset: Any, steps: int) -> tuple[Any, str]:
    """``(conditioner, source)``: the run's ``conditioner`` component when it is not
    ``clip-text`` or names its CLIP (``source`` is that CLIP's path, or ``""``); else
    ``clip-text`` over a CLIP trained (or, on resume, found) in ``RUN_DIR/clip/``
    (``source`` is ``"clip"``)."""
    comp = ctx.spec.components["conditioner"]
    if comp.name != "clip-text" or comp.options.get("clip"):
        return ctx.component("conditioner"), comp.options.get("clip", "")
    from gaf.launch import train_stage

    stage = ctx.run_dir / TRAINED_HERE
    if not (stage / "encoder" / "gaf.json").is_file():
        shape = tuple(stack_images(dataset, [0]).shape[1:])
        ctx.log(f"training the generation CLIP ({steps} steps) in {stage}")
        train_stage(ctx, stage, "clip", ("dataset",), {"steps": steps},
                    components={"encoder": {"name": "clip", "in_channels": shape[0],
                                            "resolution": shape[-1]}},
                    label="clip stage")
    cond = ctx.registry.create("conditioner", "clip-text", clip=str(stage))
    return cond.to(ctx.device), TRAINED_HERE


def reused_clip(source: str) -> Path | None:
    """The saved encoder of a CLIP reused from another run (``conditioner.clip``), from
    :func:`clip_text_stage`'s ``source``; None when the run trained its own or has none
    (for :func:`gaf.plugins.t2i.evaluation.train_wall_seconds`)."""
    return Path(source) / "encoder" if source and source != TRAINED_HERE else None
