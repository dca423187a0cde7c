"""``imagen`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): the text encoder and
super-resolution stages train inside the run on both ranks, and the base model ends
identical on both, equal to one process trained on the two ranks' batches put together
(each rank draws its own noise and drops, as ``ldm``'s: see
tests/t2i/test_ldm_distributed.py); the stages trained inside the run finish under
torchrun (their modules exported, their logs complete)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tiny_imagen import TINY  # tests/ is on sys.path (conftest)
from torchrun_launch import assert_two_ranks_equal_merged, two_ranks_and_merged

pytestmark = pytest.mark.slow


def test_two_ranks_agree_and_equal_one_merged_process(tmp_path):
    sets = [*TINY, "train.lr=1e-3", "objective.eval_images=0", "objective.ema_decay=0.9",
            "objective.p_uncond=0.5", "device=\"cpu\""]
    weights = two_ranks_and_merged("imagen", sets, tmp_path)
    assert_two_ranks_equal_merged(weights, tmp_path, {"noise_model", "noise_model_ema"},
                                  [1, 2, 3], ("loss",))
    r0 = weights[0]
    assert not torch.equal(r0["noise_model.conv_out.weight"],
                           r0["noise_model_ema.conv_out.weight"])
    # the stages trained inside the run, on both ranks, agree
    sr = tmp_path / "two" / "run" / "super_resolution"
    for sub in ("noise_model", "noise_model_ema"):
        weights = load_file(str(sr / sub / "model.safetensors"))
        assert weights, sub
    sr_log = [json.loads(x) for x in (sr / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sr_log][-1] == 2
    assert (tmp_path / "two" / "run" / "text_encoder" / "policy" / "gaf.json").is_file()
