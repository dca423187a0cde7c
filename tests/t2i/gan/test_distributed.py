"""``gan-int-cls-modern`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Rank ``r`` takes its contiguous half of each global batch; the generator and the
spectral-norm projection discriminator run under DDP, with DF-GAN's matching-aware
gradient penalty (a double backward through the DDP-wrapped discriminator) and the
generator's loss through the discriminator's detached weights (outside DDP). Both
ranks must end with identical weights: every parameter of both players and of the
generator's EMA copy, and the discriminator's spectral-norm vectors. (The generator's
BatchNorm statistics are each rank's own: gaf's DDP does not synchronise buffers.)
"""

from __future__ import annotations

import json

import pytest
import torch

from torchrun_launch import train_ranks  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

def test_two_ranks_end_with_the_same_weights(tmp_path, tiny_clip):
    sets = [f"conditioner.clip={json.dumps(str(tiny_clip))}", "dataset.resolution=16",
            "dataset.size=64", "generator.resolution=16", "generator.width=8",
            "generator.text_dim=16", "discriminator.resolution=16", "discriminator.width=8",
            "discriminator.text_dim=16", "objective.ma_gp=2.0", "train.steps=4",
            "train.batch_size=8",
            "train.log_every=1", "objective.eval_images=0", "device=\"cpu\"",
            "progress=false"]
    r0, r1 = train_ranks("gan-int-cls-modern", sets, tmp_path, "two", 2)
    assert r0.keys() == r1.keys()
    compared = 0
    for key in r0:
        if "running_" in key or "num_batches_tracked" in key:  # the generator's BatchNorm
            continue
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=key)
        compared += 1
    assert any(k.startswith("discriminator.") and "_u" in k for k in r0)  # spectral norm
    assert any(k.startswith("generator_ema.") for k in r0) and compared > 20
    # the generator moved (its EMA copy lags behind it), so the equality is not that of
    # two untouched copies
    moved = [k for k in r0 if k.startswith("generator.") and "running_" not in k
             and "num_batches" not in k
             and not torch.equal(r0[k], r0["generator_ema." + k[len("generator."):]])]
    assert moved
    log = [json.loads(x) for x in (tmp_path / "two" / "run" / "metrics.jsonl")
           .read_text().splitlines()]
    assert len(log) == 4 and all(x["ma_gp"] >= 0 for x in log)
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in log)
