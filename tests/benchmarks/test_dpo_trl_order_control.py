"""The order control of ``benchmarks/dpo_trl_order_control.py`` feeds TRL gaf's batches:
``gaf_order`` must name exactly the pair-file lines a gaf DPO run trains on, batch by
batch, or the control silently compares two different runs. Checked here against a
real (tiny) ``gaf.run`` whose batches are recorded. Also the script's small helpers."""

from __future__ import annotations

import json
import math

import pytest
import torch

import gaf
from script_module import load_script  # tests/ is on sys.path (conftest)
from gaf.plugins.preference.data import PreferenceData



def script():
    return load_script("benchmarks/dpo_trl_order_control.py")


@pytest.mark.parametrize("seed", [0, 3])
def test_gaf_order_is_the_order_a_dpo_run_trains_on(tmp_path, monkeypatch, seed):
    # 7 pairs, several sharing a prompt (as sampled pairs do), batches of 3 over
    # 4 steps: the run crosses an epoch boundary in the middle of a batch
    rows = [{"prompt": f"p{i // 2} said", "chosen": f" good {i}.", "rejected": f" bad {i}."}
            for i in range(7)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[list[str]] = []
    original = PreferenceData.train_batch

    def recording(self, index):
        scored, batch = original(self, index)
        seen.append([self.groups[g].responses[0] for g, _ in scored.units])
        return scored, batch

    monkeypatch.setattr(PreferenceData, "train_batch", recording)
    torch.manual_seed(0)
    gaf.run("dpo", policy="gpt2-tiny", task="jsonl", sets=[
        f"task.path={json.dumps(str(pairs))}", "task.eval_fraction=0",
        "task.validation_fraction=0", 'policy.tokenizer="byte"', "policy.n_layer=1",
        "policy.d_model=32", "policy.n_head=2", "objective.sft_steps=0", "train.steps=4",
        "train.batch_size=3", f"seed={seed}", f"out_dir={json.dumps(str(tmp_path))}",
        "progress=false", 'device="cpu"'])
    order = script().gaf_order(len(rows), seed, steps=4, batch=3)
    expected = [[rows[i]["chosen"] for i in order[b * 3:(b + 1) * 3]] for b in range(4)]
    assert seen == expected
    assert sorted(order[:7]) == list(range(7))  # one epoch is a permutation of the lines


def test_helpers():
    s = script()
    assert s.largest_gap([0.1, 0.5, 0.2], [0.1, 0.3, 0.25]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="lengths"):
        s.largest_gap([1.0], [1.0, 2.0])
    m, se = s.mean_se([1.0, 2.0, 3.0])
    assert (m, se) == pytest.approx((2.0, 1 / math.sqrt(3)))
    assert math.isnan(s.mean_se([4.0])[1])
    start = {"w": torch.zeros(2)}
    a, b = {"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([3.0, 4.5])}
    assert s.relative_distance(a, b, start) == pytest.approx(0.1)
