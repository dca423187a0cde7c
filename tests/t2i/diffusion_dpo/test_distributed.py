"""``diffusion-dpo`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end with
identical weights, equal to one process trained on the two ranks' batches put together
(each rank draws its own ``t`` and ``ε`` from its first position; the loss is a mean
over equal shares, so the all-reduced gradient is the merged batch's)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from torchrun_launch import two_ranks_and_merged  # tests/ is on sys.path

pytestmark = pytest.mark.slow


def test_two_ranks_agree_and_equal_one_merged_process(base_run, pair_file, tmp_path):
    sets = [f"objective.init_run={json.dumps(str(base_run))}",
            f"task.path={json.dumps(str(pair_file))}", "objective.eval_images=0",
            "objective.beta=5000", "train.steps=3", "train.batch_size=4", "train.lr=1e-3",
            "train.log_every=1", "train.warmup_steps=0", "device=\"cpu\"", "progress=false"]
    r0, r1, one = two_ranks_and_merged("diffusion-dpo", sets, tmp_path)
    base = load_file(str(base_run / "noise_model_ema" / "model.safetensors"))
    assert {k.split(".")[0] for k in r0} == {"noise_model"}
    moved = 0
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], one[key], rtol=0, atol=1e-5, msg=key)
        moved += not torch.equal(r0[key], base[key.removeprefix("noise_model.")])
    assert moved  # trained (so the agreement is not that of untouched copies)
    logs = [[json.loads(x) for x in (tmp_path / n / "run" / "metrics.jsonl").read_text()
             .splitlines()] for n in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3]
    for a, b in zip(*logs):
        for key in ("loss", "margin", "implicit_accuracy"):
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
