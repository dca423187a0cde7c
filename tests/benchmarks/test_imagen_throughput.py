"""benchmarks/imagen_throughput.py runs the real cascade pipeline at a tiny size and prints
its one JSON line (the form, the parameter counts, and its cost's FLOPs against the timed
calls': no timing is asserted); its
stand-in text encoder behaves as the pipeline's conditioner must. The diffusers peer
(benchmarks/imagen_diffusers_peer.py) needs the peer venv and is not run here."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cost_pass import CostPass  # tests/ is on sys.path (conftest)
from script_module import load_script  # tests/ is on sys.path (conftest)

bench = load_script("benchmarks/imagen_throughput.py")


@pytest.mark.slow  # the first call's one-time set-up makes it more than a few seconds
def test_the_benchmark_prints_one_json_line(capsys, monkeypatch):
    threads = str(torch.get_num_threads())  # leave the suite's thread count as it is
    with CostPass(monkeypatch, bench) as counted:  # warm-up 0: the 2 timed calls only
        result = bench.main(["--batch", "2", "--steps", "2", "--sr-steps", "4",
                             "--repeats", "2", "--warmup", "0", "--threads", threads])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == result
    assert result["name"] == "gaf_imagen" and result["fast_paths"] is True
    # the imagen objective's default UNets with a 64-wide context
    assert (result["base_params"], result["sr_params"]) == (6048483, 1687011)
    assert (result["batch"], result["steps"], result["sr_steps"]) == (2, 2, 4)
    assert (result["guidance"], result["sr_guidance"], result["aug_level"]) == (3.0, 3.0, 0.25)
    assert result["base_shape"] == [3, 16, 16] and result["sr_shape"] == [3, 32, 32]
    assert len(result["runs"]) == 2 and result["threads"] == int(threads)
    for run in result["runs"]:
        assert run["base_s"] > 0 and run["sr_s"] > 0
        assert math.isclose(run["base_s"] + run["sr_s"], run["total_s"], rel_tol=1e-6)
    assert math.isclose(result["samples_per_s"], 2 / result["total_s"])
    assert result["tune_malloc"] is True  # as the gaf command (--system-malloc: off)
    assert result["minflt"] > 0 and result["sys_s"] >= 0 and result["maxrss_mb"] > 0
    cost = result["cost"]["samples_per_s"]
    assert (cost["unit"], cost["units"]) == ("cascade_1+2_steps", 2)  # gcd(2, 4) = 2
    assert set(cost["shares"]) == set(bench.step_cost.CATEGORIES)
    assert cost["gflop_per_unit"] > 0 and cost["achieved_gflops"] > 0
    # one timed call against the units: over by the one call's work the second unit
    # repeats (the module doc), a small part of the steps'
    call = counted.timed_flops / 2 / 1e9
    assert call < cost["gflop_per_unit"] * cost["units"] < 1.02 * call
    assert "cost" not in bench.main(["--batch", "1", "--steps", "1", "--sr-steps", "1",
                                     "--repeats", "1", "--warmup", "0", "--threads",
                                     threads, "--no-cost"])
    capsys.readouterr()


def test_the_stand_in_conditioner():
    states = bench.text_states(3)
    assert states.shape == (3, 24, 64) and torch.equal(states, bench.text_states(3))
    cond = bench.FixedConditioner(states)
    assert cond.condition_key == "caption" and cond.trainable is False
    caps = bench.captions(3)
    assert torch.equal(cond([caps[2], caps[0]]), states[[2, 0]])
    assert torch.equal(cond.null(2), torch.zeros(2, 24, 64))
    assert len(cond.calls) == 1  # one timestamp per call: the stage split


def test_the_cascade_is_the_objectives_defaults():
    pipe, _ = bench.build(2)
    base, sr = (stage.noise_model for stage in pipe.stages)
    assert base.config.concat_channels == 0 and not base.config.noise_level
    assert sr.config.concat_channels == 3 and sr.config.noise_level
    assert base.config.pooled_context and sr.config.pooled_context
    assert base.config.skip_scale == sr.config.skip_scale == 2 ** -0.5
    assert pipe.stages[0].sample_shape == (3, 16, 16) and pipe.sample_shape == (3, 32, 32)
    assert all(s.scheduler.config.prediction_type == "v_prediction" for s in pipe.stages)
