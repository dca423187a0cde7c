"""The frozen text encoder of an ``imagen`` run: named, or trained on the captions first.

:func:`text_encoder_stage` gives the run's conditioner. With the ``lm-text`` conditioner
and no ``conditioner.lm`` it trains the language model first, as a run of its own in
``RUN_DIR/text_encoder/`` (a resumed run reuses it):

1. the **distinct captions of the training split**, each with a prefix space (the form
   ``lm-text`` encodes), are written to ``RUN_DIR/text_encoder/captions.jsonl`` as
   ``{"text": …}`` records: the text-only corpus (nothing of the images);
2. the ``sft`` objective trains a GPT-2 policy (``gpt2-tiny`` with the ``shapes-bpe``
   tokenizer and the objective's ``text_encoder_layers``, ``text_encoder_width`` and
   ``text_encoder_heads``) on it with the ``jsonl`` task: plain next-token prediction on
   the captions, 5% of them held out for its ``eval_loss``;
3. the trained policy is loaded as ``lm-text`` and frozen.

``clip-text`` without a CLIP trains one first (:func:`gaf.plugins.clip.stage.
clip_text_stage`, the CLIP arm of the encoder ablation); any other conditioner (the
jointly trained ``text-transformer``, a named ``lm``) is the run's component as given.
"""

from __future__ import annotations

import json
from typing import Any

from gaf.atomic import atomic_write_text

__all__ = ["text_encoder_stage", "TRAINED_HERE"]

#: the ``source`` of a language model trained inside the run
TRAINED_HERE = "text_encoder"


def text_encoder_stage(ctx: Any, dataset: Any, *, steps: int, layers: int, width: int,
                       heads: int, clip_steps: int) -> tuple[Any, str]:
    """``(conditioner, source)`` (module doc): ``source`` is ``"text_encoder"`` or
    ``"clip"`` for an encoder trained in this run, the path of a named one, else ``""``."""
    comp = ctx.spec.components["conditioner"]
    if comp.name == "clip-text":
        from ...clip.stage import clip_text_stage

        return clip_text_stage(ctx, dataset, clip_steps)
    if comp.name != "lm-text" or comp.options.get("lm"):
        return ctx.component("conditioner"), comp.options.get("lm", "")
    stage = ctx.run_dir / TRAINED_HERE
    if not (stage / "policy" / "gaf.json").is_file():
        from gaf.launch import train_stage

        from ..training_data import conditions_of

        stage.mkdir(parents=True, exist_ok=True)
        corpus = stage / "captions.jsonl"
        captions = dict.fromkeys(conditions_of(dataset, "caption"))
        if ctx.world.is_main:
            lines = (json.dumps({"text": c if c[:1].isspace() else " " + c}) for c in captions)
            atomic_write_text(corpus, "\n".join(lines) + "\n")
        ctx.world.barrier()
        ctx.log(f"training the text encoder, a {layers}-layer {width}-wide GPT-2, on "
                f"{len(captions)} captions alone ({steps} steps) in {stage}")
        policy = {"name": "gpt2-tiny", "tokenizer": "shapes-bpe", "n_layer": layers,
                  "d_model": width, "n_head": heads, "n_positions": 64}
        train_stage(ctx, stage, "sft", (), {"steps": steps, "batch_size": 64, "lr": 3e-3,
                                            "warmup_steps": 50, "schedule": "cosine",
                                            "log_every": 50},
                    components={"policy": policy,
                                "task": {"name": "jsonl", "path": str(corpus)},
                                "objective": {"samples": 16, "max_new_tokens": 24}},
                    label="text encoder stage")
    cond = ctx.registry.create("conditioner", "lm-text", lm=str(stage),
                               **{k: v for k, v in comp.options.items() if k != "lm"})
    return cond.to(ctx.device), TRAINED_HERE
