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
from torchrun_launch import merged_run_script, run_script

pytestmark = pytest.mark.slow

SCRIPT = merged_run_script("imagen")


def test_two_ranks_agree_and_equal_one_merged_process(tmp_path):
    sets = [*TINY, "train.lr=1e-3", "objective.eval_images=0", "objective.ema_decay=0.9",
            "objective.p_uncond=0.5", "device=\"cpu\""]
    script = tmp_path / "imagen_script.py"
    script.write_text(SCRIPT)
    for name, nproc, mode in (("two", 2, "plain"), ("one", 1, "merge")):
        done = run_script(script, [str(tmp_path / name), json.dumps(sets), mode], nproc,
                          env={"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{name}.log")
        assert done.returncode == 0, done.stderr[-3000:]
    r0, r1, one = (load_file(str(tmp_path / d / f"rank{r}.safetensors"))
                   for d, r in (("two", 0), ("two", 1), ("one", 0)))
    assert {k.split(".")[0] for k in r0} == {"noise_model", "noise_model_ema"}
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], one[key], rtol=0, atol=1e-5, msg=key)
    logs = [[json.loads(x) for x in (tmp_path / n / "run" / "metrics.jsonl").read_text()
             .splitlines()] for n in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3]
    for a, b in zip(*logs):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a["loss"], b["loss"])
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
