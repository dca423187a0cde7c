"""``unclip`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end with
identical decoders, priors and EMA shadows, and those equal one process trained on the
two ranks' batches put together (each rank draws its own noise and drops from the
``("unclip-noise", step, shard start)`` stream, as ``ldm``'s: see
tests/t2i/test_ldm_distributed.py)."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_unclip import TINY  # tests/ is on sys.path (conftest)
from torchrun_launch import assert_two_ranks_equal_merged, two_ranks_and_merged

pytestmark = pytest.mark.slow


def test_two_ranks_agree_and_equal_one_merged_process(tmp_path, tiny_clip):
    sets = [f"conditioner.clip={json.dumps(str(tiny_clip))}", *TINY, "train.lr=1e-3",
            "objective.eval_images=0", "objective.ema_decay=0.9", "device=\"cpu\"",
            "objective.p_drop_embedding=0.5", "objective.p_drop_prior_text=0.5"]
    weights = two_ranks_and_merged("unclip", sets, tmp_path,
                                   components={"autoencoder": "none"})
    assert_two_ranks_equal_merged(
        weights, tmp_path, {"noise_model", "prior", "noise_model_ema", "prior_ema"},
        [1, 2, 3], ("loss", "loss_decoder", "loss_prior"))
    r0 = weights[0]
    # the weights moved: the trained prior is not its EMA shadow
    assert not torch.equal(r0["prior.out_proj.weight"], r0["prior_ema.out_proj.weight"])
