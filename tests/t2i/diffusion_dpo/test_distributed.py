"""``diffusion-dpo`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end with
identical weights, equal to one process trained on the two ranks' batches put together
(each rank draws its own ``t`` and ``ε`` from its first position; the loss is a mean
over equal shares, so the all-reduced gradient is the merged batch's)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

# tests/ is on sys.path
from torchrun_launch import assert_two_ranks_equal_merged, two_ranks_and_merged

pytestmark = pytest.mark.slow


def test_two_ranks_agree_and_equal_one_merged_process(base_run, pair_file, tmp_path):
    sets = [f"objective.init_run={json.dumps(str(base_run))}",
            f"task.path={json.dumps(str(pair_file))}", "objective.eval_images=0",
            "objective.beta=5000", "train.steps=3", "train.batch_size=4", "train.lr=1e-3",
            "train.log_every=1", "train.warmup_steps=0", "device=\"cpu\"", "progress=false"]
    weights = two_ranks_and_merged("diffusion-dpo", sets, tmp_path)
    assert_two_ranks_equal_merged(weights, tmp_path, {"noise_model"}, [1, 2, 3],
                                  ("loss", "margin", "implicit_accuracy"))
    base = load_file(str(base_run / "noise_model_ema" / "model.safetensors"))
    r0 = weights[0]
    moved = sum(not torch.equal(r0[key], base[key.removeprefix("noise_model.")])
                for key in r0)
    assert moved  # trained (so the agreement is not that of untouched copies)
