"""``dalle`` and ``parti`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): each rank trains on its
half of every global batch (its own captions dropped to the null caption), both ranks
end with identical weights, and those equal a one-process run on the same global
batches within round-off."""

from __future__ import annotations

import json

import pytest
import torch

import gaf

from torchrun_launch import two_ranks_and_merged  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("objective", ["dalle", "parti"])
def test_two_ranks_match_each_other_and_one_process(tmp_path, objective):
    vq, _ = gaf.run("autoencoder", autoencoder="vqgan", sets=[
        f"out_dir={json.dumps(str(tmp_path))}", "name=\"vq\"", "dataset.resolution=16",
        "dataset.size=64", "autoencoder.base_channels=8", "autoencoder.num_groups=4",
        "autoencoder.n_embed=16", "autoencoder.attention=false", "train.steps=2",
        "train.batch_size=8", "objective.eval_images=8"])
    sets = [f"autoencoder.name={json.dumps(str(vq))}", "dataset.resolution=16",
            "dataset.size=64",
            "token-model.rows=4", "token-model.cols=4", "token-model.codebook=16",
            "token-model.d_model=32", "token-model.n_layer=1", "token-model.n_head=2",
            *(["token-model.encoder_layers=1"] if objective == "parti" else []),
            "objective.p_uncond=0.5", "train.steps=3", "train.batch_size=8",
            "train.log_every=1", "train.warmup_steps=0", "objective.eval_images=0",
            "device=\"cpu\"",
            "progress=false"]
    # (one process: the plain run on the same global batches, not a merged one)
    r0, r1, one = two_ranks_and_merged(objective, sets, tmp_path, merge=False)
    assert {k.split(".")[0] for k in r0} == {"token_model"}
    for key in r0:
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(r0[key], one[key], rtol=1e-5, atol=1e-5, msg=key)
    log = [json.loads(x) for x in (tmp_path / "two" / "run" / "metrics.jsonl")
           .read_text().splitlines()]
    assert len(log) == 3 and all(0 <= x["dropped"] <= 1 for x in log)
    assert all(x["grad_norm"] > 0 and x["lr"] > 0 for x in log)  # the weights moved
