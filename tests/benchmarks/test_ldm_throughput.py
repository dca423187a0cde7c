"""benchmarks/ldm_throughput.py at a tiny size (its sizes are ``measure``'s arguments):
its cost lines have their form and count the timed work's FLOPs (no timing is asserted;
the diffusers peer is not run here)."""

from __future__ import annotations

import math

import torch
from cost_pass import CostPass, cost_fields  # tests/ is on sys.path (conftest)
from script_module import load_script

bench = load_script("benchmarks/ldm_throughput.py")


def test_the_cost_lines_count_the_timed_work(capsys, monkeypatch):
    with CostPass(monkeypatch, bench) as cost:
        lines = bench.measure(3, B=2, bt=2, n=2)  # 3 DDIM steps, 2 training steps
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("gaf_ldm sample_img_per_s=")
    assert len(lines) == 2
    for line, name in zip(lines, ("sample", "train")):
        head, fields = cost_fields(line)
        assert head == f"gaf_ldm_{name}_cost" and fields["unit"] == "step"
        assert set(fields) == {"unit", "gflop_per_unit", "achieved_gflops",
                               *bench.step_cost.CATEGORIES}
        assert float(fields["gflop_per_unit"]) > 0
    assert [c["units"] for c in cost.calls] == [2, 3]  # training first: n, then DDIM steps
    # the timed work: the 2 training steps, the 3 sampling steps and the one
    # cache_context of the sampling call (no unit holds it: the docstring)
    cache = bench.step_cost.flop_count(
        lambda: bench.build().cache_context(torch.zeros(4, 16, 64)), inference=True)
    assert cache > 0
    assert math.isclose(cost.timed_flops, cost.counted_flops() + cache, rel_tol=1e-9)


def test_without_the_cost_pass(capsys):
    assert bench.measure(1, cost=False, B=1, bt=1, n=1) == []
    assert len(capsys.readouterr().out.splitlines()) == 1
