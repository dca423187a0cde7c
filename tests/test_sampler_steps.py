"""examples/sampler_steps.py: its rows are the one evaluation (evaluate_pipeline) of the
run's pipeline at each sampler setting, and it fills only its markers."""

from __future__ import annotations

import json

import pytest

import gaf
from script_module import load_script  # tests/ is on sys.path (conftest)
from tiny_ldm import tiny_ldm_sets



steps_script = load_script("examples/sampler_steps.py")

TINY = tiny_ldm_sets(objective__eval_steps="3", objective__throughput_batch="0",
                     objective__eval_guidance="[3.0]")


def test_settings_default_rows_also_and_rows_instead():
    assert steps_script.settings([]) == steps_script.DEFAULT
    assert steps_script.settings(["x:5,7"])[-2:] == [("x", 5), ("x", 7)]
    assert steps_script.settings(["y"], ["ddim:2"]) == [("ddim", 2), ("y", 10), ("y", 20),
                                                         ("y", 50)]


@pytest.mark.slow
def test_rows_are_the_runs_own_evaluation_and_only_the_markers_change(tmp_path):
    run_dir, summary = gaf.run("ldm", autoencoder="none",
                               sets=[f"out_dir={json.dumps(str(tmp_path))}", "name=tiny",
                                     *TINY])
    doc = tmp_path / "results.md"
    doc.write_text("before\n<!-- sampler-steps -->\nold\n<!-- /sampler-steps -->\nafter\n",
                   encoding="utf-8")
    assert steps_script.main([str(run_dir), "--split", "eval", "--rows", "ddim:3,2",
                              "--images", "4", "--batch-size", "4", "--no-fd",
                              "--out", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("before\n<!-- sampler-steps -->\n| sampler | steps |")
    assert text.endswith("<!-- /sampler-steps -->\nafter\n") and "old" not in text
    assert "| ddim | 3 | 7 |" in text and "| ddim | 2 | 5 |" in text  # 2 per guided step + 1

    args = steps_script.main.__globals__["argparse"].Namespace(
        run_dir=run_dir, split="eval", rows=["ddim:3"], also=[], images=4, batch_size=4,
        seed=0, guidance=3.0, fd=False)
    (row,) = steps_script.measure(args)
    # the run evaluated itself with DDIM 3 steps at guidance 3 on the same eval seeds
    for key in ("unseen_colour", "unseen_exact", "unseen_attrs_shape", "floor_exact"):
        assert row[key] == summary[key], key
    assert row["evaluations_per_image"] == summary["evaluations_per_image"] == 7
    assert row["sampled_n"] >= 4 and row["sampling_s"] >= 0
