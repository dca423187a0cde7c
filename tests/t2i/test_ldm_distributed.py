"""``ldm`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): what must hold across ranks.

* Both ranks end with identical weights: the noise model, the conditioner and both
  EMA shadows.
* The conditioner's learned ``null`` context, which the loss reads through
  ``conditioner.null`` outside DDP's forward (classifier-free-guidance dropout), gets
  its gradient all-reduced like every other parameter: after every step its gradient
  is the same on both ranks although the ranks dropped different captions, and it
  moved during training (so the equality is not that of two untouched copies).
* The EMA shadows follow ``θ̄_n = d_n θ̄_{n−1} + (1 − d_n) θ_n`` with
  ``d_n = min(decay, (1 + n)/(10 + n))`` (:mod:`gaf.plugins.nn.ema`) on every rank,
  checked in float64 after every step.

What the objective promises against one process: the same images per step (rank r
takes its contiguous share of the global batch, :meth:`World.shard`), but not the same
draws: ``t``, ``ε`` and the dropout come from the stream ``("ldm-noise", step, shard
start)``, so each shard draws its own and a 2-rank run is not the plain 1-rank run with
the same global batch (unlike the language-model objectives,
tests/core/test_distributed.py). It is the 1-rank run on the two ranks' batches put
together: checked by a single process whose ``train_batch`` concatenates what ranks 0
and 1 would draw, which must end where the two ranks end (the loss is a mean over
equal shares, so the all-reduced mean gradient is the global one).
"""

from __future__ import annotations

import json

import pytest
import torch

from gaf.distributed import World
from torchrun_launch import two_ranks_and_merged  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

SETS = ["dataset.resolution=16", "dataset.size=32", "noise-model.channels=[8, 16]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "noise-model.in_channels=3", "noise-model.attention_levels=[1]",
        "noise-model.mid_attention=false",
        "conditioner.width=16", "conditioner.layers=1", "conditioner.heads=2",
        "train.steps=4", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=0",
        "train.lr=1e-3", "objective.p_uncond=0.5", "objective.ema_decay=0.9",
        "device=\"cpu\"", "progress=false"]

# Run before training (tests/torchrun_launch.py): after every step records, per rank,
# the null context's gradient and the largest deviation of the EMA shadows from the
# formula, and every step's dropout draws (saved to OUT/record<r>.json).
SETUP = '''
    from gaf.plugins.nn.ema import ema_decay
    record = {"null_grad": [], "ema_error": [], "dropped": []}

    loss = obj.loss
    def recording_loss(batch):
        record["dropped"].append(batch["drop"].tolist())
        return loss(batch)
    obj.loss = recording_loss

    after = obj.after_step
    def checking_after_step(step):
        pairs = [(obj.ema["noise_model_ema"], obj.noise_model),
                 (obj.ema["conditioner_ema"], obj.conditioner)]
        before = [[p.detach().double().clone() for p in s.parameters()] for s, _ in pairs]
        after(step)
        d, err = ema_decay(spec.objective_config.ema_decay, step), 0.0
        for (shadow, model), old in zip(pairs, before):
            for s, p, o in zip(shadow.parameters(), model.parameters(), old):
                want = d * o + (1 - d) * p.detach().double()
                err = max(err, float((s.double() - want).abs().max()))
        record["ema_error"].append(err)
        record["null_grad"].append(obj.conditioner.null_states.grad.double().tolist())
    obj.after_step = checking_after_step
'''


def test_two_ranks_agree_sync_the_null_context_and_equal_one_merged_process(tmp_path):
    r0, r1, single = two_ranks_and_merged("ldm", SETS, tmp_path,
                                          components={"autoencoder": "none"}, setup=SETUP)
    assert {k.split(".")[0] for k in r0} == {"noise_model", "conditioner", "noise_model_ema",
                                            "conditioner_ema"}
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    rec = [json.loads((tmp_path / "two" / f"record{r}.json").read_text()) for r in (0, 1)]
    steps = len(rec[0]["null_grad"])
    assert steps == 4
    # the ranks dropped different captions, so unsynchronised null gradients would differ
    assert rec[0]["dropped"] != rec[1]["dropped"]
    for step in range(steps):
        g0, g1 = torch.tensor(rec[0]["null_grad"][step]), torch.tensor(rec[1]["null_grad"][step])
        # (steps 1 and 2: the zero-initialised conv_out, then the still-zero proj_out of
        # the spatial transformer, pass no gradient to the context)
        if step >= 2:  # a rank dropped a caption: null has a gradient
            assert g0.abs().max() > 0, (step, rec[0]["dropped"], rec[1]["dropped"])
        assert torch.equal(g0, g1), step
    # the EMA shadows are the formula on both ranks (float32 lerp against float64)
    for r in rec:
        assert max(r["ema_error"]) < 1e-6, r["ema_error"]
    # and the null context did train (the run moved it from its initial value)
    assert not torch.equal(r0["conditioner.null_states"], r0["conditioner_ema.null_states"])

    # one process on the two ranks' batches put together ends where the two ranks end
    # (a small lr: Adam turns round-off in near-zero gradients into lr-sized steps)
    for k in r0:
        assert torch.allclose(r0[k], single[k], atol=1e-5, rtol=0), \
            (k, float((r0[k] - single[k]).abs().max()))
    log2, log1 = (
        [json.loads(x) for x in (tmp_path / n / "run" / "metrics.jsonl").read_text().splitlines()]
        for n in ("two", "one"))
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == [1, 2, 3, 4]
    for a, b in zip(log2, log1):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
        assert a["dropped"] == b["dropped"]  # the same dropout draws


def test_ranks_take_their_share_of_the_one_process_batch():
    """What a 2-rank ldm step promises against 1 process: the same images (rank r's
    contiguous share of the global batch), not the same noise draws."""
    from gaf.seeding import EpochOrder

    order = EpochOrder(32, 0, "ldm-order")
    for index in range(5):
        one = order.slice(*World(0, 1).shard(index * 8, 8))
        shares = [order.slice(*World(r, 2).shard(index * 8, 8)) for r in (0, 1)]
        assert list(shares[0]) + list(shares[1]) == list(one)
