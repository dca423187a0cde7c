"""examples/diffusion_dpo_report.py on tiny runs: the over-optimisation curve starts at
the base weights and ends at the run's final weights, and the sweep scores the base,
each run's final weights and a winners-only run with one proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gaf
from gaf.errors import BadConfig
from script_module import load_script  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

report = load_script("examples/diffusion_dpo_report.py")


def train(base, clip, out, name, *more):
    run_dir, _ = gaf.run("diffusion-dpo", sets=[
        f"out_dir={json.dumps(str(out))}", f"name={json.dumps(name)}",
        f"objective.init_run={json.dumps(str(base))}", "objective.prompts=3",
        "objective.samples_per_prompt=3", "objective.sample_steps=2",
        f"objective.reward_clip={json.dumps(str(clip))}", "objective.eval_images=0",
        "objective.eval_batch_size=8", "train.steps=3", "train.batch_size=4",
        "train.save_every=1", "train.keep_checkpoints=5", "train.warmup_steps=0",
        "train.lr=0.01", "progress=false", *more])
    return run_dir


SCORES = ("reward", "reward_se", "exact", "exact_se", "colour", "attributes", "n")


def test_curve_and_sweep(base_run, tiny_clip, tmp_path):
    dpo = train(base_run, tiny_clip, tmp_path, "dpo", "objective.beta=50")
    sft = train(base_run, tiny_clip, tmp_path, "sft", "objective.loss=\"sft\"")
    # open_run: the run's objective as gaf eval sees it, with the exported weights
    from gaf.atomic import load_tensors
    from gaf.launch import open_run

    objective, ctx = open_run(dpo)
    exported = load_tensors(dpo / "noise_model" / "model.safetensors")
    state = objective.noise_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in exported.items())
    assert not objective.noise_model.training and ctx.run_dir == dpo
    assert any(not torch.equal(state[k], v)
               for k, v in objective.reference.state_dict().items())
    common = ["--split", "eval", "--images", "4", "--guidance", "2"]
    curve = report.main(["curve", str(dpo), *common, "--plot", str(tmp_path / "curve.png"),
                         "--json", str(tmp_path / "curve.json")])
    assert [r["step"] for r in curve] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "curve.json").read_text()) == curve
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert curve[0]["n"] >= 1 and 0 <= curve[0]["exact"] <= 1
    again = report.main(["curve", str(dpo), *common, "--from-json", str(tmp_path / "curve.json"),
                         "--plot", str(tmp_path / "again.png")])
    assert again == curve and (tmp_path / "again.png").stat().st_size > 0
    sweep = report.main(["sweep", str(sft), str(dpo), *common,
                         "--plot", str(tmp_path / "sweep.png")])
    base, first, second = sweep
    assert base["loss"] == "base" and [first["loss"], second["loss"]] == ["dpo", "sft"]
    assert first["beta"] == 50 and second["label"] == "winners only (sft), lr 0.01"
    assert first["pairs"] == "all" and first["lr"] == 0.01
    for key in SCORES:  # the same weights, captions and seeds give the same scores
        assert base[key] == curve[0][key], key
        assert first[key] == curve[-1][key], key
    assert any(first[k] != base[k] for k in ("reward", "exact", "attributes"))
    assert base["reward_change"] == 0 and base["exact_change"] == 0
    assert first["reward_change"] == pytest.approx(first["reward"] - base["reward"])
    assert first["exact_change"] == pytest.approx(first["exact"] - base["exact"])
    assert curve[-1]["reward_change"] == pytest.approx(first["reward_change"])
    train_rows = report.main(["sweep", str(dpo), "--split", "train", "--images", "2"])
    assert train_rows[0]["n"] == 2  # the first two training captions, fresh seeds
    assert (tmp_path / "sweep.png").stat().st_size > 0
    pairs_file = dpo / "data" / "preferences.jsonl"
    rows = [json.loads(x) for x in pairs_file.read_text().splitlines()]
    table = report.main(["labels", str(pairs_file), "--relabel", str(tmp_path / "oracle.jsonl")])
    oracle = [json.loads(x) for x in (tmp_path / "oracle.jsonl").read_text().splitlines()]
    # within each caption's images, every pair the evaluator orders strictly
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in oracle)
    assert all(Path(r["chosen"]).is_absolute() and Path(r["chosen"]).is_file() for r in oracle)
    assert {r["prompt"] for r in oracle} <= {r["prompt"] for r in rows}
    assert table[0]["pairs"] == len(rows)
    for r in table:
        assert r["agree"] + r["disagree"] + r["tied"] == r["pairs"]
    assert sum(r["pairs"] for r in table[1:4]) == len(rows)  # the thirds cover every pair
    assert table[-1]["label"] == "best against worst"
    assert table[-1]["pairs"] == len({r["prompt"] for r in rows})


def test_a_run_of_another_objective_is_refused(base_run):
    with pytest.raises(BadConfig, match="not a diffusion-dpo run"):
        report.main(["curve", str(base_run)])
