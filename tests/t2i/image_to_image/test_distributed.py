"""``image-to-image`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end
with identical weights, equal to one process trained on the two ranks' batches put
together (each rank draws its own noise, drops and masks from its first position)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tiny_i2i import TINY  # tests/ is on sys.path (conftest)
from torchrun_launch import merged_run_script, run_script

pytestmark = pytest.mark.slow

SCRIPT = merged_run_script("image-to-image")


def test_two_ranks_agree_and_equal_one_merged_process(tmp_path):
    sets = [*TINY, "train.lr=1e-3", "objective.eval_images=0", "objective.ema_decay=0.9",
            "objective.p_uncond=0.5", "device=\"cpu\""]
    script = tmp_path / "i2i_script.py"
    script.write_text(SCRIPT)
    for name, nproc, mode in (("two", 2, "plain"), ("one", 1, "merge")):
        done = run_script(script, [str(tmp_path / name), json.dumps(sets), mode], nproc,
                          env={"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{name}.log")
        assert done.returncode == 0, done.stderr[-3000:]
    r0, r1, one = (load_file(str(tmp_path / d / f"rank{r}.safetensors"))
                   for d, r in (("two", 0), ("two", 1), ("one", 0)))
    assert {k.split(".")[0] for k in r0} == {"noise_model", "conditioner", "noise_model_ema",
                                             "conditioner_ema"}
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], one[key], rtol=0, atol=1e-5, msg=key)
    logs = [[json.loads(x) for x in (tmp_path / n / "run" / "metrics.jsonl").read_text()
             .splitlines()] for n in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3]
    for a, b in zip(*logs):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a["loss"], b["loss"])
