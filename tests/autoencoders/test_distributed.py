"""The ``autoencoder`` objective under ``torchrun --nproc_per_node 2`` (gloo, CPU).

What must hold, and what the objective promises against one process:

* both ranks end with identical weights (autoencoder and discriminator), also once
  the GAN is on: the adaptive weight λ is computed from each rank's own gradients
  (a per-rank scalar), but only the averaged gradient is stepped;
* ``vqgan`` with the GAN off and no dead-code restarts equals the one-process run with
  the same global batch: every loss term is a mean over the batch, the ranks' shares
  are equal and the EMA codebook statistics are summed over the ranks. With the
  KL autoencoder the posterior sample ``z = μ + σ ε`` draws ``ε`` from each rank's own
  generator (seeded per rank), and once the GAN is on λ is a per-shard value, so those
  runs are not the one-process run, only self-consistent across ranks;
* ``vqgan``'s codebook (EMA updates and dead-code restarts, in ``forward``, outside the
  gradient all-reduce) stays identical across ranks: the quantizer sums its counts and
  sums over the ranks and restarts codes with rank 0's vectors. Restarts draw from
  rank 0's RNG, so with them a run is consistent across ranks but not the
  one-process run.
"""

from __future__ import annotations

import json

import pytest
import torch
from torchrun_launch import train_ranks, two_ranks_and_merged  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

BASE = ["dataset.resolution=16", "dataset.size=32", "autoencoder.base_channels=8",
        "autoencoder.num_groups=4", "autoencoder.num_res_blocks=0",
        "objective.disc_channels=8", "objective.disc_layers=1", "train.batch_size=8",
        "train.log_every=1", "train.warmup_steps=0", "device=\"cpu\"", "progress=false"]


def launch(tmp_path, name, first_stage, sets, nproc):
    """Train the autoencoder objective (first stage ``first_stage``) as ``nproc``
    processes into ``tmp_path/name``; each rank's final weights."""
    return train_ranks("autoencoder", [*BASE, *sets], tmp_path, name, nproc,
                       components={"autoencoder": first_stage})


def metrics(tmp_path, name):
    path = tmp_path / name / "run" / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, float((a[k].float() - b[k].float()).abs().max()))


def test_kl_ranks_agree_with_the_gan_on(tmp_path):
    r0, r1 = launch(tmp_path, "two", "kl-vae", ["train.steps=3", "objective.disc_start=1"], 2)
    assert {k.split(".")[0] for k in r0} == {"autoencoder", "discriminator"}
    assert_same(r0, r1)
    log = metrics(tmp_path, "two")
    assert "d_loss" not in log[0] and "d_loss" in log[-1]  # the GAN switched on at step 2


def test_vq_codebook_ranks_agree_with_ema_and_restarts(tmp_path):
    """The EMA codebook and the dead-code restarts update in ``forward``, outside DDP:
    the quantizer all-reduces its counts and sums and broadcasts rank 0's restart
    vectors, so the ranks' codebooks stay identical (they drifted apart before 443fa45)."""
    r0, r1 = launch(tmp_path, "two", "vqgan", ["train.steps=2", "objective.disc_start=100",
                                               "autoencoder.n_embed=64",
                                               "autoencoder.restart_after=1"], 2)
    assert_same(r0, r1)
    assert any(r["restarts"] > 0 for r in metrics(tmp_path, "two"))  # restarts did happen


def test_vq_equals_one_process_with_the_same_global_batch(tmp_path):
    """GAN off and no restarts (they draw from the rank's RNG): every term is a mean over
    the batch and the EMA statistics are sums over it, so 2 ranks are 1 process."""
    sets = ["train.steps=3", "objective.disc_start=100", "autoencoder.restart_after=0",
            "train.lr=1e-3"]
    r0, r1, single = two_ranks_and_merged("autoencoder", [*BASE, *sets], tmp_path,
                                          merge=False, components={"autoencoder": "vqgan"})
    assert_same(r0, r1)
    for k in r0:
        assert torch.allclose(r0[k].float(), single[k].float(), atol=1e-5, rtol=0), \
            (k, float((r0[k].float() - single[k].float()).abs().max()))
    two, one = metrics(tmp_path, "two"), metrics(tmp_path, "one")
    for a, b in zip(two, one):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    assert one[0]["loss"] != one[-1]["loss"]  # it trained
