"""Options of the shared training loop (:func:`gaf.train.train`), kept torch-free."""

from __future__ import annotations

from typing import Literal

import attrs

from .config import option, option_error

#: the most steps a run may ask for (a value beyond it is a typo, not a plan)
MAX_STEPS = 10**9


def _two_betas(inst: object, attribute: object, value: object) -> None:
    if value is not None and len(value) != 2:  # type: ignore[arg-type]
        raise option_error("betas", "must be two numbers [β1, β2]", value)


@attrs.define
class TrainConfig:
    """How :func:`gaf.train.train` optimises an objective (the ``[train]`` section)."""

    steps: int = option(500, "optimiser steps", ge=1, le=MAX_STEPS)
    batch_size: int = option(32, "examples per micro-batch", ge=1)
    grad_accum: int = option(1, "micro-batches per optimiser step (effective batch = "
                                "batch_size × grad_accum)", ge=1)
    lr: float = option(1e-3, "peak learning rate", gt=0)
    optimizer: Literal["adamw", "adam", "rmsprop", "sgd"] = option("adamw", "optimiser")
    betas: tuple[float, float] = option((0.9, 0.999), "Adam β1, β2", ge=0, lt=1,
                                        validator=_two_betas)
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW) or L2 (others)", ge=0)
    schedule: Literal["constant", "linear", "cosine"] = option(
        "cosine", "learning-rate decay after warm-up")
    warmup_steps: int = option(0, "linear warm-up steps from 0 to lr", ge=0)
    max_grad_norm: float = option(1.0, "gradient clipping by global norm (0 = off)", ge=0)
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "auto = bf16 autocast on CUDA, fp32 on CPU")
    log_every: int = option(10, "write metrics.jsonl every N steps", ge=1)
    save_every: int = option(0, "checkpoint every N steps (0 = only at the end)", ge=0)
    keep_checkpoints: int = option(2, "how many checkpoints to keep", ge=1)
    parallel: Literal["ddp", "fsdp"] = option(
        "ddp", "with several processes: 'ddp' replicates the model, 'fsdp' shards "
               "parameters, gradients and optimizer state (docs/distributed.md)")
